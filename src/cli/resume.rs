//! `customs179 resume`: clears a global pause, as `POST /api/control/{stage}/resume` does,
//! or one card's, as `POST /api/control/cards/{card}/{stage}/resume` does.

use std::path::PathBuf;

use customs179_store::Stage;

use super::{Failure, open_store};

/// Resumes signing (paused after the card refused: fix the PIN or the card first) or
/// uploading (stopped after customs answered 20004: fix the registration first), on every
/// card, or with --card on that card only (a card's own pause).
///
/// Works on the service's database directly, so it works whether the service runs or
/// not; a running service picks the change up within a second.
#[derive(clap::Args)]
pub struct Args {
    /// The TOML configuration file of the service.
    #[arg(long)]
    config: PathBuf,
    /// What to resume.
    #[arg(value_enum)]
    stage: StageArg,
    /// Resume this card's own pause of the stage (its [[signer]] name) rather than the global one.
    #[arg(long)]
    card: Option<String>,
    /// Why, for the audit log.
    #[arg(long)]
    reason: Option<String>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum StageArg {
    Signing,
    Uploading,
}

pub fn run(args: Args) -> Result<(), Failure> {
    let stage = match args.stage {
        StageArg::Signing => Stage::Signing,
        StageArg::Uploading => Stage::Uploading,
    };
    super::block_on(async {
        let (config, store) = open_store(&args.config).await?;
        let card = match args.card.as_deref() {
            Some(card) => Some(super::chosen_cards(&config, Some(card))?.remove(0).name.clone()),
            None => None,
        };
        let cleared = match &card {
            Some(card) => store.resume_card(card, stage).await,
            None => store.resume(stage).await,
        }
        .map_err(|e| Failure::Check(e.to_string()))?;
        let what = match &card {
            Some(card) => format!("{} on card {card}", stage.as_str()),
            None => stage.as_str().to_owned(),
        };
        let action = format!("resume {what}");
        let count = i64::from(cleared.is_some());
        store
            .audit(
                &super::cli_actor(),
                &action,
                None,
                args.reason.as_deref(),
                count,
                customs179_service::now_ms(),
            )
            .await
            .map_err(|e| Failure::Check(format!("resumed, but the audit log refused the entry: {e}")))?;
        match cleared {
            Some(pause) => println!("{what} resumed (it was paused: {})", pause.reason),
            None => println!("{what} was not paused"),
        }
        store.close().await;
        Ok(())
    })
}
