//! `customs179 alert-test`: sends a test message through each `[[alerts]]` channel, so that
//! a robot's key, a signing secret or a mail login is proven before it is needed at night.

use std::path::PathBuf;
use std::time::Duration;

use customs179_alerts::channel::Channel;
use customs179_alerts::{Alert, AlertKind, Event, Severity};
use customs179_service::config::Config;
use customs179_service::now_ms;

use super::Failure;

/// One delivery's limit, as the service's.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Sends one test message (kind `test`, severity info) through every `[[alerts]]` channel of
/// the configuration, or the one named by --channel, whatever its kinds and minimum
/// severity, and prints each channel's outcome. Nothing is stored; a running service is not
/// needed. Exits 0 when every channel took it, 1 when one did not, 2 on a bad configuration,
/// no channel, or an unknown --channel.
#[derive(clap::Args)]
pub struct Args {
    /// The TOML configuration file of the service.
    #[arg(long)]
    config: PathBuf,
    /// Only this channel (its `name`).
    #[arg(long, value_name = "NAME")]
    channel: Option<String>,
}

pub fn run(args: Args) -> Result<(), Failure> {
    let config = Config::load(&args.config).map_err(|errors| Failure::BadInput(errors.to_string()))?;
    let channels: Vec<_> = config
        .alerts
        .channels
        .iter()
        .filter(|c| args.channel.as_ref().is_none_or(|name| *name == c.name))
        .cloned()
        .collect();
    if channels.is_empty() {
        return Err(Failure::BadInput(match &args.channel {
            Some(name) => format!("no [[alerts]] entry is named {name:?}"),
            None => "the configuration has no [[alerts]] entry".to_owned(),
        }));
    }
    // Channels speak TLS through rustls, built without a default crypto provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let now = now_ms();
    let alert = Alert {
        id: 0,
        kind: AlertKind::Test,
        severity: Severity::Info,
        event: Event::Raised,
        card: String::new(),
        level: String::new(),
        count: 0,
        detail: String::new(),
        since: now,
        at: now,
        source: config.enterprise.ebp_code.clone(),
    };
    let failed = super::block_on(async {
        let mut failed = 0;
        for config in channels {
            let name = config.name.clone();
            let kind = config.target.kind();
            let outcome = match Channel::new(config, TIMEOUT) {
                Ok(channel) => channel.send(&alert, now).await.map_err(|e| format!("{}: {e}", e.code())),
                Err(e) => Err(format!("cannot be set up: {e}")),
            };
            match outcome {
                Ok(()) => println!("{name} ({kind}): sent"),
                Err(reason) => {
                    failed += 1;
                    println!("{name} ({kind}): NOT SENT: {reason}");
                }
            }
        }
        Ok(failed)
    })?;
    if failed > 0 {
        return Err(Failure::Check(format!("{failed} channel(s) did not take the test message")));
    }
    Ok(())
}
