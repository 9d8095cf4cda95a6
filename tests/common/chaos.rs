//! The chaos run, shared by `tests/chaos.rs` (a reduced size, in CI) and `benches/chaos.rs`
//! (the full size, printed as tables): the real `customs179 serve` process is SIGKILLed at
//! seeded random moments and restarted at once on the same database and the same ports, while
//! customs calls at a steady rate and the platform pushes each order's payment record. The card
//! (the EportClient simulator, a fixed time per signature) and customs (the customs simulator,
//! answering some uploads HTTP 503 and losing some answers after storing them) run in this
//! process, so they outlive every kill and remember everything.
//!
//! [`ChaosReport::problems`] lists every broken promise: a call answered 10000 that was not
//! delivered, or delivered later than 120 s after customs' call; a sessionID customs did not
//! store exactly once, or stored with another upload than the one the service holds as
//! delivered; an upload with violations; a service that exited on its own; a kill that left a
//! Sign with an unproven PIN at the card not followed by a signing pause (rule 1), or any other
//! pause. The run resumes every pause at once, as an operator would, and counts them.
//!
//! Choices made where the world is silent:
//! - Customs' retry policy is unpublished. A call that gets no 10000 (the service is down or
//!   answers 503) is asked again as a careful customs would: the same sessionID after 1 s,
//!   doubling up to 8 s, for 30 s. Such a re-ask also covers a call stored just before a kill
//!   whose answer was lost: the repeated sessionID must be answered 10000 and stored once.
//! - The platform pushes each order's record at a random moment up to 2 s before or after
//!   customs' call, and pushes again (after 0.2 s, doubling up to 5 s, for 120 s) while the
//!   service does not take it, as a platform would. Both back off so that a struggling
//!   service is not buried under retries the real callers would not make.
//! - The 120 s run from the call the service answered (its `received_at`): a call that got no
//!   answer was not taken, and customs' re-ask is a call of its own.
//! - Kills take turns at three [`Aim`]s, so that every run has each: work claimed by the live
//!   process at the card (`ready`, leased) and at customs (`signed`, leased) at once, as the
//!   database shows it; right after that kill's restart, the new process's first Sign, whose PIN
//!   is not proven yet (rule 1 must then pause signing); and wherever a drawn moment falls.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use customs179_sim::customs::{self, CUSTOMS_USER_AGENT, CustomsFaults, CustomsSimOptions, FaultKind};
use customs179_sim::eport::{self, Algo, EportSimOptions, Faults, RunningEportSim};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::serve::ServeProcess;
use super::{ADMIN_TOKEN, EBP_CODE, TestDb, http_client, now_ms};

const PIN: &str = "88888888";
/// The service's deadline (`[customs] deadline_secs`, set to this in the configuration).
const DEADLINE_MS: i64 = 120_000;
/// When customs asks again for a call that got no 10000: after the first wait, doubling up to
/// the longest, until it has asked for so long.
const REASK: Retries = Retries {
    first: Duration::from_secs(1),
    longest: Duration::from_secs(8),
    give_up_after: Duration::from_secs(30),
};
/// When the platform pushes again a record the service did not take.
const PUSH_AGAIN: Retries = Retries {
    first: Duration::from_millis(200),
    longest: Duration::from_secs(5),
    give_up_after: Duration::from_secs(120),
};
/// Each record is pushed up to this long before or after customs' call for its order.
const PUSH_SPREAD_MS: f64 = 2_000.0;
/// How long an aimed kill waits for what it is aimed at before it strikes anyway.
const AIM_WITHIN: Duration = Duration::from_secs(5);
/// How often the operator looks at the pauses.
const OPERATOR_LOOKS_EVERY: Duration = Duration::from_millis(200);
/// Past the deadline of the last answered call, how long the run waits for stragglers: long
/// enough that a late delivery shows as late rather than missing.
const SETTLE_MARGIN_MS: i64 = 30_000;

/// A retry schedule: waits doubling from `first` up to `longest`, until `give_up_after`.
struct Retries {
    first: Duration,
    longest: Duration,
    give_up_after: Duration,
}

impl Retries {
    /// The wait before the try after `tries` tries begun at `since`; None when it is time to
    /// give up.
    fn wait(&self, tries: u32, since: Instant) -> Option<Duration> {
        let wait = self.first.saturating_mul(1 << tries.saturating_sub(1).min(16)).min(self.longest);
        (since.elapsed() + wait <= self.give_up_after).then_some(wait)
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct ChaosOptions {
    /// Customs' calls, each for an order of its own with a sessionID of its own.
    pub requests: usize,
    /// Calls started per second, open loop: a slow or missing answer delays no later call.
    pub rate_per_s: f64,
    /// SIGKILLs, at seeded random moments while customs calls; each followed by a restart.
    pub kills: usize,
    /// How long the simulated card takes for each signature.
    pub sign_latency_ms: u64,
    /// Share of uploads customs answers HTTP 503 without storing.
    pub http_5xx: f64,
    /// Share of stored uploads whose answer customs loses (it closes the connection).
    pub lost_after_store: f64,
    /// Seeds the kill moments, the push moments and customs' faults.
    pub seed: u64,
    /// Where to keep the database and the service's logs (one per start); when None, a
    /// temporary directory, removed at the end unless the run found problems.
    pub keep_in: Option<PathBuf>,
}

impl ChaosOptions {
    /// The run of the issue: 5,000 calls at 25/s, 20 ms a signature, customs answering 10 %
    /// HTTP 503 and losing 5 % of its answers after storing, 10 kills.
    pub fn full_size(seed: u64) -> ChaosOptions {
        ChaosOptions {
            requests: 5_000,
            rate_per_s: 25.0,
            kills: 10,
            sign_latency_ms: 20,
            http_5xx: 0.10,
            lost_after_store: 0.05,
            seed,
            keep_in: None,
        }
    }

    /// How long customs keeps calling.
    fn calling_time(&self) -> Duration {
        Duration::from_secs_f64(self.requests as f64 / self.rate_per_s)
    }

    /// When call `index` is due, from the start of the calls.
    fn call_due(&self, index: usize) -> Duration {
        Duration::from_secs_f64(index as f64 / self.rate_per_s)
    }
}

/// A seed from the clock, for runs that are not asked to repeat one.
pub fn random_seed() -> u64 {
    let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    Draws(since_epoch.as_secs() ^ (u64::from(since_epoch.subsec_nanos()) << 32)).next_u64()
}

/// What came of a run.
#[derive(Debug)]
pub struct ChaosReport {
    pub options: ChaosOptions,
    /// From the first call to the end of the wait for the last delivery.
    pub elapsed: Duration,
    /// Calls answered 10000, at the first ask or a later one.
    pub answered: usize,
    /// Of those, the calls answered only when asked again.
    pub answered_after_reasking: usize,
    /// Calls still without 10000 after customs asked for 30 s.
    pub never_answered: Vec<String>,
    /// Answered calls whose request ended delivered.
    pub delivered: usize,
    /// Answered calls whose request is not delivered, with the state it is in.
    pub not_delivered: Vec<(String, String)>,
    /// Delivered answered requests with their time from customs' call to delivery, when over
    /// the deadline, in ms.
    pub late: Vec<(String, i64)>,
    /// From customs' call (`received_at`) to `delivered_at`, of every delivered answered
    /// request, in ms, sorted.
    pub call_to_delivered_ms: Vec<i64>,
    /// The answered request that took longest from customs' call to delivery, and how long (ms).
    pub slowest: Option<(String, i64)>,
    pub kills: Vec<KillRecord>,
    /// Every pause the operator saw, in order; each was resumed.
    pub pauses: Vec<SeenPause>,
    /// Each time the service exited without being killed, and how its log ended.
    pub exits_on_its_own: Vec<String>,
    /// Pushes the service refused (other than for being down).
    pub refused_pushes: Vec<String>,
    pub customs: CustomsSummary,
    /// Where the database and the service's logs (`serve-*-N.log`, one per start) were kept:
    /// `keep_in`, or the temporary directory of a run that found problems.
    pub kept_in: Option<PathBuf>,
}

/// One kill and what followed it.
#[derive(Debug)]
pub struct KillRecord {
    /// From the start of the calls.
    pub at: Duration,
    /// When, unix ms (the database's and the pauses' clock).
    pub killed_ms: i64,
    pub aim: Aim,
    /// Requests the killed process had claimed at the card (`ready`) and at customs (`signed`).
    pub claimed_at_card: usize,
    pub claimed_at_customs: usize,
    pub sign_at_card: SignAtCard,
    /// From the kill until the new process listened on both ports.
    pub kill_to_listening: Duration,
    /// From then to the first delivery, if one came before the next kill, in ms.
    pub listening_to_first_delivery_ms: Option<i64>,
    /// From the kill until every request it left claimed had its next step done (signed or
    /// answered by customs), in ms; None when it left nothing claimed.
    pub claimed_to_next_step_ms: Option<i64>,
    /// Whether the restarted service paused signing for an unproven PIN.
    pub paused_for_unproven_pin: bool,
}

/// What a kill waits for, after its moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aim {
    /// Nothing: it strikes at its drawn moment.
    Anywhere,
    /// Work claimed by the live process at the card and at customs at once.
    ClaimedWork,
    /// The first Sign of the process the kill before it restarted (its moment is that restart).
    FirstSign,
}

impl Aim {
    /// Kills take turns: claimed work, the first Sign right after its restart, anywhere.
    fn of(kill: usize) -> Aim {
        [Aim::ClaimedWork, Aim::FirstSign, Aim::Anywhere][kill % 3]
    }

    fn name(self) -> &'static str {
        match self {
            Aim::Anywhere => "anywhere",
            Aim::ClaimedWork => "claimed work",
            Aim::FirstSign => "first Sign",
        }
    }
}

/// A Sign of the killed process at the card, when it was killed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignAtCard {
    None,
    /// After a signature made with the PIN had verified.
    PinProven,
    /// The process's first Sign: the card may be checking the PIN for the first time.
    PinUnproven,
}

impl SignAtCard {
    fn name(self) -> &'static str {
        match self {
            SignAtCard::None => "no",
            SignAtCard::PinProven => "yes",
            SignAtCard::PinUnproven => "yes, PIN unproven",
        }
    }
}

/// A pause as the operator saw it in `GET /api/control`.
#[derive(Debug)]
pub struct SeenPause {
    pub stage: String,
    pub reason: String,
    /// When the service paused, unix ms.
    pub since: i64,
}

impl SeenPause {
    /// Rule 1: after a kill with a Sign of an unproven PIN at the card, signing pauses.
    fn for_unproven_pin(&self) -> bool {
        self.stage == "signing" && self.reason.to_lowercase().contains("unproven pin")
    }
}

/// What customs received, from its simulator's report.
#[derive(Debug, Default)]
pub struct CustomsSummary {
    pub uploads: u64,
    pub stored: u64,
    pub answered_20006: u64,
    pub answered_503: u64,
    pub answers_lost: usize,
    /// sessionIDs stored more than once.
    pub stored_twice: Vec<String>,
    /// Delivered requests customs never stored.
    pub delivered_not_stored: Vec<String>,
    /// Stored with another guid than the delivered request's upload.
    pub stored_other_upload: Vec<String>,
    /// Uploads with violations: their sessionID and the first violation.
    pub with_violations: Vec<String>,
}

impl ChaosReport {
    /// Every broken promise, one sentence each; empty when the run proves what it is for.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.answered == 0 {
            problems.push("no call was answered 10000: the run proves nothing".to_owned());
        }
        let mut add = |what: &str, items: &[&dyn std::fmt::Debug]| {
            if !items.is_empty() {
                problems.push(format!("{} {what}, e.g. {:?}", items.len(), &items[..items.len().min(5)]));
            }
        };
        add("calls never answered 10000 in 30 s", &debugs(&self.never_answered));
        add("answered requests not delivered", &debugs(&self.not_delivered));
        add("answered requests delivered after the 120 s deadline", &debugs(&self.late));
        add("exits of the service on its own", &debugs(&self.exits_on_its_own));
        add("payment pushes refused", &debugs(&self.refused_pushes));
        let other_pauses: Vec<&SeenPause> = self.pauses.iter().filter(|p| !p.for_unproven_pin()).collect();
        add("pauses other than for an unproven PIN", &debugs(&other_pauses));
        let first_kill = self.kills.first().map_or(i64::MAX, |kill| kill.killed_ms);
        let before_any_kill: Vec<&SeenPause> =
            self.pauses.iter().filter(|p| p.for_unproven_pin() && p.since < first_kill).collect();
        add("pauses for an unproven PIN before any kill", &debugs(&before_any_kill));
        let not_paused: Vec<String> = self
            .kills
            .iter()
            .enumerate()
            .filter(|(_, k)| k.sign_at_card == SignAtCard::PinUnproven && !k.paused_for_unproven_pin)
            .map(|(n, k)| format!("kill {} at {:.1} s", n + 1, k.at.as_secs_f64()))
            .collect();
        add(
            "kills that left a Sign with an unproven PIN at the card without a signing pause after (rule 1)",
            &debugs(&not_paused),
        );
        let customs = &self.customs;
        add("sessionIDs stored twice by customs", &debugs(&customs.stored_twice));
        add("delivered requests customs never stored", &debugs(&customs.delivered_not_stored));
        add(
            "sessionIDs customs stored with another upload than the delivered one",
            &debugs(&customs.stored_other_upload),
        );
        add("uploads with violations", &debugs(&customs.with_violations));
        problems
    }

    /// The summary and the kills as markdown tables, for BENCHMARKS.md.
    pub fn table(&self) -> String {
        let o = &self.options;
        let customs = &self.customs;
        let delays = &self.call_to_delivered_ms;
        let kills = &self.kills;
        let max_ms = |values: Vec<Option<i64>>| values.into_iter().flatten().max().map_or("–".to_owned(), ms);
        let pin_pauses = self.pauses.iter().filter(|p| p.for_unproven_pin()).count();
        let rows: Vec<(&str, String)> = vec![
            ("seed", o.seed.to_string()),
            (
                "customs' calls",
                format!(
                    "{} at {}/s, card {} ms a signature, customs {:.0} % HTTP 503 and {:.0} % answers lost",
                    o.requests,
                    o.rate_per_s,
                    o.sign_latency_ms,
                    o.http_5xx * 100.0,
                    o.lost_after_store * 100.0
                ),
            ),
            (
                "answered 10000 (of them after re-asking)",
                format!("{} ({})", self.answered, self.answered_after_reasking),
            ),
            ("never answered in 30 s", self.never_answered.len().to_string()),
            ("answered and delivered", self.delivered.to_string()),
            ("answered, not delivered", self.not_delivered.len().to_string()),
            ("late (over 120 s from customs' call)", self.late.len().to_string()),
            (
                "customs' call → delivered: p50 / p99 / max",
                [0.5, 0.99, 1.0].map(|q| percentile(delays, q).map_or("–".to_owned(), ms)).join(" / "),
            ),
            (
                "slowest delivery",
                self.slowest.as_ref().map_or("–".to_owned(), |(id, delay)| format!("{id}, {}", ms(*delay))),
            ),
            (
                "kills aimed anywhere / at claimed work / at a first Sign",
                [Aim::Anywhere, Aim::ClaimedWork, Aim::FirstSign]
                    .map(|aim| kills.iter().filter(|k| k.aim == aim).count().to_string())
                    .join(" / "),
            ),
            (
                "kills with work claimed at the card / at customs",
                format!(
                    "{} / {}",
                    kills.iter().filter(|k| k.claimed_at_card > 0).count(),
                    kills.iter().filter(|k| k.claimed_at_customs > 0).count(),
                ),
            ),
            (
                "kills with a Sign at the card: PIN proven / unproven",
                [SignAtCard::PinProven, SignAtCard::PinUnproven]
                    .map(|sign| kills.iter().filter(|k| k.sign_at_card == sign).count().to_string())
                    .join(" / "),
            ),
            (
                "kill → listening again: max",
                max_ms(kills.iter().map(|k| Some(millis(k.kill_to_listening))).collect()),
            ),
            (
                "listening → first delivery: max",
                max_ms(kills.iter().map(|k| k.listening_to_first_delivery_ms).collect()),
            ),
            (
                "kill → claimed work's next step done: max",
                max_ms(kills.iter().map(|k| k.claimed_to_next_step_ms).collect()),
            ),
            ("signing paused for an unproven PIN, resumed", pin_pauses.to_string()),
            ("other pauses", (self.pauses.len() - pin_pauses).to_string()),
            ("exits on its own", self.exits_on_its_own.len().to_string()),
            (
                "uploads at customs: stored / 20006 / HTTP 503 / answer lost",
                format!(
                    "{}: {} / {} / {} / {}",
                    customs.uploads,
                    customs.stored,
                    customs.answered_20006,
                    customs.answered_503,
                    customs.answers_lost
                ),
            ),
            (
                "stored twice / delivered not stored / stored another upload",
                format!(
                    "{} / {} / {}",
                    customs.stored_twice.len(),
                    customs.delivered_not_stored.len(),
                    customs.stored_other_upload.len()
                ),
            ),
            ("uploads with violations", customs.with_violations.len().to_string()),
            ("elapsed", format!("{:.1} s", self.elapsed.as_secs_f64())),
            (
                "database and logs kept in",
                self.kept_in.as_ref().map_or("–".to_owned(), |d| d.display().to_string()),
            ),
        ];
        let mut out = String::from("| chaos run | value |\n|---|---|\n");
        for (name, value) in rows {
            out.push_str(&format!("| {name} | {value} |\n"));
        }
        if kills.is_empty() {
            return out;
        }
        out.push_str(
            "\n| kill | at | aim | claimed at card / customs | Sign at the card | → listening | → first delivery \
             | → claimed work's next step | paused: unproven PIN |\n|---:|---:|---|---:|---|---:|---:|---:|---|\n",
        );
        for (n, kill) in kills.iter().enumerate() {
            let yes_no = |b: bool| if b { "yes" } else { "no" };
            out.push_str(&format!(
                "| {} | {:.1} s | {} | {} / {} | {} | {} | {} | {} | {} |\n",
                n + 1,
                kill.at.as_secs_f64(),
                kill.aim.name(),
                kill.claimed_at_card,
                kill.claimed_at_customs,
                kill.sign_at_card.name(),
                ms(millis(kill.kill_to_listening)),
                kill.listening_to_first_delivery_ms.map_or("–".to_owned(), ms),
                kill.claimed_to_next_step_ms.map_or("–".to_owned(), ms),
                yes_no(kill.paused_for_unproven_pin),
            ));
        }
        out
    }
}

/// Items of several kinds as one kind, for [`ChaosReport::problems`].
fn debugs<T: std::fmt::Debug>(items: &[T]) -> Vec<&dyn std::fmt::Debug> {
    items.iter().map(|item| item as &dyn std::fmt::Debug).collect()
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

fn ms(value: i64) -> String {
    if value < 10_000 { format!("{value} ms") } else { format!("{:.1} s", value as f64 / 1e3) }
}

/// The nearest-rank percentile `q` (0 < q ≤ 1) of sorted values.
fn percentile(sorted: &[i64], q: f64) -> Option<i64> {
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.max(1) - 1).copied()
}

/// SplitMix64: a few lines, enough for drawing moments, and the same draws for the same seed.
struct Draws(u64);

impl Draws {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1_u64 << 53) as f64
    }
}

/// The run's random moments, drawn from the seed before anything starts.
struct Plan {
    /// When each order's record is pushed, relative to customs' call for it, in ms.
    push_offsets_ms: Vec<f64>,
    kills: Vec<PlannedKill>,
}

struct PlannedKill {
    aim: Aim,
    /// From the start of the calls. A first-Sign kill has the moment of the kill before it,
    /// passed when its turn comes: it strikes right after that kill's restart.
    not_before: Duration,
}

impl Plan {
    fn draw(options: &ChaosOptions) -> Plan {
        let mut draws = Draws(options.seed);
        let push_offsets_ms =
            (0..options.requests).map(|_| (draws.unit() * 2.0 - 1.0) * PUSH_SPREAD_MS).collect();
        let aims: Vec<Aim> = (0..options.kills).map(Aim::of).collect();
        // Not in the first or last 5 % of the calls: a kill should find work before and after it.
        let mut moments: Vec<Duration> = aims
            .iter()
            .filter(|aim| **aim != Aim::FirstSign)
            .map(|_| options.calling_time().mul_f64(0.05 + 0.9 * draws.unit()))
            .collect();
        moments.sort();
        let mut moments = moments.into_iter();
        let mut not_before = Duration::ZERO;
        let mut kills = Vec::new();
        for aim in aims {
            if aim != Aim::FirstSign {
                not_before = moments.next().unwrap();
            }
            kills.push(PlannedKill { aim, not_before });
        }
        Plan { push_offsets_ms, kills }
    }
}

/// The service and the card, which sees what each process of the service sends it.
struct Rig {
    serve: ServeProcess,
    card: RunningEportSim,
    db: TestDb,
    /// The card's count of Sign requests when the running process was spawned.
    signs_before_start: u64,
    /// Each time the service exited without being killed, and how its log ended.
    exits: Vec<String>,
}

impl Rig {
    /// Starts the service; returns how long until it listened.
    async fn start(&mut self) -> Duration {
        self.signs_before_start = self.card.stats().sign_requests;
        self.serve.start_listening().await
    }

    /// Waits until `until`, restarting the service whenever it exits on its own (recorded:
    /// only the run's kills may stop it).
    async fn keep_running(&mut self, until: Instant) {
        loop {
            if let Some(status) = self.serve.exited() {
                let log = self.serve.log_tail();
                self.exits
                    .push(format!("start {} exited ({status}); its log ends:\n{log}", self.serve.starts));
                self.start().await;
            }
            let now = Instant::now();
            if now >= until {
                return;
            }
            tokio::time::sleep((until - now).min(Duration::from_millis(50))).await;
        }
    }

    /// The running process's Sign at the card, if there is one.
    fn sign_at_card(&self) -> SignAtCard {
        let stats = self.card.stats();
        // The card answers one Sign at a time, in turn: an unanswered one is the latest.
        let sent = stats.sign_requests - self.signs_before_start;
        if sent == 0 || stats.signatures == stats.sign_requests {
            SignAtCard::None
        } else if sent == 1 {
            SignAtCard::PinUnproven
        } else {
            SignAtCard::PinProven
        }
    }

    /// SIGKILLs the service as `planned` says and starts it again at once.
    async fn kill(&mut self, planned: PlannedKill, calls_started: Instant) -> Kill {
        self.keep_running(calls_started + planned.not_before).await;
        let spawned_ms = self.serve.spawned_ms;
        let aimed = match planned.aim {
            Aim::Anywhere => None,
            Aim::ClaimedWork => Some(Claimed::aim(&self.db, spawned_ms).await),
            Aim::FirstSign => {
                // A Sign holds the card for its latency: the card's counters (in memory), read
                // every millisecond, see it. Nothing slower may come between seeing it and the
                // kill (a read of the database can outlast a Sign).
                let deadline = Instant::now() + AIM_WITHIN;
                while self.sign_at_card() != SignAtCard::PinUnproven && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                None
            }
        };
        let sign_at_card = self.sign_at_card();
        if let Some(status) = self.serve.kill() {
            self.exits.push(format!("start {} exited ({status}) before its kill", self.serve.starts));
        }
        let killed_ms = now_ms();
        // Until the restart, the dead process's claims stand in the database as it left them.
        let claimed = match aimed {
            Some(claimed) => claimed,
            None => Claimed::read(&self.db, spawned_ms).await,
        };
        let at = calls_started.elapsed();
        let kill_to_listening = self.start().await;
        Kill { aim: planned.aim, at, claimed, sign_at_card, killed_ms, kill_to_listening }
    }
}

/// Requests the running process holds claimed (a live lease it took itself), or held when
/// it was killed: until the restart they stand as it left them.
#[derive(Default)]
struct Claimed {
    at_card: Vec<String>,
    at_customs: Vec<String>,
}

impl Claimed {
    async fn read(db: &TestDb, spawned_ms: i64) -> Claimed {
        // A claim sets `updated_at`; a lease a dead process left behind is older than the
        // running process and is not the running process's work.
        let rows: Vec<(String, String)> = db
            .rows(&format!(
                "SELECT session_id, state FROM requests
                 WHERE state IN ('ready', 'signed') AND lease_until > {} AND updated_at >= {spawned_ms}",
                now_ms()
            ))
            .await;
        let mut claimed = Claimed::default();
        for (session_id, state) in rows {
            match state.as_str() {
                "ready" => claimed.at_card.push(session_id),
                _ => claimed.at_customs.push(session_id),
            }
        }
        claimed
    }

    /// Waits (up to [`AIM_WITHIN`]) until work is claimed at the card and at customs at once;
    /// returns what is claimed then, or at the end of the wait.
    async fn aim(db: &TestDb, spawned_ms: i64) -> Claimed {
        let deadline = Instant::now() + AIM_WITHIN;
        loop {
            let claimed = Claimed::read(db, spawned_ms).await;
            let both = !claimed.at_card.is_empty() && !claimed.at_customs.is_empty();
            if both || Instant::now() > deadline {
                return claimed;
            }
            // An upload holds its claim for a few milliseconds; looking more often would take
            // the service's CPU.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

/// A kill as it happened; turned into a [`KillRecord`] once the database tells what followed.
struct Kill {
    aim: Aim,
    /// From the start of the calls.
    at: Duration,
    claimed: Claimed,
    sign_at_card: SignAtCard,
    killed_ms: i64,
    kill_to_listening: Duration,
}

impl Kill {
    /// What followed the kill, as the database tells (until `next_kill_ms`).
    async fn record(&self, db: &TestDb, next_kill_ms: i64, pauses: &[SeenPause]) -> KillRecord {
        let listening_ms = self.killed_ms + millis(self.kill_to_listening);
        let first_delivery: Vec<(Option<i64>,)> = db
            .rows(&format!(
                "SELECT MIN(delivered_at) FROM requests
                 WHERE delivered_at >= {listening_ms} AND delivered_at < {next_kill_ms}"
            ))
            .await;
        let first_delivery = first_delivery[0].0;
        // Every step tried is an attempt (signed, or customs' answer), stamped when it ended.
        let mut claimed_to_next_step_ms = None;
        for session_id in self.claimed.at_card.iter().chain(&self.claimed.at_customs) {
            let next_step: Vec<(Option<i64>,)> = db
                .rows(&format!(
                    "SELECT MIN(at) FROM attempts WHERE session_id = {} AND at >= {}",
                    super::sql_text(session_id),
                    self.killed_ms
                ))
                .await;
            let next_step = next_step[0].0;
            claimed_to_next_step_ms = claimed_to_next_step_ms.max(next_step.map(|at| at - self.killed_ms));
        }
        KillRecord {
            at: self.at,
            killed_ms: self.killed_ms,
            aim: self.aim,
            claimed_at_card: self.claimed.at_card.len(),
            claimed_at_customs: self.claimed.at_customs.len(),
            sign_at_card: self.sign_at_card,
            kill_to_listening: self.kill_to_listening,
            listening_to_first_delivery_ms: first_delivery.map(|at| at - listening_ms),
            claimed_to_next_step_ms,
            paused_for_unproven_pin: pauses
                .iter()
                .any(|p| p.for_unproven_pin() && (self.killed_ms..next_kill_ms).contains(&p.since)),
        }
    }
}

/// One of customs' calls and its re-asks.
struct Call {
    session_id: String,
    asks: u32,
    answered: bool,
}

/// Customs' calls: call `n` for order `SO-n` with sessionID `S-n`, due at `start` + n / rate,
/// each asked again until answered 10000 (see the module's choices).
async fn customs_calls(options: ChaosOptions, url: String, start: Instant) -> Vec<Call> {
    let client = http_client(Some(Duration::from_secs(10)));
    let mut calls = JoinSet::new();
    for n in 0..options.requests {
        tokio::time::sleep_until(start + options.call_due(n)).await;
        calls.spawn(customs_asks(client.clone(), url.clone(), n));
    }
    let mut done = calls.join_all().await;
    done.sort_by(|a, b| a.session_id.cmp(&b.session_id));
    done
}

async fn customs_asks(client: reqwest::Client, url: String, n: usize) -> Call {
    let (order_no, session_id) = (order_no(n), session_id(n));
    let first = Instant::now();
    let mut asks = 0;
    loop {
        asks += 1;
        if answered_10000(&client, &url, &order_no, &session_id).await {
            return Call { session_id, asks, answered: true };
        }
        let Some(wait) = REASK.wait(asks, first) else {
            return Call { session_id, asks, answered: false };
        };
        tokio::time::sleep(wait).await;
    }
}

/// One `openReq` form post, as customs makes it; true when answered HTTP 200 with code 10000.
async fn answered_10000(client: &reqwest::Client, url: &str, order_no: &str, session_id: &str) -> bool {
    let open_req = json!({"orderNo": order_no, "sessionID": session_id, "serviceTime": now_ms()}).to_string();
    let sent = client
        .post(url)
        .header(reqwest::header::USER_AGENT, CUSTOMS_USER_AGENT)
        .form(&[("openReq", open_req)])
        .send()
        .await;
    let Ok(response) = sent else { return false };
    if response.status() != StatusCode::OK {
        return false;
    }
    response.json::<Value>().await.is_ok_and(|answer| answer["code"] == "10000")
}

fn order_no(n: usize) -> String {
    format!("SO-{n:05}")
}

fn session_id(n: usize) -> String {
    format!("S-{n:05}")
}

/// The platform's pushes: order `n`'s record (payment `T-n`) at its call's due time plus its
/// drawn offset; returns the pushes the service refused.
async fn platform_pushes(
    options: ChaosOptions,
    offsets_ms: Vec<f64>,
    admin: String,
    start: Instant,
) -> Vec<String> {
    let client = http_client(Some(Duration::from_secs(10)));
    let mut due: Vec<(Duration, usize)> = offsets_ms
        .iter()
        .enumerate()
        .map(|(n, offset)| {
            let at = options.call_due(n).as_secs_f64() * 1e3 + offset;
            (Duration::from_secs_f64(at.max(0.0) / 1e3), n)
        })
        .collect();
    due.sort();
    let mut pushes = JoinSet::new();
    for (at, n) in due {
        tokio::time::sleep_until(start + at).await;
        pushes.spawn(platform_pays(client.clone(), admin.clone(), n));
    }
    pushes.join_all().await.into_iter().flatten().collect()
}

/// Pushes order `n`'s record until the service takes it (201, or 200 when a push whose answer a
/// kill lost had stored it); the refusal otherwise.
async fn platform_pays(client: reqwest::Client, admin: String, n: usize) -> Option<String> {
    let record = super::payment_record(&format!("T-{n:05}"), &[&order_no(n)]).to_string();
    let first = Instant::now();
    let mut tries = 0;
    loop {
        tries += 1;
        let sent = client
            .post(format!("{admin}/api/payments"))
            .bearer_auth(ADMIN_TOKEN)
            .header("content-type", "application/json")
            .body(record.clone())
            .send()
            .await;
        let down = match sent {
            Ok(response) if response.status().is_success() => return None,
            Ok(response) if response.status().is_server_error() => format!("HTTP {}", response.status()),
            Ok(response) => {
                let status = response.status();
                return Some(format!(
                    "{}: HTTP {status} {}",
                    order_no(n),
                    response.text().await.unwrap_or_default()
                ));
            }
            Err(e) => e.to_string(),
        };
        let Some(wait) = PUSH_AGAIN.wait(tries, first) else {
            return Some(format!("{}: the service did not take it in 120 s: {down}", order_no(n)));
        };
        tokio::time::sleep(wait).await;
    }
}

/// The operator: looks at the pauses until told to stop and resumes each one (recording it),
/// so that the run goes on; which pauses were allowed is judged at the end.
async fn operator(admin: String, mut stop: watch::Receiver<bool>) -> Vec<SeenPause> {
    let client = http_client(Some(Duration::from_secs(5)));
    let mut seen: Vec<SeenPause> = Vec::new();
    while !*stop.borrow() {
        // The service may be down: the next look will do.
        if let Some(controls) = get_controls(&client, &admin).await {
            // The global pauses, and the card's own (a PIN problem pauses the card).
            let card = &controls["cards"][0];
            let places = [
                ("signing", &controls["signing"], "signing".to_owned()),
                ("uploading", &controls["uploading"], "uploading".to_owned()),
                (
                    "signing",
                    &card["signing"],
                    format!("cards/{}/signing", card["name"].as_str().unwrap_or("card")),
                ),
                (
                    "uploading",
                    &card["uploading"],
                    format!("cards/{}/uploading", card["name"].as_str().unwrap_or("card")),
                ),
            ];
            for (stage, status, path) in places {
                if status["paused"] != true {
                    continue;
                }
                let pause = SeenPause {
                    stage: stage.to_owned(),
                    reason: status["reason"].as_str().unwrap_or_default().to_owned(),
                    since: status["since"].as_i64().unwrap_or_default(),
                };
                // Recorded when first seen: a resume whose answer a kill lost still cleared it.
                if !seen.iter().any(|p| p.stage == pause.stage && p.since == pause.since) {
                    seen.push(pause);
                }
                let _ = client
                    .post(format!("{admin}/api/control/{path}/resume"))
                    .bearer_auth(ADMIN_TOKEN)
                    .send()
                    .await;
            }
        }
        tokio::select! {
            _ = stop.changed() => {}
            () = tokio::time::sleep(OPERATOR_LOOKS_EVERY) => {}
        }
    }
    seen
}

async fn get_controls(client: &reqwest::Client, admin: &str) -> Option<Value> {
    let response = client.get(format!("{admin}/api/control")).bearer_auth(ADMIN_TOKEN).send().await.ok()?;
    if response.status() != StatusCode::OK {
        return None;
    }
    response.json().await.ok()
}

impl CustomsSummary {
    /// What customs' report says, checked against the requests the database holds.
    fn of(report: &customs::Report, rows: &HashMap<String, Row>) -> CustomsSummary {
        let mut summary = CustomsSummary {
            uploads: report.totals.received,
            stored: report.totals.stored,
            answered_20006: report.totals.by_code.get("20006").copied().unwrap_or(0),
            answered_503: report.totals.http_5xx,
            answers_lost: report
                .uploads
                .iter()
                .filter(|u| u.fault == Some(FaultKind::LostAfterStore))
                .count(),
            ..CustomsSummary::default()
        };
        let mut stored: HashMap<&str, Vec<Option<&str>>> = HashMap::new();
        for upload in &report.uploads {
            let session_id = upload.session_id.as_deref().unwrap_or("(none)");
            if upload.stored {
                stored.entry(session_id).or_default().push(upload.guid.as_deref());
            }
            if let Some(violation) = upload.violations.first() {
                summary.with_violations.push(format!("{session_id}: {violation}"));
            }
        }
        summary.stored_twice =
            stored.iter().filter(|(_, guids)| guids.len() > 1).map(|(id, _)| (*id).to_owned()).collect();
        for (session_id, row) in rows.iter().filter(|(_, row)| row.state == "delivered") {
            match stored.get(session_id.as_str()) {
                None => summary.delivered_not_stored.push(session_id.clone()),
                Some(guids) if guids.iter().any(|guid| *guid != row.guid.as_deref()) => {
                    summary.stored_other_upload.push(session_id.clone());
                }
                Some(_) => {}
            }
        }
        summary.stored_twice.sort();
        summary.delivered_not_stored.sort();
        summary.stored_other_upload.sort();
        summary
    }
}

/// A request as the database holds it at the end.
#[derive(sqlx::FromRow)]
struct Row {
    session_id: String,
    state: String,
    received_at: i64,
    delivered_at: Option<i64>,
    /// The guid of its current upload, if it was prepared.
    guid: Option<String>,
}

async fn read_requests(db: &TestDb) -> HashMap<String, Row> {
    let rows: Vec<Row> = db
        .rows(
            "SELECT r.session_id, r.state, r.received_at, r.delivered_at, u.guid
             FROM requests r LEFT JOIN uploads u ON u.id = r.upload_id",
        )
        .await;
    rows.into_iter().map(|row| (row.session_id.clone(), row)).collect()
}

async fn delivered_session_ids(db: &TestDb) -> HashSet<String> {
    let ids: Vec<(String,)> = db.rows("SELECT session_id FROM requests WHERE state = 'delivered'").await;
    ids.into_iter().map(|(session_id,)| session_id).collect()
}

/// Runs the whole thing; see the module's documentation.
pub async fn run(options: ChaosOptions) -> ChaosReport {
    let temp = tempfile::tempdir().unwrap();
    let dir = options.keep_in.clone().unwrap_or_else(|| temp.path().to_owned());
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("customs179.sqlite");
    assert!(!db.exists(), "{} holds the database of an earlier run", dir.display());
    let plan = Plan::draw(&options);

    let mut card_options = EportSimOptions::new(super::loopback(), Algo::Sm2, PIN, dir.join("card"));
    card_options.faults = Faults { latency_ms: options.sign_latency_ms, ..Faults::default() };
    let card = eport::start(card_options).await.expect("the card simulator starts");
    let certs = dir.join("registered-certs");
    std::fs::create_dir_all(&certs).unwrap();
    std::fs::write(certs.join("card.pem"), card.keys().cert_pem().unwrap()).unwrap();
    let mut customs_options = CustomsSimOptions::new(super::loopback(), &certs, [EBP_CODE]);
    customs_options.faults = CustomsFaults {
        http_5xx: options.http_5xx,
        lost_after_store: options.lost_after_store,
        ..CustomsFaults::default()
    };
    customs_options.seed = Some(options.seed);
    let customs = customs::start(customs_options).await.expect("the customs simulator starts");

    let sections = format!(
        "[signer]\nurl = \"{}\"\npin = \"{PIN}\"\n[customs]\nenvironment = \"test\"\nupload_url = \"{}\"\n\
         deadline_secs = {}\n[log]\nlevel = \"info\"\n",
        card.ws_url(),
        customs.upload_url(),
        DEADLINE_MS / 1_000
    );
    // Customs keeps calling one address across the restarts.
    let serve = ServeProcess::configure(&dir, &sections).on_current_store().await.keep_ports();
    let (intake_url, admin_url) = (format!("{}/platDataOpen", serve.intake), serve.admin.clone());
    let db = super::TestDb { path: db, schema: serve.schema.clone() };
    let mut rig = Rig { serve, card, db, signs_before_start: 0, exits: Vec::new() };
    rig.start().await;
    let start = Instant::now();
    let calls = tokio::spawn(customs_calls(options.clone(), intake_url, start));
    let pushes =
        tokio::spawn(platform_pushes(options.clone(), plan.push_offsets_ms, admin_url.clone(), start));
    let (stop_operator, operator_stop) = watch::channel(false);
    let operator = tokio::spawn(operator(admin_url, operator_stop));

    let mut kills = Vec::new();
    for planned in plan.kills {
        kills.push(rig.kill(planned, start).await);
    }
    let calls = calls.await.unwrap();
    let refused_pushes = pushes.await.unwrap();

    // Every call has been answered or given up: every answered one is due within the
    // deadline from now. Wait for them all, or for their deadline and a margin.
    let answered: HashSet<String> =
        calls.iter().filter(|c| c.answered).map(|c| c.session_id.clone()).collect();
    let settle_until = Instant::now() + Duration::from_millis((DEADLINE_MS + SETTLE_MARGIN_MS) as u64);
    while Instant::now() < settle_until && !answered.is_subset(&delivered_session_ids(&rig.db).await) {
        rig.keep_running(Instant::now() + Duration::from_millis(250)).await;
    }
    let elapsed = start.elapsed();
    stop_operator.send(true).unwrap();
    let pauses = operator.await.unwrap();
    // Killed, not dropped: dropping it would drop its PostgreSQL schema, still to be read.
    let Rig { mut serve, card, exits, db, .. } = rig;
    serve.kill();

    let rows = read_requests(&db).await;
    let mut kill_records = Vec::new();
    for (n, kill) in kills.iter().enumerate() {
        let next_kill_ms = kills.get(n + 1).map_or(i64::MAX, |next| next.killed_ms);
        kill_records.push(kill.record(&db, next_kill_ms, &pauses).await);
    }
    let customs_report = customs.report();
    customs.stop().await;
    card.stop().await;

    let mut report = ChaosReport {
        options,
        elapsed,
        answered: answered.len(),
        answered_after_reasking: calls.iter().filter(|c| c.answered && c.asks > 1).count(),
        never_answered: calls.iter().filter(|c| !c.answered).map(|c| c.session_id.clone()).collect(),
        delivered: 0,
        not_delivered: Vec::new(),
        late: Vec::new(),
        call_to_delivered_ms: Vec::new(),
        slowest: None,
        kills: kill_records,
        pauses,
        exits_on_its_own: exits,
        refused_pushes,
        customs: CustomsSummary::of(&customs_report, &rows),
        kept_in: None,
    };
    for call in calls.iter().filter(|c| c.answered) {
        let Some(row) = rows.get(&call.session_id) else {
            report.not_delivered.push((call.session_id.clone(), "not in the database".to_owned()));
            continue;
        };
        let Some(delivered_at) = row.delivered_at.filter(|_| row.state == "delivered") else {
            report.not_delivered.push((call.session_id.clone(), row.state.clone()));
            continue;
        };
        report.delivered += 1;
        let delay = delivered_at - row.received_at;
        report.call_to_delivered_ms.push(delay);
        if report.slowest.as_ref().is_none_or(|(_, slowest)| delay > *slowest) {
            report.slowest = Some((call.session_id.clone(), delay));
        }
        if delay > DEADLINE_MS {
            report.late.push((call.session_id.clone(), delay));
        }
    }
    report.call_to_delivered_ms.sort_unstable();
    // A run that found problems keeps its database and logs, for a look at what happened.
    report.kept_in = match &report.options.keep_in {
        Some(dir) => Some(dir.clone()),
        None if !report.problems().is_empty() => Some(temp.keep()),
        None => None,
    };
    report
}
