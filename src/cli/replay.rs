//! `customs179 replay`: as `POST /api/requests/{sessionID}/replay` (one request) and
//! `POST /api/replays` (failed requests in bulk), under the same rules.

use std::path::PathBuf;

use customs179_service::now_ms;
use customs179_store::{REPLAY_CAP, REPLAY_CHUNK, ReplayError, ReplayFilter, ReplaySelection, State, Store};

use super::{Failure, open_store};

/// Prepares failed requests again from their payment records (a new guid and serviceTime), to
/// be signed and uploaded; their earlier uploads and attempts stay.
///
/// `--session ID` replays one failed or delivered request. `--state failed` replays every
/// failed request (of `--since`/`--until`/`--order-no`) in bulk: the requests are captured
/// as they are, then replayed unless they changed meanwhile; at most 10,000 at once. Works
/// on the service's database directly; a running service picks the requests up within a
/// second.
#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["session", "state"])))]
pub struct Args {
    /// The TOML configuration file of the service.
    #[arg(long)]
    config: PathBuf,
    /// The sessionID of one customs request (failed or delivered).
    #[arg(long)]
    session: Option<String>,
    /// Replay failed requests in bulk (needs --reason); no other state is taken in bulk.
    #[arg(long, value_parser = ["failed"])]
    state: Option<String>,
    /// With --state: requests customs called for at or after TIME: unix milliseconds,
    /// RFC 3339 (2024-03-15T10:00:00+08:00) or a time ago (90s, 30m, 2h, 1d).
    #[arg(long, conflicts_with = "session", value_parser = parse_time)]
    since: Option<i64>,
    /// With --state: requests customs called for before TIME (as --since).
    #[arg(long, conflicts_with = "session", value_parser = parse_time)]
    until: Option<i64>,
    /// With --state: the requests of this order only.
    #[arg(long, conflicts_with = "session")]
    order_no: Option<String>,
    /// Why, for the audit log (required for a bulk replay).
    #[arg(long)]
    reason: Option<String>,
    /// Say what would be replayed; change nothing.
    #[arg(long)]
    dry_run: bool,
}

pub fn run(args: Args) -> Result<(), Failure> {
    let reason = args.reason.as_deref().map(str::trim).filter(|r| !r.is_empty()).map(str::to_owned);
    if args.state.is_some() && reason.is_none() && !args.dry_run {
        return Err(Failure::BadInput("a bulk replay needs --reason TEXT (for the audit log)".into()));
    }
    if let (Some(since), Some(until)) = (args.since, args.until)
        && since >= until
    {
        return Err(Failure::BadInput(format!("--since ({since}) must be before --until ({until})")));
    }
    super::block_on(async {
        let (_, store) = open_store(&args.config).await?;
        let result = match &args.session {
            Some(session) => one(&store, session, reason.as_deref(), args.dry_run).await,
            None => {
                let filter =
                    ReplayFilter { since: args.since, until: args.until, order_no: args.order_no.clone() };
                bulk(&store, filter, reason.as_deref(), args.dry_run).await
            }
        };
        store.close().await;
        result
    })
}

/// One request, failed or delivered.
async fn one(store: &Store, session: &str, reason: Option<&str>, dry_run: bool) -> Result<(), Failure> {
    let unknown = || Failure::Check(format!("customs never asked for sessionID {session:?}"));
    let refused = |state: State| {
        Failure::Check(format!(
            "request {session} is {}: only failed or delivered requests can be replayed",
            state.as_str()
        ))
    };
    let now = now_ms();
    if dry_run {
        let detail = store.request_detail(session, now).await.map_err(|e| Failure::Check(e.to_string()))?;
        let state = detail.ok_or_else(unknown)?.summary.state;
        if !matches!(state, State::Failed | State::Delivered) {
            return Err(refused(state));
        }
        println!(
            "{session} would be prepared, signed and uploaded again (it is {}; dry run: nothing changed)",
            state.as_str()
        );
        return Ok(());
    }
    let replayed = store.replay(session, now).await.map_err(|e| Failure::Check(e.to_string()))?;
    let was = match replayed {
        None => return Err(unknown()),
        Some(Err(state)) => return Err(refused(state)),
        Some(Ok(was)) => was,
    };
    store
        .audit(&super::cli_actor(), "replay", Some(session), reason, 1, now)
        .await
        .map_err(|e| Failure::Check(format!("replayed, but the audit log refused the entry: {e}")))?;
    println!("{session} will be prepared, signed and uploaded again (it was {})", was.as_str());
    Ok(())
}

/// Failed requests in bulk: captured as a dry run would, then confirmed at once and worked
/// through here, chunk by chunk.
async fn bulk(
    store: &Store,
    filter: ReplayFilter,
    reason: Option<&str>,
    dry_run: bool,
) -> Result<(), Failure> {
    let actor = super::cli_actor();
    let token = uuid::Uuid::new_v4().simple().to_string();
    let captured = store
        .capture_replay(&ReplaySelection::Filter(filter), &actor, &token, REPLAY_CAP, now_ms())
        .await
        .map_err(refusal)?;
    if dry_run {
        println!("{} failed request(s) would be replayed (dry run: nothing changed)", captured.count);
        return Ok(());
    }
    let reason = reason.ok_or_else(|| Failure::BadInput("a bulk replay needs --reason TEXT".into()))?;
    let job = store.confirm_replay(&token, &actor, reason, now_ms()).await.map_err(refusal)?;
    let (mut replayed, mut skipped) = (0, 0);
    loop {
        let progress = store.replay_chunk(job.id, REPLAY_CHUNK, now_ms()).await.map_err(|e| {
            Failure::Check(format!(
                "replay {} stopped after {replayed} replayed and {skipped} skipped: {e}; the service resumes it \
                 at its next start",
                job.id
            ))
        })?;
        replayed += progress.replayed;
        skipped += progress.skipped;
        if progress.finished {
            break;
        }
    }
    println!(
        "replay {}: {replayed} failed request(s) replayed, {skipped} skipped (changed since they were selected)",
        job.id
    );
    Ok(())
}

fn refusal(e: ReplayError) -> Failure {
    Failure::Check(e.to_string())
}

/// A time on the command line: unix milliseconds, RFC 3339, or a time ago (`90s`, `30m`,
/// `2h`, `1d`).
fn parse_time(text: &str) -> Result<i64, String> {
    let text = text.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse().map_err(|_| format!("{text:?} is too large"));
    }
    if let Some(unit) = text.chars().last().filter(|c| "smhd".contains(*c))
        && let Ok(count) = text[..text.len() - 1].parse::<i64>()
    {
        let unit_ms = match unit {
            's' => 1_000,
            'm' => 60_000,
            'h' => 3_600_000,
            _ => 86_400_000,
        };
        return Ok(now_ms().saturating_sub(count.saturating_mul(unit_ms)));
    }
    rfc3339(text).ok_or_else(|| {
        format!(
            "{text:?} is no time: give unix milliseconds, RFC 3339 (2024-03-15T10:00:00+08:00) or a time ago \
             (30m, 2h, 1d)"
        )
    })
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)` as unix milliseconds.
fn rfc3339(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    let digits = |from: usize, len: usize| -> Option<i64> {
        let part = b.get(from..from + len)?;
        part.iter().all(u8::is_ascii_digit).then(|| std::str::from_utf8(part).ok()?.parse().ok())?
    };
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let (year, month, day) = (digits(0, 4)?, digits(5, 2)?, digits(8, 2)?);
    let (hour, minute, second) = (digits(11, 2)?, digits(14, 2)?, digits(17, 2)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut at = 19;
    let mut millis = 0;
    if b[at] == b'.' {
        let start = at + 1;
        at = start;
        while at < b.len() && b[at].is_ascii_digit() {
            at += 1;
        }
        if at == start {
            return None;
        }
        let fraction = &text[start..at.min(start + 3)];
        millis = format!("{fraction:0<3}").parse().ok()?;
    }
    let offset_minutes = match b.get(at)? {
        b'Z' | b'z' if at + 1 == b.len() => 0,
        sign @ (b'+' | b'-') if at + 6 == b.len() && b[at + 3] == b':' => {
            let minutes = digits(at + 1, 2)? * 60 + digits(at + 4, 2)?;
            if *sign == b'-' { -minutes } else { minutes }
        }
        _ => return None,
    };
    // Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's days_from_civil).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let seconds = days * 86_400 + hour * 3_600 + minute * 60 + second - offset_minutes * 60;
    Some(seconds * 1_000 + millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_read_as_unix_ms_rfc_3339_or_ago() {
        assert_eq!(parse_time("1710468000000"), Ok(1_710_468_000_000));
        assert_eq!(parse_time("2024-03-15T02:00:00Z"), Ok(1_710_468_000_000));
        assert_eq!(parse_time("2024-03-15T10:00:00+08:00"), Ok(1_710_468_000_000));
        assert_eq!(parse_time("2024-03-14T21:30:00.25-04:30"), Ok(1_710_468_000_250));
        assert_eq!(parse_time("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(parse_time("2000-02-29 12:00:00Z"), Ok(951_825_600_000));
        let ago = parse_time("2h").unwrap();
        assert!((now_ms() - 7_200_000 - ago).abs() < 5_000, "{ago}");
        for bad in ["", "yesterday", "2024-03-15", "2024-13-01T00:00:00Z", "2024-03-15T10:00:00", "5x", "-5"]
        {
            assert!(parse_time(bad).is_err(), "{bad:?}");
        }
    }
}
