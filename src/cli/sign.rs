//! `customs179 sign`: the first command to run against a card.

use std::path::PathBuf;
use std::time::Duration;

use customs179_eport::{CardSignature, SignerClient};
use customs179_service::config::{Config, SignerConfig};
use customs179_service::{card, now_ms};
use customs179_store::{Stage, Store};

use super::{Failure, open_store, read_text};

/// Signs exactly the bytes read (UTF-8 text) with the configured card through EportClient,
/// verifies the signature against the card's certificate, and prints certNo and signValue
/// on two lines.
///
/// While the card's signing is paused (it refused earlier: a wrong PIN, a locked card?) it
/// refuses and exits 1, unless --force. If the card refuses now, or the Sign gets no answer
/// (the card may have checked the PIN), the card's signing is paused for the service too: a
/// PIN failure is never retried automatically.
#[derive(clap::Args)]
pub struct Args {
    /// The TOML configuration file of the service ([signer] or [[signer]]; [store] path).
    #[arg(long)]
    config: PathBuf,
    /// The card to sign with (its [[signer]] name); needed when several are configured.
    #[arg(long)]
    card: Option<String>,
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
        let card = super::one_card(&config, args.card.as_deref())?;
        let pause = store.card_signing_stop(&card.name).await.map_err(|e| Failure::Check(e.to_string()))?;
        if let Some(pause) = pause.filter(|_| !args.force) {
            return Err(Failure::Check(format!(
                "signing on card {} is paused: {}\nfix the cause, then `customs179 resume --config {} signing \
                 --card {}` (or `signing` alone if all signing is paused; or use --force)",
                card.name,
                pause.reason,
                args.config.display(),
                card.name
            )));
        }
        let holder = format!("the sign command (pid {})", std::process::id());
        let signer = SignerClient::new(card.url.clone(), Duration::from_millis(card.timeout_ms));
        let outcome = sign_or_pause(&signer, card, &config, &store, &holder, &text).await.map(|signature| {
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
    card: &SignerConfig,
    config: &Config,
    store: &Store,
    holder: &str,
    text: &str,
) -> Result<CardSignature, Failure> {
    let check = |e: &dyn std::fmt::Display| Failure::Check(e.to_string());
    if !store.pins_in_flight().await.map_err(|e| check(&e))?.is_empty() {
        if Store::in_use_at(&config.store.location(), now_ms()).await.map_err(|e| check(&e))? {
            return Err(Failure::Check(
                "the service is checking the PIN on the card right now (a Sign carrying an unproven PIN is in \
                 flight); try again in a few seconds"
                    .into(),
            ));
        }
        let names: Vec<&str> = config.signers.iter().map(|s| s.name.as_str()).collect();
        let marks = store.pause_for_pins_in_flight(&names, now_ms()).await.map_err(|e| check(&e))?;
        if let Some(mark) = marks.first() {
            return Err(Failure::Check(format!(
                "{}\nsigning on that card is now paused",
                mark.pause_reason()
            )));
        }
    }
    let session = signer.session().await.map_err(|e| check(&e))?;
    let attempt = card::sign(session, store, holder, &card.name, text, card.pin.expose()).await;
    if let Some(reason) = attempt.pause {
        let stored = store.pause_card(&card.name, Stage::Signing, &reason, None, now_ms()).await;
        if stored.is_ok() {
            store.clear_pin_in_flight(holder).await.map_err(|e| check(&e))?;
        }
        let how = match stored {
            Ok(()) => format!("signing on card {} is now paused", card.name),
            Err(e) => {
                format!("the database refused the pause ({e}); it is kept in a file beside the database")
            }
        };
        return Err(Failure::Check(format!(
            "{reason}\n{how}; fix the cause, then `customs179 resume signing --card {}`",
            card.name
        )));
    }
    attempt.result.map_err(|e| check(&e))
}
