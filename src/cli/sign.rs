//! `customs179 sign`: the first command to run against a card.

use std::path::{Path, PathBuf};
use std::time::Duration;

use customs179_eport::{CardSignature, SignerClient};
use customs179_service::{card, now_ms};
use customs179_store::{Stage, Store};

use super::{Failure, open_store, read_text};

/// Signs exactly the bytes read (UTF-8 text) with the configured card through EportClient,
/// verifies the signature against the card's certificate, and prints certNo and signValue
/// on two lines.
///
/// While signing is paused (the card refused earlier: a wrong PIN, a locked card?) it
/// refuses and exits 1, unless --force. If the card refuses now, or the Sign gets no answer
/// (the card may have checked the PIN), signing is paused for the service too: a PIN
/// failure is never retried automatically.
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
            SignerClient::new(config.signers[0].url.clone(), Duration::from_millis(config.signers[0].timeout_ms));
        let holder = format!("the sign command (pid {})", std::process::id());
        let pin = config.signers[0].pin.expose();
        let outcome =
            sign_or_pause(&signer, &store, &config.store.path, &holder, &text, pin).await.map(|signature| {
                println!("{}\n{}", signature.cert_no, signature.sign_value);
            });
        store.close().await;
        outcome
    })
}

/// Signs with the card (the signature verified locally) under the service's
/// PIN rule: the PIN is never proven in a fresh process, so a "PIN in
/// flight" mark is committed before the Sign and cleared by the answer; a
/// refusal, or a Sign that gets no answer, pauses signing for the service
/// too. A mark left by a process that died mid-Sign pauses signing first.
pub(crate) async fn sign_or_pause(
    signer: &SignerClient,
    store: &Store,
    db: &Path,
    holder: &str,
    text: &str,
    pin: &str,
) -> Result<CardSignature, Failure> {
    let check = |e: &dyn std::fmt::Display| Failure::Check(e.to_string());
    if !store.pins_in_flight().await.map_err(|e| check(&e))?.is_empty() {
        if Store::in_use(db).map_err(|e| check(&e))? {
            return Err(Failure::Check(
                "the service is checking the PIN on the card right now (a Sign carrying an unproven PIN is in \
                 flight); try again in a few seconds"
                    .into(),
            ));
        }
        let marks = store.pause_for_pins_in_flight(now_ms()).await.map_err(|e| check(&e))?;
        if let Some(mark) = marks.first() {
            return Err(Failure::Check(format!("{}\nsigning is now paused", mark.pause_reason())));
        }
    }
    let session = signer.session().await.map_err(|e| check(&e))?;
    let attempt = card::sign(session, store, holder, text, pin).await;
    if let Some(reason) = attempt.pause {
        let stored = store.pause(Stage::Signing, &reason, now_ms()).await;
        if stored.is_ok() {
            store.clear_pin_in_flight(holder).await.map_err(|e| check(&e))?;
        }
        let how = match stored {
            Ok(()) => "signing is now paused".to_owned(),
            Err(e) => {
                format!("the database refused the pause ({e}); it is kept in a file beside the database")
            }
        };
        return Err(Failure::Check(format!("{reason}\n{how}; fix the cause, then resume signing")));
    }
    attempt.result.map_err(|e| check(&e))
}
