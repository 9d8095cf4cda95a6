//! A million customs requests: fills a SQLite database through the real store with about three
//! years of history (mostly delivered, some failed for a handful of reasons, a few replayed), adds
//! a few thousand pending requests around "now", starts the release binary on a copy of it and
//! measures every admin read and intake. Prints markdown tables for BENCHMARKS.md.
//!
//! The fill runs on tmpfs (`/dev/shm`: the store syncs every commit, which is free there) and is
//! cached in `target/million-db/` with a marker of the row count and migrations it was built
//! with; a later run with the same count reuses it when those migrations are today's or a
//! beginning of them (the service applies the newer ones on opening it, as on an upgrade).
//! Every run measures a fresh copy on disk.
//!
//! `--store postgres` does the same on PostgreSQL (`POSTGRES_TEST_URL`, by default the machine's
//! `test` database): the fill goes to a schema of its own (`customs179_million_N`, kept, with its
//! marker in the cache directory), filled with `synchronous_commit` off; each run deletes the
//! pending and intake requests the last one added, adds its own and measures that schema.
//!
//! `cargo bench --bench million -- --requests 20000` for a quick run; `--help` lists the options.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use customs179_core::{Guid, OpenReq, PaymentRecord, PreSign, RecordRules};
use customs179_store::{
    Delivery, NewRequest, REPLAY_CAP, REPLAY_CHUNK, ReplayFilter, ReplaySelection, Stage, Store,
};

#[path = "../tests/common/mod.rs"]
mod common;

const USAGE: &str = "\
usage: cargo bench --bench million -- [OPTIONS]

  --requests N   requests of history in the database (1000000)
  --live N       pending requests added around now on each run (3000)
  --store S      sqlite or postgres (sqlite)
  --keep DIR     where the filled database is cached (target/million-db)
  --rebuild      fills the database again even when the cached one matches
  --samples N    timed calls per read, after 3 warm-up calls (50)
  --rate R       intake: customs calls per second (5000)
  --secs S       intake: seconds of calls (20)
  --no-reads     skips the reads
  --no-intake    skips intake
  --help         this text";

/// Bump when the fill's mix changes: a cached database of another version is rebuilt.
const FILL_VERSION: u32 = 1;
const DAY_MS: i64 = 86_400_000;
/// How far back the history reaches.
const HISTORY_MS: i64 = 3 * 365 * DAY_MS;
/// Requests filled per round (one time window of the history).
const ROUND: u64 = 5_000;
const OVER_MS: f64 = 50.0;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
}

struct Options {
    store: Backend,
    requests: u64,
    live: u64,
    keep: PathBuf,
    rebuild: bool,
    samples: usize,
    rate: u64,
    secs: u64,
    reads: bool,
    intake: bool,
}

fn parse(args: impl Iterator<Item = String>) -> Result<Options, String> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"), PathBuf::from);
    let mut o = Options {
        store: Backend::Sqlite,
        requests: 1_000_000,
        live: 3_000,
        keep: target.join("million-db"),
        rebuild: false,
        samples: 50,
        rate: 5_000,
        secs: 20,
        reads: true,
        intake: true,
    };
    for (arg, value) in common::bench_args(args, &["--rebuild", "--no-reads", "--no-intake"])? {
        let number = || format!("{arg} takes a positive number, not {value:?}");
        let count = || value.parse::<u64>().ok().filter(|n| *n > 0).ok_or_else(number);
        match arg.as_str() {
            "--rebuild" => o.rebuild = true,
            "--no-reads" => o.reads = false,
            "--no-intake" => o.intake = false,
            "--requests" => o.requests = count()?,
            "--live" => o.live = count()?,
            "--keep" => o.keep = PathBuf::from(&value),
            "--store" => {
                o.store = match value.as_str() {
                    "sqlite" => Backend::Sqlite,
                    "postgres" => Backend::Postgres,
                    _ => return Err(format!("--store takes sqlite or postgres, not {value:?}")),
                }
            }
            "--samples" => o.samples = usize::try_from(count()?).map_err(|_| number())?,
            "--rate" => o.rate = count()?,
            "--secs" => o.secs = count()?,
            _ => return Err(format!("unknown option {arg}")),
        }
    }
    Ok(o)
}

/// Every call of a state transition the bench makes, so that a change of their signatures is
/// fixed here only.
mod transitions {
    use customs179_store::{
        Claim, Delivery, Millis, Outcome, Pending, PreparedUpload, SigningJob, Store, UploadJob,
    };

    /// The code the service would give each text the bench writes (OPERATIONS.md, "Codes").
    fn outcome(text: &str) -> Outcome<'_> {
        let code = ["10000", "20006", "20001"]
            .into_iter()
            .find(|code| text.contains(&format!("\"code\":\"{code}\"")))
            .unwrap_or(if text.contains("HTTP 503") {
                "HTTP 503"
            } else if text.contains("no payment data") {
                "no_payment_data"
            } else if text.contains("Base50000") {
                "item_refused"
            } else {
                "invalid_record"
            });
        Outcome::new(code, text)
    }

    pub async fn prepare(store: &Store, pending: &Pending, upload: &PreparedUpload, now: Millis) {
        assert!(store.prepare(pending, upload, now).await.expect("prepare"), "prepare lost its request");
    }

    pub async fn signed(
        store: &Store,
        job: &SigningJob,
        cert_no: &str,
        sign_value: &str,
        body: &str,
        now: Millis,
    ) {
        assert!(
            store.signed(job, "card", cert_no, sign_value, body, 50, now).await.expect("signed"),
            "signed lost its claim"
        );
    }

    pub async fn delivered(store: &Store, job: &UploadJob, delivery: Delivery, answer: &str, now: Millis) {
        assert!(
            store.delivered(job, delivery, &outcome(answer).took(120), now).await.expect("delivered"),
            "delivered lost its claim"
        );
    }

    pub async fn retry_later(
        store: &Store,
        claim: &Claim,
        step: &str,
        next: Millis,
        error: &str,
        now: Millis,
    ) {
        assert!(
            store.retry_later(claim, step, next, &outcome(error).took(120), now).await.expect("retry_later"),
            "retry lost its claim"
        );
    }

    pub async fn poll_again(store: &Store, claim: &Claim, next: Millis, note: &str, now: Millis) {
        assert!(
            store.poll_again(claim, next, &outcome(note), now).await.expect("poll_again"),
            "poll lost its claim"
        );
    }

    pub async fn fail(store: &Store, claim: &Claim, step: &str, reason: &str, now: Millis) {
        assert!(store.fail(claim, step, &outcome(reason), now).await.expect("fail"), "fail lost its claim");
    }

    pub async fn give_up_waiting(store: &Store, cutoff: Millis, reason: &str, now: Millis) -> usize {
        store.give_up_waiting(cutoff, &outcome(reason), now).await.expect("give_up_waiting").len()
    }

    pub async fn replay(store: &Store, session_id: &str, now: Millis) {
        let was = store.replay(session_id, now).await.expect("replay");
        assert!(matches!(was, Some(Ok(_))), "{session_id} could not be replayed: {was:?}");
    }
}

/// What becomes of a request of the history, drawn from its number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    OnTime,
    /// Customs answered 503 first; delivered after the deadline.
    Late,
    /// 503 first, then 20006: an earlier attempt got through.
    AlreadyStored,
    /// 20006 on the first attempt (an anomaly).
    AlreadyStoredFirst,
    /// The platform never had payment data (404 on every pull); given up after a day.
    NoPayment,
    /// The platform's record is invalid.
    Invalid,
    /// The card refused the Sign (Err:Base50000).
    CardRefused,
    /// Customs answered 20001 until the upload was given up.
    Gave20001,
    /// Customs answered HTTP 503 until the upload was given up; a third are replayed later.
    Gave503,
}

fn mix(mut x: u64) -> u64 {
    // splitmix64
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn fate(i: u64) -> Fate {
    match mix(i) % 10_000 {
        0..40 => Fate::NoPayment,
        40..70 => Fate::Gave20001,
        70..100 => Fate::Gave503,
        100..125 => Fate::CardRefused,
        125..150 => Fate::Invalid,
        150..250 => Fate::Late,
        250..290 => Fate::AlreadyStored,
        290..300 => Fate::AlreadyStoredFirst,
        _ => Fate::OnTime,
    }
}

/// Replayed one by one some days after it failed (and then delivered).
fn replayed_alone(i: u64) -> bool {
    fate(i) == Fate::Gave503 && i.is_multiple_of(3)
}

/// Random-looking sessionIDs, so that a prefix is not a time range.
fn session_id(i: u64) -> String {
    format!("{:016x}", mix(i ^ 0x5e55_1011))
}

fn order_no(i: u64) -> String {
    format!("SO{i:010}")
}

fn index_of(order_no: &str) -> u64 {
    order_no[2..].parse().expect("an order of the bench")
}

/// When customs asked for request `i` of `n`, the history ending at `end`.
fn received_at(i: u64, n: u64, end: i64) -> i64 {
    let slot = HISTORY_MS / i64::try_from(n).unwrap();
    let jitter = i64::try_from(mix(i ^ 0x7153) % u64::try_from(slot.max(1)).unwrap()).unwrap();
    end - HISTORY_MS + slot * i64::try_from(i).unwrap() + jitter
}

fn new_request(session_id: String, order_no: String, received_at: i64) -> NewRequest {
    let raw = format!(r#"{{"orderNo":"{order_no}","sessionID":"{session_id}","serviceTime":{received_at}}}"#);
    NewRequest {
        open_req: OpenReq::parse(&raw).unwrap(),
        raw,
        received_at,
        deadline_at: received_at + 120_000,
    }
}

fn record(order_no: &str) -> PaymentRecord {
    let json = common::payment_record(&format!("T{order_no}"), &[order_no]).to_string();
    PaymentRecord::parse(&json, RecordRules::PLATFORM).expect("a valid record")
}

const CERT_NO: &str = "01696f8b";
const SIGN_VALUE: &str =
    "MEUCIQDxn1pP1yPqBench0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXyzAiB8w2Tq1o=";
const LEASE: i64 = 600_000;
const ANSWER_10000: &str = r#"HTTP 200: {"code":"10000","message":"success"}"#;
const ANSWER_20006: &str = r#"HTTP 200: {"code":"20006","message":"数据已存在"}"#;
const ANSWER_20001: &str = r#"HTTP 200: {"code":"20001","message":"验签失败"}"#;
const ANSWER_503: &str = "HTTP 503: Service Unavailable";
const NO_PAYMENT: &str = "no payment data for this order after 86400 s";

/// Transitions in flight at once in a PostgreSQL fill: each is a few round trips and PostgreSQL
/// takes many writers, so one at a time would leave both cores mostly idle. SQLite has a single
/// writer: its fill goes one at a time.
const PG_WIDTH: usize = 8;

/// `step` over `items`, `width` at a time.
async fn each<T, F: Future<Output = ()>>(items: Vec<T>, width: usize, step: impl FnMut(T) -> F) {
    use futures_util::StreamExt as _;
    futures_util::stream::iter(items).for_each_concurrent(width, step).await;
}

/// One pass of the workers over what is pending, at times from `base` on (the end of the round's
/// window, or when it was replayed). `history` requests that never get data are polled for and
/// given up on; live ones are left waiting.
async fn pass(store: &Store, base: i64, history: bool, width: usize) {
    // Preparer.
    loop {
        let pending = store.pending_preparation(None, 1_000).await.expect("pending");
        if pending.is_empty() {
            break;
        }
        each(pending, width, |p| async move {
            let mut record = p.record.clone();
            let guid = Guid::from_random_bytes(uuid::Uuid::new_v4().into_bytes());
            record.head.guid = Some(guid.clone());
            record.head.ebp_code.get_or_insert_with(|| common::EBP_CODE.to_owned());
            let at = base + 1_000;
            let presign = PreSign::build(&record, &p.session_id, u64::try_from(at).unwrap()).unwrap();
            let upload = customs179_store::PreparedUpload { guid, service_time: at, presign };
            transitions::prepare(store, &p, &upload, at).await;
        })
        .await;
    }
    // Puller.
    if history {
        let claims = store.claim_pulls(base + 2_000, LEASE, 100_000).await.expect("pulls");
        each(claims, width, |claim| async move {
            let at = base + 2_000;
            if fate(index_of(&claim.order_no)) == Fate::Invalid {
                let why = "the platform's record is invalid: /payExchangeInfoHead/totalAmount: \
                           must equal the sum of the orders' amounts (88.50 ≠ 85.50)";
                transitions::fail(store, &claim, "pull", why, at).await;
            } else {
                let note = "the platform has no payment data for this order yet (404)";
                transitions::poll_again(store, &claim, at + 60_000, note, at).await;
            }
        })
        .await;
    }
    // Signer.
    let jobs = store.claim_signing(base + 5_000, LEASE, 100_000).await.expect("claim signing");
    each(jobs, width, |job| async move {
        let replayed = job.claim.waiting_since > job.claim.received_at;
        let at = base + 5_000;
        if fate(index_of(&job.claim.order_no)) == Fate::CardRefused && !replayed {
            let reason = "the control answered a failure: 参数检查失败 Err:Base50000";
            transitions::fail(store, &job.claim, "sign", reason, at).await;
            return;
        }
        let body = PreSign::parse(&job.presign).unwrap().upload_body(CERT_NO, SIGN_VALUE);
        transitions::signed(store, &job, CERT_NO, SIGN_VALUE, body.as_str(), at).await;
    })
    .await;
    // Uploader: the first answer, then the retries.
    for (round, wait) in [(1, 10_000), (2, 600_000), (3, 7_200_000)] {
        let jobs = store.claim_uploads(base + wait, LEASE, 100_000).await.expect("claim uploads");
        each(jobs, width, |job| async move {
            let replayed = job.claim.waiting_since > job.claim.received_at;
            let i = index_of(&job.claim.order_no);
            let fate = if replayed { Fate::OnTime } else { fate(i) };
            let at = base + wait + i64::try_from(mix(i) % 10_000).unwrap();
            let claim = &job.claim;
            match (fate, round) {
                (Fate::OnTime, _) => {
                    transitions::delivered(store, &job, Delivery::Stored, ANSWER_10000, at).await
                }
                (Fate::AlreadyStoredFirst, _) | (Fate::AlreadyStored, 2..) => {
                    transitions::delivered(store, &job, Delivery::AlreadyStored, ANSWER_20006, at).await;
                }
                (Fate::Late, 2..) => {
                    transitions::delivered(store, &job, Delivery::Stored, ANSWER_10000, at).await
                }
                (Fate::Gave20001 | Fate::Gave503, 3) => {
                    let last = if fate == Fate::Gave20001 { ANSWER_20001 } else { ANSWER_503 };
                    let reason = format!("gave up after 86400 s; last answer: {last}");
                    transitions::fail(store, claim, "upload", &reason, claim.waiting_since + DAY_MS).await;
                }
                (Fate::Gave20001, _) => {
                    transitions::retry_later(store, claim, "upload", at + 60_000, ANSWER_20001, at).await;
                }
                _ => transitions::retry_later(store, claim, "upload", at + 60_000, ANSWER_503, at).await,
            }
        })
        .await;
    }
    if history {
        transitions::give_up_waiting(store, base, NO_PAYMENT, base + DAY_MS).await;
    }
}

/// Requests `range` of the history of `n` requests ending at `end`, through the workers.
async fn history_round(
    store: &Store,
    range: std::ops::Range<u64>,
    n: u64,
    end: i64,
    bulk_replay: bool,
    width: usize,
) {
    let requests: Vec<NewRequest> =
        range.clone().map(|i| new_request(session_id(i), order_no(i), received_at(i, n, end))).collect();
    let first = requests.first().map(|r| r.received_at).unwrap();
    let last = requests.last().map(|r| r.received_at).unwrap();
    store.insert_requests(&requests).await.expect("insert");
    let records: Vec<PaymentRecord> = range
        .clone()
        .filter(|i| !matches!(fate(*i), Fate::NoPayment | Fate::Invalid))
        .map(|i| record(&order_no(i)))
        .collect();
    for chunk in records.chunks(500) {
        store.put_payments(chunk, last).await.expect("payments");
    }
    pass(store, last, true, width).await;
    // Some failed requests are replayed one by one two days later, and delivered.
    let replay_at = last + 2 * DAY_MS;
    let alone: Vec<u64> = range.clone().filter(|i| replayed_alone(*i)).collect();
    for i in &alone {
        transitions::replay(store, &session_id(*i), replay_at).await;
        store.audit("alice", "replay", Some(&session_id(*i)), None, 1, replay_at).await.expect("audit");
    }
    if !alone.is_empty() {
        pass(store, replay_at, true, width).await;
    }
    if range.start.is_multiple_of(ROUND * 20) {
        let at = last + 3 * DAY_MS;
        let reason = Some("card reader maintenance");
        store.audit("bob", "pause signing", None, reason, 1, at).await.expect("audit");
        store.audit("bob", "resume signing", None, reason, 1, at + 3_600_000).await.expect("audit");
    }
    if bulk_replay {
        // An operator replays the window's failures in bulk, four days later.
        let at = last + 4 * DAY_MS;
        let selection = ReplaySelection::Filter(ReplayFilter {
            since: Some(first),
            until: Some(last + 1),
            order_no: None,
        });
        let token = format!("bench-replay-{}", range.start);
        store.capture_replay(&selection, "alice", &token, REPLAY_CAP, at).await.expect("dry run");
        let job =
            store.confirm_replay(&token, "alice", "customs asked again", at + 60_000).await.expect("confirm");
        while !store.replay_chunk(job.id, REPLAY_CHUNK, at + 61_000).await.expect("chunk").finished {}
        pass(store, at + 61_000, true, width).await;
    }
}

/// The history of `requests` requests ending at `end`, round after round, through `store`.
async fn fill_history(store: &Store, requests: u64, end: i64, began: Instant, width: usize) {
    let rounds = requests.div_ceil(ROUND);
    for round in 0..rounds {
        let range = round * ROUND..((round + 1) * ROUND).min(requests);
        let bulk = rounds >= 3 && round % (rounds / 3) == rounds / 6;
        history_round(store, range, requests, end, bulk, width).await;
        // The log stays small (SQLite; nothing on PostgreSQL).
        store.checkpoint().await.expect("checkpoint");
        if round % 10 == 9 || round + 1 == rounds {
            eprintln!(
                "filled {} of {requests} requests in {:.0} s",
                ((round + 1) * ROUND).min(requests),
                began.elapsed().as_secs_f64()
            );
        }
    }
}

/// The migrations the binary applies to `store`, by file name.
fn migrations(store: Backend) -> Vec<String> {
    let kind = if store == Backend::Postgres { "postgres" } else { "sqlite" };
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations").join(kind);
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// What the cached database was built with: the fill's version and size, and the migrations.
fn marker_text(store: Backend, requests: u64) -> String {
    format!("fill {FILL_VERSION}\nrequests {requests}\nmigrations {}\n", migrations(store).join(" "))
}

/// `key value` lines after the marker: the end of history and how long the fill took.
fn marker_value(rest: &str, key: &str) -> Option<f64> {
    rest.lines().find_map(|line| line.strip_prefix(key)?.trim().parse().ok())
}

/// A cached fill that can be measured.
struct CachedFill {
    end: i64,
    took: f64,
    /// Migrations newer than the fill: applied when the service opens it, as on an upgrade.
    newer: Vec<String>,
}

/// The cached fill `marker` tells of, when it was made by this fill at this size with the
/// migrations of today or a beginning of them (and `--rebuild` was not asked for).
fn cached_fill(o: &Options, store: Backend, marker: &Path) -> Option<CachedFill> {
    if o.rebuild {
        return None;
    }
    let text = std::fs::read_to_string(marker).ok()?;
    let rest = text.strip_prefix(&format!("fill {FILL_VERSION}\nrequests {}\n", o.requests))?;
    let (built, rest) = rest.strip_prefix("migrations ")?.split_once('\n')?;
    let built: Vec<&str> = built.split(' ').collect();
    let now = migrations(store);
    if built.len() > now.len() || built.iter().zip(&now).any(|(built, now)| built != now) {
        return None;
    }
    Some(CachedFill {
        end: marker_value(rest, "history_end ")? as i64,
        took: marker_value(rest, "fill_secs ")?,
        newer: now[built.len()..].to_vec(),
    })
}

/// Says which cached fill a run measures.
fn reusing(what: &str, o: &Options, cached: &CachedFill) {
    let upgraded = if cached.newer.is_empty() {
        String::new()
    } else {
        format!(
            "; made before the migrations {}, which the service applies on opening it",
            cached.newer.join(", ")
        )
    };
    println!(
        "reusing {what} of {} requests (its fill took {:.0} s{upgraded}; --rebuild fills it again)",
        o.requests, cached.took
    );
}

/// Records a fill built as `wanted` says, ending at `end`, that took `took` s.
fn write_marker(o: &Options, marker: &Path, wanted: &str, end: i64, took: f64) {
    std::fs::create_dir_all(&o.keep).unwrap();
    std::fs::write(marker, format!("{wanted}history_end {end}\nfill_secs {took:.1}\n")).unwrap();
}

/// The cached database of `requests` requests, filled now unless one matching is there; its end
/// of history.
async fn filled(o: &Options) -> (PathBuf, i64) {
    let db = o.keep.join("customs179.sqlite");
    let marker = o.keep.join("marker.txt");
    let wanted = marker_text(Backend::Sqlite, o.requests);
    if let Some(cached) = cached_fill(o, Backend::Sqlite, &marker).filter(|_| db.exists()) {
        reusing(&format!("the database {}", db.display()), o, &cached);
        return (db, cached.end);
    }
    let _ = std::fs::remove_file(&marker);
    let shm = PathBuf::from(format!("/dev/shm/customs179-million-fill-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&shm);
    std::fs::create_dir_all(&shm).unwrap();
    let fill_db = shm.join("customs179.sqlite");
    let began = Instant::now();
    let end = common::now_ms() - DAY_MS;
    let store = Store::open(&fill_db).await.expect("open");
    fill_history(&store, o.requests, end, began, 1).await;
    store.checkpoint().await.expect("checkpoint");
    store.close().await;
    let filled_in = began.elapsed();
    std::fs::create_dir_all(&o.keep).unwrap();
    let copy = Instant::now();
    std::fs::copy(&fill_db, &db).unwrap();
    std::fs::remove_dir_all(&shm).unwrap();
    write_marker(o, &marker, &wanted, end, filled_in.as_secs_f64());
    println!(
        "filled {} requests in {:.1} s (tmpfs), copied to {} in {:.1} s",
        o.requests,
        filled_in.as_secs_f64(),
        db.display(),
        copy.elapsed().as_secs_f64()
    );
    (db, end)
}

/// The PostgreSQL schema of a fill of `requests` requests.
fn pg_schema(requests: u64) -> common::postgres::Schema {
    common::postgres::Schema { name: format!("customs179_million_{requests}") }
}

/// A store in `schema`; `fast` turns `synchronous_commit` off (a fill's commits need not wait
/// for the disk: a crash only means filling again).
async fn pg_store(schema: &common::postgres::Schema, fast: bool) -> Store {
    let options: sqlx::postgres::PgConnectOptions =
        common::postgres::base_url().parse().expect("POSTGRES_TEST_URL");
    let sync = if fast { "off" } else { "on" };
    let options = options.options([("search_path", schema.name.as_str()), ("synchronous_commit", sync)]);
    Store::connect_with(options).await.expect("connect")
}

/// [`filled`] on PostgreSQL: the schema of the fill, and its end of history.
async fn filled_postgres(o: &Options) -> (common::postgres::Schema, i64) {
    let schema = pg_schema(o.requests);
    let marker = o.keep.join(format!("marker-postgres-{}.txt", o.requests));
    let wanted = marker_text(Backend::Postgres, o.requests);
    let mut admin = common::postgres::Schema { name: "public".into() }.connect().await;
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
        .bind(&schema.name)
        .fetch_one(&mut admin)
        .await
        .unwrap();
    if let Some(cached) = cached_fill(o, Backend::Postgres, &marker).filter(|_| exists) {
        reusing(&format!("the schema {}", schema.name), o, &cached);
        return (schema, cached.end);
    }
    let _ = std::fs::remove_file(&marker);
    if exists {
        schema.drop_now().await;
    }
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {}", schema.name)))
        .execute(&mut admin)
        .await
        .unwrap();
    let began = Instant::now();
    let end = common::now_ms() - DAY_MS;
    let store = pg_store(&schema, true).await;
    fill_history(&store, o.requests, end, began, PG_WIDTH).await;
    store.close().await;
    vacuum(&schema).await;
    let took = began.elapsed().as_secs_f64();
    write_marker(o, &marker, &wanted, end, took);
    println!("filled {} requests in the schema {} in {took:.0} s", o.requests, schema.name);
    (schema, end)
}

/// The schema of the fill, rid of what the last run added, with this run's pending requests.
async fn run_postgres(schema: &common::postgres::Schema, live: u64) {
    let began = Instant::now();
    let added = "(session_id LIKE 'live-%' OR session_id LIKE 'INTAKE-%')";
    let mut conn = schema.connect().await;
    // Once their attempts, requests and orders are gone nothing refers to the added uploads and
    // payments: the checks of the foreign keys to them, each a scan of a million rows by a
    // column no index covers (the service never deletes), are switched off for their deletion.
    // One transaction: a run stopped here leaves the schema as it was.
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "BEGIN;
         DELETE FROM payment_orders WHERE order_no IN (SELECT order_no FROM requests WHERE {added});
         DELETE FROM attempts WHERE {added};
         UPDATE requests SET upload_id = NULL WHERE {added};
         ALTER TABLE uploads DISABLE TRIGGER ALL;
         ALTER TABLE payments DISABLE TRIGGER ALL;
         DELETE FROM uploads WHERE {added};
         DELETE FROM requests WHERE {added};
         DELETE FROM payments p WHERE NOT EXISTS (SELECT 1 FROM payment_orders po WHERE po.payment_id = p.id)
                                 AND NOT EXISTS (SELECT 1 FROM uploads u WHERE u.payment_id = p.id);
         ALTER TABLE uploads ENABLE TRIGGER ALL;
         ALTER TABLE payments ENABLE TRIGGER ALL;
         COMMIT;"
    )))
    .execute(&mut conn)
    .await
    .unwrap();
    let store = pg_store(schema, false).await;
    add_live(&store, live, common::now_ms()).await;
    store.close().await;
    vacuum(schema).await;
    println!("the schema with {live} pending requests ready in {:.1} s", began.elapsed().as_secs_f64());
}

/// What autovacuum would have done by now on a server that runs it (the machine's runs with
/// `autovacuum = off`): without it the counter rows, updated by every change of state, grow
/// to thousands of dead versions and the partial indexes of pending requests keep every
/// request that passed through them, and the reads measure that instead.
async fn vacuum(schema: &common::postgres::Schema) {
    let mut conn = schema.connect().await;
    let tables: Vec<String> = sqlx::query_scalar("SELECT tablename FROM pg_tables WHERE schemaname = $1")
        .bind(&schema.name)
        .fetch_all(&mut conn)
        .await
        .unwrap();
    for table in tables {
        let sql = format!("VACUUM (ANALYZE) {}.{table}", schema.name);
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut conn).await.unwrap();
    }
}

/// Pending requests around `now`, added to a copy of the cached database: received over the last
/// two hours, a third over the five minutes before and ten after now (so that some stay at risk
/// while the reads are measured). Half wait for payment data, three in ten are ready to sign,
/// two in ten signed; signing and uploading are paused, so the mix stays as it is.
async fn add_live(store: &Store, live: u64, now: i64) {
    let base = 9_000_000_000;
    let at = |k: u64| {
        let k = i64::try_from(k).unwrap();
        let live = i64::try_from(live).unwrap();
        if k % 3 == 2 { now - 300_000 + 900_000 * k / live } else { now - 7_200_000 + 6_900_000 * k / live }
    };
    let mut requests: Vec<NewRequest> =
        (0..live).map(|k| new_request(format!("live-{k:06}"), order_no(base + k), at(k))).collect();
    requests.sort_by_key(|r| r.received_at);
    store.insert_requests(&requests).await.expect("insert");
    // Those to be signed first: a claim takes every ready request.
    for wanted in [true, false] {
        let pay = |k: u64| if wanted { k % 10 >= 8 } else { (5..8).contains(&(k % 10)) };
        let records: Vec<PaymentRecord> =
            (0..live).filter(|k| pay(*k)).map(|k| record(&order_no(base + k))).collect();
        for chunk in records.chunks(500) {
            store.put_payments(chunk, now).await.expect("payments");
        }
        loop {
            let pending = store.pending_preparation(None, 1_000).await.expect("pending");
            if pending.is_empty() {
                break;
            }
            for p in &pending {
                let k = index_of(p.record.order_nos().next().unwrap()) - base;
                let mut record = p.record.clone();
                let guid = Guid::from_random_bytes(uuid::Uuid::new_v4().into_bytes());
                record.head.guid = Some(guid.clone());
                record.head.ebp_code = Some(common::EBP_CODE.to_owned());
                let t = at(k) + 1_000;
                let presign = PreSign::build(&record, &p.session_id, u64::try_from(t).unwrap()).unwrap();
                transitions::prepare(
                    store,
                    p,
                    &customs179_store::PreparedUpload { guid, service_time: t, presign },
                    t,
                )
                .await;
            }
        }
        if wanted {
            for job in store.claim_signing(now + 3_600_000, LEASE, 100_000).await.expect("claim") {
                let body = PreSign::parse(&job.presign).unwrap().upload_body(CERT_NO, SIGN_VALUE);
                let t = job.claim.received_at + 2_000;
                transitions::signed(store, &job, CERT_NO, SIGN_VALUE, body.as_str(), t).await;
            }
        }
    }
    let why = "million bench: no card and no customs are connected";
    store.pause(Stage::Signing, why, now).await.expect("pause");
    store.pause(Stage::Uploading, why, now).await.expect("pause");
}

/// A copy of the cached database on disk with the live part added (on tmpfs), for one run.
async fn run_copy(cached: &Path, keep: &Path, live: u64) -> PathBuf {
    let began = Instant::now();
    let shm = PathBuf::from(format!("/dev/shm/customs179-million-run-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&shm);
    std::fs::create_dir_all(&shm).unwrap();
    let db = shm.join("customs179.sqlite");
    std::fs::copy(cached, &db).unwrap();
    let store = Store::open(&db).await.expect("open");
    add_live(&store, live, common::now_ms()).await;
    store.checkpoint().await.expect("checkpoint");
    store.close().await;
    let run = keep.join("run");
    let _ = std::fs::remove_dir_all(&run);
    std::fs::create_dir_all(&run).unwrap();
    std::fs::copy(&db, run.join("customs179.sqlite")).unwrap();
    // On disk before the service starts: otherwise the kernel writes the copy's gigabytes back
    // while intake is measured, and every commit's sync waits behind them (seconds per commit).
    std::fs::File::open(run.join("customs179.sqlite")).and_then(|f| f.sync_all()).unwrap();
    std::fs::remove_dir_all(&shm).unwrap();
    println!("run copy with {live} pending requests ready in {:.1} s", began.elapsed().as_secs_f64());
    run
}

/// Values the read paths' `{placeholders}` stand for.
struct Samples {
    pairs: Vec<(&'static str, String)>,
}

impl Samples {
    fn of(n: u64, end: i64) -> Samples {
        let delivered = (n / 2..n).find(|i| fate(*i) == Fate::OnTime).unwrap();
        let replayed = (0..n).find(|i| replayed_alone(*i)).unwrap_or(delivered);
        let year_ago = end - 365 * DAY_MS;
        let day = year_ago - year_ago.rem_euclid(DAY_MS);
        let month = day - 30 * DAY_MS;
        Samples {
            pairs: vec![
                ("order_no", order_no(delivered)),
                ("session_id", session_id(replayed)),
                ("prefix", session_id(delivered)[..3].to_owned()),
                ("day_since", day.to_string()),
                ("day_until", (day + DAY_MS).to_string()),
                ("month_since", month.to_string()),
                ("month_until", (month + 30 * DAY_MS).to_string()),
                ("replay_id", "1".to_owned()),
            ],
        }
    }

    fn fill(&self, text: &str) -> String {
        self.pairs
            .iter()
            .fold(text.to_owned(), |text, (name, value)| text.replace(&format!("{{{name}}}"), value))
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Measure {
    /// The whole answer.
    Whole,
    /// The first chunk of the body.
    FirstByte,
    /// The whole answer of the second page: `after=` the first page's `next`.
    SecondPage,
}

/// One read: its name, `GET` (no body) or `POST` (body), the path with `{placeholders}`.
struct Read {
    name: String,
    path: String,
    body: Option<&'static str>,
    measure: Measure,
}

impl Read {
    fn get(name: &str, path: &str) -> Read {
        Read { name: name.to_owned(), path: path.to_owned(), body: None, measure: Measure::Whole }
    }
}

/// The reads besides the lists.
const READS: &[(&str, &str)] = &[
    ("status", "/api/status"),
    ("metrics", "/metrics"),
    ("healthz", "/healthz"),
    ("detail of a replayed request", "/api/requests/{session_id}"),
    ("failures", "/api/failures"),
    ("audit", "/api/audit"),
    ("replay job", "/api/replays/{replay_id}"),
    ("export one day", "/api/export.csv?since={day_since}&until={day_until}"),
];

/// Dry runs of bulk replays: name, body.
const DRY_RUNS: &[(&str, &str)] = &[
    ("replay dry run, all failed", r#"{"filter":{"state":"failed"},"dry_run":true}"#),
    (
        "replay dry run, failed in a month",
        r#"{"filter":{"state":"failed","since":{month_since},"until":{month_until}},"dry_run":true}"#,
    ),
];

/// The filters of `GET /api/requests` besides `state`; each is measured alone and with each
/// state, with either sort.
const LIST_FILTERS: &[(&str, &str)] = &[
    ("order_no", "order_no={order_no}"),
    ("session_id", "session_id={session_id}"),
    ("session_prefix", "session_prefix={prefix}"),
    ("since/until (a day)", "since={day_since}&until={day_until}"),
    ("late", "late=true"),
    ("at_risk", "at_risk=true"),
    ("code (customs' 20001)", "code=20001"),
    ("code (HTTP 503)", "code=HTTP%20503"),
];

const STATES: [&str; 5] = ["waiting", "ready", "signed", "delivered", "failed"];

/// Lists (by their query) whose second page is measured too.
const SECOND_PAGES: &[&str] =
    &["", "state=delivered", "state=failed", "late=true", "since={day_since}&until={day_until}"];

fn reads() -> Vec<Read> {
    let mut reads: Vec<Read> = READS.iter().map(|(name, path)| Read::get(name, path)).collect();
    for (name, body) in DRY_RUNS {
        reads.push(Read { body: Some(*body), ..Read::get(name, "/api/replays") });
    }
    reads.push(Read {
        measure: Measure::FirstByte,
        ..Read::get("export everything, first byte", "/api/export.csv")
    });
    let mut queries: Vec<(String, String)> = vec![("no filter".to_owned(), String::new())];
    queries.extend(STATES.iter().map(|s| (format!("state={s}"), format!("state={s}"))));
    queries.extend(LIST_FILTERS.iter().map(|(name, q)| (name.to_string(), q.to_string())));
    for s in STATES {
        queries.extend(
            LIST_FILTERS.iter().map(|(name, q)| (format!("state={s} + {name}"), format!("state={s}&{q}"))),
        );
    }
    for sort in ["received", "deadline"] {
        for (name, query) in &queries {
            let sep = if query.is_empty() { "" } else { "&" };
            let path = format!("/api/requests?{query}{sep}sort={sort}");
            reads.push(Read::get(&format!("list {name}, sort={sort}"), &path));
            if SECOND_PAGES.contains(&query.as_str()) {
                let name = format!("list {name}, sort={sort}, page 2");
                reads.push(Read { measure: Measure::SecondPage, ..Read::get(&name, &path) });
            }
        }
    }
    reads
}

struct Timed {
    name: String,
    status: u16,
    bytes: usize,
    samples: Vec<Duration>,
}

async fn call(
    client: &reqwest::Client,
    admin: &str,
    path: &str,
    body: Option<&str>,
    measure: Measure,
) -> (u16, usize, Duration) {
    let url = format!("{admin}{path}");
    let began = Instant::now();
    let request = match body {
        Some(body) => client.post(url).header("content-type", "application/json").body(body.to_owned()),
        None => client.get(url),
    };
    let mut response = request.bearer_auth(common::ADMIN_TOKEN).send().await.expect("an answer");
    let status = response.status().as_u16();
    if measure == Measure::FirstByte {
        let chunk = response.chunk().await.expect("a chunk").map_or(0, |c| c.len());
        return (status, chunk, began.elapsed());
    }
    let bytes = response.bytes().await.expect("a body").len();
    (status, bytes, began.elapsed())
}

async fn measure(client: &reqwest::Client, admin: &str, samples: &Samples, read: &Read, n: usize) -> Timed {
    let mut path = samples.fill(&read.path);
    let body = read.body.map(|b| samples.fill(b));
    let mut name = read.name.clone();
    if read.measure == Measure::SecondPage {
        let first: serde_json::Value = client
            .get(format!("{admin}{path}"))
            .bearer_auth(common::ADMIN_TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        match first["next"].as_str() {
            Some(next) => path = format!("{path}&after={}", common::url_encode(next)),
            None => name.push_str(" (one page only)"),
        }
    }
    let body = body.as_deref();
    for _ in 0..3 {
        call(client, admin, &path, body, read.measure).await;
    }
    let mut timed = Timed { name, status: 0, bytes: 0, samples: Vec::with_capacity(n) };
    let began = Instant::now();
    // A slow read is sampled for 20 s at most.
    while timed.samples.len() < n && (timed.samples.len() < 5 || began.elapsed() < Duration::from_secs(20)) {
        let (status, bytes, took) = call(client, admin, &path, body, read.measure).await;
        (timed.status, timed.bytes) = (status, bytes);
        timed.samples.push(took);
    }
    timed.samples.sort();
    timed
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted.get(((sorted.len() as f64 - 1.0) * p).round() as usize).copied().unwrap_or_default()
}

fn print_reads(timed: &[Timed]) {
    println!("| read | status | bytes | n | p50 ms | p95 ms | max ms | |");
    println!("|---|---|---|---|---|---|---|---|");
    for t in timed {
        let over = if ms(pct(&t.samples, 0.5)) > OVER_MS || ms(pct(&t.samples, 0.95)) > OVER_MS {
            "**over 50 ms**"
        } else {
            ""
        };
        println!(
            "| {} | {} | {} | {} | {:.1} | {:.1} | {:.1} | {over} |",
            t.name,
            t.status,
            t.bytes,
            t.samples.len(),
            ms(pct(&t.samples, 0.5)),
            ms(pct(&t.samples, 0.95)),
            ms(*t.samples.last().unwrap())
        );
    }
}

/// Customs' calls at `rate` per second for `secs` s, open loop; checks every answered one is stored.
async fn intake(serve: &common::serve::ServeProcess, rate: u64, secs: u64) -> bool {
    let url = format!("{}/platDataOpen", serve.intake);
    let client = reqwest::Client::builder().no_proxy().pool_max_idle_per_host(64).build().unwrap();
    let total = rate * secs;
    let run = common::now_ms();
    let bodies: Vec<(String, String)> = (0..total)
        .map(|i| {
            let session_id = format!("INTAKE-{run}-{i:08}");
            let open_req =
                format!(r#"{{"orderNo":"IO{run}{i}","sessionID":"{session_id}","serviceTime":{run}}}"#);
            (session_id, format!("openReq={}", common::url_encode(&open_req)))
        })
        .collect();
    let period = Duration::from_secs_f64(1.0 / rate as f64);
    let service_pid = serve.pid().expect("the service runs");
    let commits_before = commit_buckets(serve).await;
    let cpu_before = (cpu_secs("self"), cpu_secs(&service_pid.to_string()));
    let mut tasks = tokio::task::JoinSet::new();
    let mut latencies = Vec::with_capacity(bodies.len());
    let mut answered = Vec::with_capacity(bodies.len());
    let mut failures = 0u64;
    let mut collect = |done: (String, Option<Duration>)| match done.1 {
        Some(took) => {
            latencies.push(took);
            answered.push(done.0);
        }
        None => failures += 1,
    };
    let start = Instant::now();
    for (i, (session_id, body)) in bodies.into_iter().enumerate() {
        // Request i is due at start + i × period; its latency counts from then.
        let due = start + period * u32::try_from(i).unwrap();
        tokio::time::sleep_until(due.into()).await;
        let (client, url) = (client.clone(), url.clone());
        tasks.spawn(async move {
            let response = client
                .post(&url)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body)
                .send()
                .await;
            let ok = match response {
                Ok(r) if r.status().is_success() => {
                    let code = br#""code":"10000""#;
                    r.bytes().await.is_ok_and(|b| b.windows(code.len()).any(|w| w == code))
                }
                _ => false,
            };
            (session_id, ok.then(|| due.elapsed()))
        });
        while let Some(done) = tasks.try_join_next() {
            collect(done.unwrap());
        }
    }
    while let Some(done) = tasks.join_next().await {
        collect(done.unwrap());
    }
    let wall = start.elapsed();
    let commits: Vec<(String, u64)> = commit_buckets(serve)
        .await
        .into_iter()
        .zip(commits_before)
        .map(|((le, after), (_, before))| (le, after - before))
        .collect();
    let cpu = (cpu_secs("self") - cpu_before.0, cpu_secs(&service_pid.to_string()) - cpu_before.1);
    let prefix = format!("INTAKE-{run}-");
    let stored: HashSet<String> = common::query_rows::<(String,)>(
        &serve.db,
        serve.schema.as_ref(),
        &format!("SELECT session_id FROM requests WHERE session_id >= '{prefix}' AND session_id < '{prefix}\u{10FFFF}'"),
    )
    .await
    .into_iter()
    .map(|(session_id,)| session_id)
    .collect();
    let missing = answered.iter().filter(|s| !stored.contains(*s)).count();
    latencies.sort();
    let p99 = pct(&latencies, 0.99);
    let achieved = answered.len() as f64 / wall.as_secs_f64();
    println!("| intake on the full database | value |");
    println!("|---|---|");
    println!("| target | {rate} requests/s for {secs} s, p99 ≤ 10 ms |");
    println!(
        "| achieved rate | {achieved:.0} requests/s ({} in {:.1} s) |",
        answered.len(),
        wall.as_secs_f64()
    );
    println!("| failed or not 10000 | {failures} |");
    println!(
        "| p50 / p90 / p99 / max | {:.2} / {:.2} / {:.2} / {:.2} ms |",
        ms(pct(&latencies, 0.5)),
        ms(pct(&latencies, 0.9)),
        ms(p99),
        ms(latencies.last().copied().unwrap_or_default())
    );
    println!("| answered but not in the database | {missing} |");
    println!("| group commits, by time (ms) | {} |", commit_line(&commits));
    // The log file keeps the largest size it reached (SQLite writes it over from its
    // beginning when it starts over): how far it grew between two checkpoints, at most.
    if serve.schema.is_none() {
        let wal = std::fs::metadata(format!("{}-wal", serve.db.display())).map_or(0, |m| m.len());
        println!("| write-ahead log file after the run | {:.0} MB |", wal as f64 / 1e6);
    }
    println!(
        "| CPU used meanwhile (of {:.0} core-seconds) | service {:.1} s, load generator {:.1} s |",
        wall.as_secs_f64() * std::thread::available_parallelism().map_or(1.0, |n| n.get() as f64),
        cpu.1,
        cpu.0
    );
    let met = failures == 0 && missing == 0 && achieved >= rate as f64 * 0.99 && ms(p99) <= 10.0;
    println!("| target met | {} |", if met { "yes" } else { "**no**" });
    missing == 0
}

/// The service's histogram of intake group commits: each bucket's upper bound and count so far.
async fn commit_buckets(serve: &common::serve::ServeProcess) -> Vec<(String, u64)> {
    let (_, text) = serve.metrics(Some(common::ADMIN_TOKEN)).await;
    text.lines()
        .filter_map(|line| line.strip_prefix("customs179_intake_commit_seconds_bucket{le=\""))
        .filter_map(|rest| {
            let (le, count) = rest.split_once("\"} ")?;
            Some((le.to_owned(), count.trim().parse().ok()?))
        })
        .collect()
}

/// `≤1: n, 1–2: n, …, >1000: n` from cumulative bucket counts, the empty buckets left out.
fn commit_line(cumulative: &[(String, u64)]) -> String {
    let mut parts = Vec::new();
    let (mut below, mut lower) = (0, None::<String>);
    for (le, count) in cumulative {
        let bound =
            le.parse::<f64>().map_or_else(|_| le.clone(), |secs| format!("{}", (secs * 1e6).round() / 1e3));
        let name = match (&lower, le.as_str()) {
            (_, "+Inf") => format!(">{}", lower.clone().unwrap_or_default()),
            (None, _) => format!("≤{bound}"),
            (Some(lower), _) => format!("{lower}–{bound}"),
        };
        if count - below > 0 {
            parts.push(format!("{name}: {}", count - below));
        }
        below = *count;
        lower = Some(bound);
    }
    parts.join(", ")
}

/// User and system CPU seconds a process (`self` or a pid) has used so far (Linux).
fn cpu_secs(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command (which is in parentheses and may hold spaces).
    let fields: Vec<&str> = stat.rsplit_once(')').map_or("", |(_, rest)| rest).split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the command; 100 ticks a second.
    (ticks(11) + ticks(12)) / 100.0
}

async fn state_table(db: &Path, schema: Option<&common::postgres::Schema>) {
    let counts: Vec<(String, i64)> = common::query_rows(
        db,
        schema,
        "SELECT state, CAST(SUM(n) AS BIGINT) FROM state_counts GROUP BY state ORDER BY 2 DESC",
    )
    .await;
    let tables = ["requests", "payments", "uploads", "attempts", "audit", "replays", "replay_items"];
    let mut sizes = Vec::new();
    for table in tables {
        let n: Vec<(i64,)> = common::query_rows(db, schema, &format!("SELECT COUNT(*) FROM {table}")).await;
        sizes.push((table, n[0].0));
    }
    let bytes = match schema {
        None => std::fs::metadata(db).unwrap().len(),
        Some(schema) => {
            let sql = format!(
                "SELECT CAST(SUM(pg_total_relation_size(c.oid)) AS BIGINT) FROM pg_class c
                 JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = '{}' AND c.relkind = 'r'",
                schema.name
            );
            u64::try_from(common::query_rows::<(i64,)>(db, Some(schema), &sql).await[0].0).unwrap_or(0)
        }
    };
    println!("| the database | rows |");
    println!("|---|---|");
    for (state, n) in counts {
        println!("| requests {state} | {n} |");
    }
    for (table, n) in sizes {
        println!("| {table} | {n} |");
    }
    println!("| size on disk (tables and their indexes) | {:.2} GB |", bytes as f64 / 1e9);
    println!();
}

#[tokio::main]
async fn main() -> ExitCode {
    let o = match common::bench_options(parse, USAGE) {
        Ok(o) => o,
        Err(exit) => return exit,
    };
    const SECTIONS: &str = "[signer]\npin = \"88888888\"\n[customs]\nenvironment = \"test\"\n";
    let (mut serve, end) = match o.store {
        Backend::Sqlite => {
            let (cached, end) = filled(&o).await;
            let run = run_copy(&cached, &o.keep, o.live).await;
            (common::serve::ServeProcess::configure(&run, SECTIONS), end)
        }
        Backend::Postgres => {
            let (schema, end) = filled_postgres(&o).await;
            run_postgres(&schema, o.live).await;
            std::fs::create_dir_all(o.keep.join("run")).unwrap();
            (
                common::serve::ServeProcess::configure(&o.keep.join("run"), SECTIONS)
                    .on_schema(Some(&schema)),
                end,
            )
        }
    };
    let began = Instant::now();
    serve.start().await;
    println!("the service started on it in {:.1} s", began.elapsed().as_secs_f64());
    println!();
    state_table(&serve.db, serve.schema.as_ref()).await;
    let mut ok = true;
    if o.reads {
        let client = common::http_client(Some(Duration::from_secs(120)));
        let samples = Samples::of(o.requests, end);
        let mut timed = Vec::new();
        for read in reads() {
            let t = measure(&client, &serve.admin, &samples, &read, o.samples).await;
            eprintln!("{}: p50 {:.1} ms", t.name, ms(pct(&t.samples, 0.5)));
            timed.push(t);
        }
        print_reads(&timed);
        println!();
    }
    if o.intake {
        ok &= intake(&serve, o.rate, o.secs).await;
    }
    let _ = serve.terminate(Duration::from_secs(30)).await;
    if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}
