//! `customs179 cert`: what registering the card with customs needs, read off the card.

use std::path::{Path, PathBuf};
use std::time::Duration;

use customs179_core::CertificateInfo;
use customs179_eport::SignerClient;
use customs179_service::config::Config;
use customs179_service::now_ms;

use super::Failure;

/// Days of validity under which `--check` fails: time to renew and register.
const RENEW_WITHIN_DAYS: i64 = 30;

/// Reads the card's signing certificate through EportClient ([signer] url) and prints what
/// registration with customs needs: the certNo in lower case exactly as customs registers
/// it, subject, issuer, algorithm and validity. Writes the certificate as `<certNo>.cer`
/// (DER) and `<certNo>.pem` into --out. Uses no PIN. Exits 0 when done; with --check, 1 when
/// the certificate expires within 30 days (or has expired); 1 when the signer cannot be
/// reached; 2 on a bad configuration or an unwritable --out.
#[derive(clap::Args)]
pub struct Args {
    /// The TOML configuration file of the service.
    #[arg(long)]
    config: PathBuf,
    /// Where to write the certificate files.
    #[arg(long, value_name = "DIR", default_value = ".")]
    out: PathBuf,
    /// Exit 1 when the certificate expires within 30 days.
    #[arg(long)]
    check: bool,
}

pub fn run(args: Args) -> Result<(), Failure> {
    let config = Config::load(&args.config).map_err(|errors| Failure::BadInput(errors.to_string()))?;
    let signer =
        SignerClient::new(config.signers[0].url.clone(), Duration::from_millis(config.signers[0].timeout_ms));
    let identity = super::block_on(async {
        signer.identity().await.map_err(|e| {
            Failure::Check(format!(
                "cannot read the card's certificate from {}: {e}; start EportClient with the card in",
                config.signers[0].url
            ))
        })
    })?;
    let info = CertificateInfo::from_bytes(identity.certificate.as_bytes())
        .map_err(|e| Failure::Check(format!("the card's certificate cannot be read: {e}")))?;
    let days_left = customs179_core::days_left(info.not_after, now_ms());
    let written = write_files(&info, &args.out)?;
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
    if args.check && days_left < RENEW_WITHIN_DAYS {
        let state = if days_left < 0 { "has expired" } else { "expires within 30 days" };
        return Err(Failure::Check(format!(
            "the certificate {state}: renew it with the card issuer, then register the new certNo"
        )));
    }
    Ok(())
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
