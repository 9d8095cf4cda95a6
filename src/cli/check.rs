//! `customs179 check`: is a `serve` configuration usable, before it is deployed.

use std::path::PathBuf;

use super::Failure;

/// Checks the configuration of `customs179 serve`, with its CUSTOMS179_* environment overrides.
///
/// Prints `config OK: <path>` and the effective settings (secrets only as set or not set)
/// and exits 0, or lists every problem on stderr and exits 2. Nothing is contacted: the
/// card, customs and the payment platform are not tried.
#[derive(clap::Args)]
pub struct Args {
    /// The TOML configuration file (see config/customs179.example.toml).
    #[arg(long)]
    config: PathBuf,
}

pub fn run(args: Args) -> Result<(), Failure> {
    let config = super::load_config(&args.config)?;
    println!("config OK: {}", args.config.display());
    print!("{}", config.summary());
    Ok(())
}
