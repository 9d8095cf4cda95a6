//! `customs179 sign`: the first command to run against a card.

use std::path::PathBuf;
use std::time::Duration;

use customs179_eport::{CardSignature, FailureClass, SignerClient, SignerError};
use customs179_service::now_ms;
use customs179_store::{Stage, Store};

use super::{Failure, open_store, read_text};

/// Signs exactly the bytes read (UTF-8 text) with the configured card through EportClient,
/// verifies the signature against the card's certificate, and prints certNo and signValue
/// on two lines.
///
/// While signing is paused (the card refused earlier: a wrong PIN, a locked card?) it
/// refuses and exits 1, unless --force. If the card refuses now, signing is paused for the
/// service too: a PIN failure is never retried automatically.
#[derive(clap::Args)]
pub struct Args {
    /// The TOML configuration file of the service ([signer] url, pin, timeout_ms; [store] path).
    #[arg(long)]
    config: PathBuf,
    /// Sign even while signing is paused.
    #[arg(long)]
    force: bool,
    /// The text to sign; `-` or nothing reads standard input.
    file: Option<PathBuf>,
}

pub fn run(args: Args) -> Result<(), Failure> {
    let text = read_text(args.file.as_deref())?;
    super::block_on(async {
        let (config, store) = open_store(&args.config).await?;
        let pause = store.pause_of(Stage::Signing).await.map_err(|e| Failure::Check(e.to_string()))?;
        if let Some(pause) = pause.filter(|_| !args.force) {
            return Err(Failure::Check(format!(
                "signing is paused: {}\nfix the cause, then `customs179 resume --config {} signing` (or use --force)",
                pause.reason,
                args.config.display()
            )));
        }
        let signer =
            SignerClient::new(config.signer.url.clone(), Duration::from_millis(config.signer.timeout_ms));
        let outcome =
            sign_or_pause(&signer, &store, &text, config.signer.pin.expose()).await.map(|signature| {
                println!("{}\n{}", signature.cert_no, signature.sign_value);
            });
        store.close().await;
        outcome
    })
}

/// Signs with the card (the signature verified locally); a refusal that may
/// be a wrong PIN pauses signing for the service too, as its signer would.
pub(crate) async fn sign_or_pause(
    signer: &SignerClient,
    store: &Store,
    text: &str,
    pin: &str,
) -> Result<CardSignature, Failure> {
    match signer.sign(text, pin).await {
        Ok(signature) => Ok(signature),
        Err(e @ (SignerError::Failed { class: FailureClass::Refused, .. } | SignerError::Certificate(_))) => {
            let reason = e.to_string();
            store
                .pause(Stage::Signing, &reason, now_ms())
                .await
                .map_err(|e| Failure::Check(e.to_string()))?;
            Err(Failure::Check(format!("{reason}\nsigning is now paused; fix the cause, then resume it")))
        }
        Err(e) => Err(Failure::Check(e.to_string())),
    }
}
