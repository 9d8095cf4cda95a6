//! `customs179 doctor`: is this installation ready, and if not, what to fix.

use std::path::PathBuf;
use std::time::Duration;

use customs179_eport::SignerClient;
use customs179_service::config::{Config, SignerConfig};
use customs179_service::now_ms;
use customs179_store::{Location, Store};

use super::Failure;

/// Days of certificate validity below which the doctor warns.
const CERT_WARN_DAYS: i64 = 30;

/// Checks an installation and prints a checklist with the fix for each failure.
///
/// In order: the configuration; the database (opens it, applies migrations, reads it); the
/// signer (connects to EportClient, reads the card's certNo and certificate, its validity
/// and days left, then signs a test text and verifies the signature, unless signing is
/// paused: a refusal pauses signing, as in the service); the customs upload URL (DNS, TCP,
/// TLS handshake: any HTTP answer counts); and whether the intake port can be bound (or is
/// held by this very service, running). Exits 0 when all is good, 1 when something failed.
#[derive(clap::Args)]
pub struct Args {
    /// The TOML configuration file of the service.
    #[arg(long)]
    config: PathBuf,
}

/// One line of the checklist.
struct Check {
    name: String,
    result: Result<String, (String, String)>,
}

impl Check {
    fn pass(name: impl Into<String>, detail: impl Into<String>) -> Check {
        Check { name: name.into(), result: Ok(detail.into()) }
    }

    fn fail(name: impl Into<String>, problem: impl Into<String>, fix: impl Into<String>) -> Check {
        Check { name: name.into(), result: Err((problem.into(), fix.into())) }
    }
}

pub fn run(args: Args) -> Result<(), Failure> {
    let checks = super::block_on(async { Ok(checks(&args).await) })?;
    let mut failed = 0;
    for check in &checks {
        match &check.result {
            Ok(detail) => println!("[ok]   {}: {detail}", check.name),
            Err((problem, fix)) => {
                failed += 1;
                println!("[FAIL] {}: {problem}\n       fix: {fix}", check.name);
            }
        }
    }
    if failed == 0 {
        println!("all {} checks passed", checks.len());
        Ok(())
    } else {
        Err(Failure::Check(format!("{failed} of {} checks failed", checks.len())))
    }
}

async fn checks(args: &Args) -> Vec<Check> {
    let config = match Config::load(&args.config) {
        Ok(config) => config,
        Err(errors) => {
            let fix = format!(
                "correct the configuration; `customs179 check --config {}` lists every problem",
                args.config.display()
            );
            return vec![Check::fail("configuration", errors.to_string().replace('\n', "; "), fix)];
        }
    };
    let mut checks = vec![Check::pass("configuration", args.config.display().to_string())];
    let location = config.store.location();
    let store = match Store::open_at(&location).await {
        Ok(store) => store,
        Err(e) => {
            let fix = match location {
                Location::Sqlite(_) => {
                    "make [store] path's directory writable by this user, with free disk space"
                }
                Location::Postgres(_) => {
                    "check [store] url: the PostgreSQL server must be reachable and the user may create tables"
                }
            };
            checks.push(Check::fail("database", format!("{}: {e}", location.describe()), fix));
            checks.extend(network_checks(&config).await);
            return checks;
        }
    };
    checks.push(match store.count_by_state().await {
        Ok(counts) => {
            let total: i64 = counts.iter().map(|(_, n)| n).sum();
            Check::pass("database", format!("{} ({total} requests)", location.describe()))
        }
        Err(e) => Check::fail(
            "database",
            e.to_string(),
            "check the database file; restore it from a backup if it is damaged",
        ),
    });
    for card in &config.signers {
        checks.extend(signer_checks(&config, card, &store).await);
    }
    checks.extend(network_checks(&config).await);
    store.close().await;
    checks
}

/// The checks of one card, named after it when several are configured.
async fn signer_checks(config: &Config, card: &SignerConfig, store: &Store) -> Vec<Check> {
    let named = |check: &str| {
        if config.signers.len() == 1 { check.to_owned() } else { format!("{check} (card {})", card.name) }
    };
    let signer = SignerClient::new(card.url.clone(), Duration::from_millis(card.timeout_ms));
    let identity = match signer.identity().await {
        Ok(identity) => identity,
        Err(e) => {
            return vec![Check::fail(
                named("signer"),
                format!("{}: {e}", card.url),
                "start EportClient (中国电子口岸客户端控件) on the card's machine, insert the card, and check \
                 the card's url (and the port proxy and firewall if it is another machine)",
            )];
        }
    };
    let mut checks =
        vec![Check::pass(named("signer"), format!("{} answers; card certNo {}", card.url, identity.cert_no))];
    checks.push(match identity.verifier.validity() {
        Some((_, not_after)) => {
            let days = customs179_core::days_left(not_after, now_ms());
            if days < 0 {
                Check::fail(
                    named("certificate"),
                    format!("expired {} days ago", -days),
                    "renew the card's certificate with the card issuer",
                )
            } else if days < CERT_WARN_DAYS {
                Check::fail(
                    named("certificate"),
                    format!("expires in {days} days"),
                    "renew the card's certificate soon, then register the new certNo",
                )
            } else {
                Check::pass(named("certificate"), format!("valid for {days} more days"))
            }
        }
        None => Check::fail(named("certificate"), "the card gave no validity", "check the card"),
    });
    checks.push(match store.card_signing_stop(&card.name).await {
        Ok(Some(pause)) => Check::fail(
            named("test signature"),
            format!("skipped: signing is paused: {}", pause.reason),
            format!(
                "fix the PIN or the card, then `customs179 resume --config FILE signing --card {}`",
                card.name
            ),
        ),
        Ok(None) => {
            let text = format!("customs179 doctor {}", now_ms());
            let holder = format!("the doctor command (pid {})", std::process::id());
            match super::sign::sign_or_pause(&signer, card, config, store, &holder, &text).await {
                Ok(signature) => Check::pass(
                    named("test signature"),
                    format!("signed and verified with certNo {}", signature.cert_no),
                ),
                Err(Failure::Check(problem) | Failure::BadInput(problem)) => Check::fail(
                    named("test signature"),
                    problem.replace('\n', "; "),
                    "check the card's pin (a wrong PIN locks the card after a few tries) and the card",
                ),
            }
        }
        Err(e) => Check::fail(named("test signature"), e.to_string(), "check the database"),
    });
    checks
}

async fn network_checks(config: &Config) -> Vec<Check> {
    vec![customs_check(config).await, intake_check(config).await]
}

/// Reaches the upload URL: any HTTP answer proves DNS, TCP and TLS work.
async fn customs_check(config: &Config) -> Check {
    let url = config.customs.upload_url();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder().timeout(Duration::from_millis(config.customs.timeout_ms)).build();
    let answer = match client {
        Ok(client) => client.get(url).send().await,
        Err(e) => return Check::fail("customs", e.to_string(), "check [customs] ca_file"),
    };
    match answer {
        Ok(response) => Check::pass(
            "customs",
            format!(
                "{} reached (HTTP {})",
                config.customs.endpoint_description(),
                response.status().as_u16()
            ),
        ),
        Err(e) => {
            let problem =
                if e.is_connect() { format!("cannot connect to {url}: {e}") } else { format!("{url}: {e}") };
            Check::fail(
                "customs",
                problem,
                "check DNS, the firewall and any proxy for outgoing HTTPS to customs",
            )
        }
    }
}

/// The intake port must be bindable, or held by this service already.
async fn intake_check(config: &Config) -> Check {
    let addr = config.intake.listen;
    match tokio::net::TcpListener::bind(addr).await {
        Ok(_) => Check::pass("intake port", format!("{addr} can be bound")),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && service_runs(config).await => {
            Check::pass("intake port", format!("{addr} is held by this customs179, which is running"))
        }
        Err(e) => Check::fail(
            "intake port",
            format!("cannot bind {addr}: {e}"),
            "free the port, or run as a user allowed to bind it (port 80: CAP_NET_BIND_SERVICE)",
        ),
    }
}

async fn service_runs(config: &Config) -> bool {
    let url = format!("http://{}/healthz", config.admin.listen);
    let client = reqwest::Client::builder().timeout(Duration::from_secs(2)).build();
    match client {
        Ok(client) => client.get(url).send().await.is_ok_and(|r| r.status().is_success()),
        Err(_) => false,
    }
}
