//! `customs179 resume`: clears a global pause, as `POST /api/control/{stage}/resume` does.

use std::path::PathBuf;

use customs179_store::Stage;

use super::{Failure, open_store};

/// Resumes signing (paused after the card refused: fix the PIN or the card first) or
/// uploading (stopped after customs answered 20004: fix the registration first).
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
        let (_, store) = open_store(&args.config).await?;
        let cleared = store.resume(stage).await.map_err(|e| Failure::Check(e.to_string()))?;
        let action = format!("resume {}", stage.as_str());
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
            Some(pause) => println!("{} resumed (it was paused: {})", stage.as_str(), pause.reason),
            None => println!("{} was not paused", stage.as_str()),
        }
        store.close().await;
        Ok(())
    })
}
