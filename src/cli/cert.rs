//! `customs179 cert`: what registering the card with customs needs, read off the card.

use std::path::{Path, PathBuf};
use std::time::Duration;

use customs179_core::CertificateInfo;
use customs179_eport::SignerClient;
use customs179_service::config::{Config, SignerConfig};
use customs179_service::now_ms;

use super::Failure;

/// Days of validity under which `--check` fails: time to renew and register.
const RENEW_WITHIN_DAYS: i64 = 30;

/// Reads each card's signing certificate through its EportClient ([signer] or each
/// [[signer]] url) and prints what registration with customs needs: the certNo in lower case
/// exactly as customs registers it, subject, issuer, algorithm and validity. Writes each
/// certificate as `<certNo>.cer` (DER) and `<certNo>.pem` into --out. Uses no PIN. Exits 0
/// when done; with --check, 1 when a certificate expires within 30 days (or has expired); 1
/// when a card's signer cannot be reached (the other cards are still read); 2 on a bad
/// configuration, an unknown --card or an unwritable --out.
#[derive(clap::Args)]
pub struct Args {
    /// The TOML configuration file of the service.
    #[arg(long)]
    config: PathBuf,
    /// Read only this card (its [[signer]] name); every card when left out.
    #[arg(long)]
    card: Option<String>,
    /// Where to write the certificate files.
    #[arg(long, value_name = "DIR", default_value = ".")]
    out: PathBuf,
    /// Exit 1 when a certificate expires within 30 days.
    #[arg(long)]
    check: bool,
}

pub fn run(args: Args) -> Result<(), Failure> {
    let config = Config::load(&args.config).map_err(|errors| Failure::BadInput(errors.to_string()))?;
    let cards = super::chosen_cards(&config, args.card.as_deref())?;
    let several = config.signers.len() > 1;
    let mut problems = Vec::new();
    for card in cards {
        if several {
            println!("card        {}", card.name);
        }
        match read_card(card, &args.out)? {
            Ok(days_left) if args.check && days_left < RENEW_WITHIN_DAYS => {
                let state = if days_left < 0 { "has expired" } else { "expires within 30 days" };
                problems.push(format!(
                    "card {}: the certificate {state}: renew it with the card issuer, then register the new certNo",
                    card.name
                ));
            }
            Ok(_) => {}
            Err(problem) => {
                eprintln!("{problem}");
                problems.push(problem);
            }
        }
        if several {
            println!();
        }
    }
    if problems.is_empty() { Ok(()) } else { Err(Failure::Check(problems.join("\n"))) }
}

/// Reads one card's certificate, prints it and writes its files: the days
/// it has left, or why it could not be read. An unwritable --out is bad input.
fn read_card(card: &SignerConfig, out: &Path) -> Result<Result<i64, String>, Failure> {
    let signer = SignerClient::new(card.url.clone(), Duration::from_millis(card.timeout_ms));
    let identity = match super::block_on(async { Ok(signer.identity().await) })? {
        Ok(identity) => identity,
        Err(e) => {
            return Ok(Err(format!(
                "cannot read the certificate of card {} from {}: {e}; start EportClient with the card in",
                card.name, card.url
            )));
        }
    };
    let info = match CertificateInfo::from_bytes(identity.certificate.as_bytes()) {
        Ok(info) => info,
        Err(e) => return Ok(Err(format!("the certificate of card {} cannot be read: {e}", card.name))),
    };
    let days_left = customs179_core::days_left(info.not_after, now_ms());
    let written = write_files(&info, out)?;
    let time = |secs: i64| customs179_core::time::shanghai_time(secs.saturating_mul(1000));
    println!("certNo      {}", info.cert_no);
    println!("subject     {}", info.subject);
    println!("issuer      {}", info.issuer);
    println!("algorithm   {}", info.algorithm);
    println!("valid from  {}", time(info.not_before));
    println!("valid until {}", time(info.not_after));
    println!("days left   {days_left}");
    for path in &written {
        println!("wrote       {}", path.display());
    }
    println!("Register certNo {} (in lower case, as above) and the .cer file with customs.", info.cert_no);
    Ok(Ok(days_left))
}

fn write_files(info: &CertificateInfo, out: &Path) -> Result<Vec<PathBuf>, Failure> {
    let unwritable =
        |path: &Path, e: std::io::Error| Failure::BadInput(format!("cannot write {}: {e}", path.display()));
    std::fs::create_dir_all(out).map_err(|e| unwritable(out, e))?;
    let (cer, pem) = (out.join(format!("{}.cer", info.cert_no)), out.join(format!("{}.pem", info.cert_no)));
    std::fs::write(&cer, &info.der).map_err(|e| unwritable(&cer, e))?;
    std::fs::write(&pem, info.pem()).map_err(|e| unwritable(&pem, e))?;
    Ok(vec![cer, pem])
}
