//! `customs179 replay`: as `POST /api/requests/{sessionID}/replay`.

use std::path::PathBuf;

use customs179_service::now_ms;

use super::{Failure, open_store};

/// Prepares a failed or delivered request again from its payment record (a new guid and
/// serviceTime), to be signed and uploaded; its earlier uploads and attempts stay.
///
/// Works on the service's database directly; a running service picks the request up
/// within a second.
#[derive(clap::Args)]
pub struct Args {
    /// The TOML configuration file of the service.
    #[arg(long)]
    config: PathBuf,
    /// The sessionID of the customs request.
    #[arg(long)]
    session: String,
    /// Why, for the audit log.
    #[arg(long)]
    reason: Option<String>,
}

pub fn run(args: Args) -> Result<(), Failure> {
    super::block_on(async {
        let (_, store) = open_store(&args.config).await?;
        let now = now_ms();
        let mut result = store.replay(&args.session, now).await.map_err(|e| Failure::Check(e.to_string()));
        if let Ok(Some(Ok(_))) = &result
            && let Err(e) = store
                .audit(&super::cli_actor(), "replay", Some(&args.session), args.reason.as_deref(), 1, now)
                .await
        {
            result = Err(Failure::Check(format!("replayed, but the audit log refused the entry: {e}")));
        }
        store.close().await;
        match result? {
            None => Err(Failure::Check(format!("customs never asked for sessionID {:?}", args.session))),
            Some(Err(state)) => Err(Failure::Check(format!(
                "request {} is {}: only failed or delivered requests can be replayed",
                args.session,
                state.as_str()
            ))),
            Some(Ok(was)) => {
                println!(
                    "{} will be prepared, signed and uploaded again (it was {})",
                    args.session,
                    was.as_str()
                );
                Ok(())
            }
        }
    })
}
