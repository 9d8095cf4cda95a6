//! This instance among the others on the database (see the store's
//! `instances` module): every second it beats, sets its clock to the
//! database's (publishing what it saw of customs with the beat), declares
//! dead the instances that stopped beating (releasing what they held), adopts
//! the bulk replays no live instance works, and publishes what it sees of the
//! cards it drives, for the status of every instance.
//!
//! An instance that finds itself declared dead (it could not beat for
//! [`INSTANCE_TTL`]: a stall, a cut network) stops: its claims and cards may
//! be another's by then. The process exits non-zero, to be restarted.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use customs179_store::{DeadInstance, INSTANCE_TTL, InstanceInfo, Millis, StoreError};

use super::Shutdown;
use crate::context::{ApiContext, local_ms, now_ms, set_clock_offset};

/// How often the instance beats.
pub(crate) const BEAT: Duration = Duration::from_secs(1);

/// How long before its heartbeat is [`INSTANCE_TTL`] old an instance stops
/// acting on what it holds: a card it drives may be taken over after that.
const MARGIN_MS: Millis = 2_000;

pub(crate) struct Instance {
    pub id: String,
    pub name: String,
    /// When its heartbeat was last stored (by [`now_ms`]).
    last_beat: AtomicI64,
}

impl Instance {
    /// A new instance, named after this host and process.
    pub fn new() -> Instance {
        let id = uuid::Uuid::new_v4().to_string();
        if let Ok(mut ours) = OURS.lock() {
            ours.push(id.clone());
        }
        Instance { id, name: format!("{}:{}", host_name(), std::process::id()), last_beat: AtomicI64::new(0) }
    }

    /// Declares dead the instances of earlier processes on this host that
    /// are gone (a restart after a crash), so that their claims and cards
    /// are taken up at once rather than after their heartbeat's TTL. An
    /// instance's name is `host:pid`: one of this host whose process does
    /// not run any more (or whose pid is this one's, not made by it) is gone. Where
    /// that cannot be told (not Linux), the TTL decides. A store that is
    /// this process's alone (SQLite) released all that at its open.
    pub async fn retire_predecessors(
        &self,
        store: &customs179_store::Store,
    ) -> Result<Vec<DeadInstance>, StoreError> {
        if store.is_exclusive() {
            return Ok(Vec::new());
        }
        let now = now_ms();
        let host = self.name.rsplit_once(':').map_or(self.name.as_str(), |(host, _)| host);
        let mut retired = Vec::new();
        for earlier in store.instances(now, 0).await? {
            let pid = earlier.name.strip_prefix(host).and_then(|rest| rest.strip_prefix(':'));
            let pid = pid.and_then(|pid| pid.parse::<u32>().ok());
            let gone = pid.is_some_and(|pid| pid == std::process::id() || !process_runs(pid));
            let ours = OURS.lock().is_ok_and(|ours| ours.contains(&earlier.id));
            if !ours && earlier.stopped_at.is_none() && gone {
                let reason = format!("its process was gone at the start of {} on the same host", self.name);
                retired.extend(store.retire_instance(&earlier.id, &reason, now).await?);
            }
        }
        Ok(retired)
    }

    pub fn info(&self, intake: &str, admin: &str) -> InstanceInfo {
        InstanceInfo {
            id: self.id.clone(),
            name: self.name.clone(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            intake: intake.to_owned(),
            admin: admin.to_owned(),
        }
    }

    pub fn beaten(&self, at: Millis) {
        self.last_beat.store(at, Ordering::Relaxed);
    }

    /// Whether this instance may still act on what it holds: its last
    /// heartbeat is recent enough that no other instance can have declared
    /// it dead (and taken over its cards).
    pub fn current(&self, now: Millis) -> bool {
        now - self.last_beat.load(Ordering::Relaxed) < INSTANCE_TTL - MARGIN_MS
    }
}

/// The instances this process made: with this process's pid, but not gone (tests run several
/// services in one process).
static OURS: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// Whether process `pid` runs on this host; true when that cannot be told.
fn process_runs(pid: u32) -> bool {
    if cfg!(target_os = "linux") { std::path::Path::new(&format!("/proc/{pid}")).exists() } else { true }
}

/// The host's name, as well as it can be told.
fn host_name() -> String {
    let from_file = || std::fs::read_to_string("/etc/hostname").ok();
    ["HOSTNAME", "COMPUTERNAME"]
        .iter()
        .find_map(|var| std::env::var(var).ok())
        .or_else(from_file)
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// Beats until the stop; returns early when this instance was declared dead.
pub(crate) async fn run(ctx: ApiContext, mut shutdown: Shutdown) {
    let me = &ctx.instance;
    loop {
        ctx.health.beat("instance");
        match ctx.store.clock_offset(local_ms).await {
            Ok(offset) => set_clock_offset(offset),
            Err(e) => tracing::warn!(error = %e, "instance: cannot read the database's clock"),
        }
        let now = now_ms();
        let customs = serde_json::to_string(&ctx.live.customs_shared()).unwrap_or_default();
        match ctx.store.instance_heartbeat(&me.id, &customs, now).await {
            Ok(true) => me.beaten(now),
            Ok(false) => {
                tracing::error!(
                    instance = me.name,
                    "INSTANCE DECLARED DEAD by the others (no heartbeat for {} s): its claims and cards may be \
                     theirs now. Stopping",
                    INSTANCE_TTL / 1_000
                );
                return;
            }
            Err(e) => tracing::warn!(error = %e, "instance: cannot store the heartbeat"),
        }
        match ctx.store.retire_dead_instances(now).await {
            Ok(dead) => {
                for dead in dead {
                    tracing::warn!(
                        instance = dead.name,
                        released = dead.released,
                        "instance: another instance stopped beating; its claims were released"
                    );
                    for mark in &dead.marks {
                        tracing::error!(reason = mark.pause_reason(), "SIGNING PAUSED ON A CARD");
                    }
                    if dead.released > 0 {
                        ctx.sign.notify_one();
                        ctx.upload.notify_one();
                        ctx.prepare.sweep();
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "instance: cannot look for dead instances"),
        }
        crate::http::replays::adopt_orphans(&ctx).await;
        for card in ctx.live.cards().into_iter().filter(|card| card.driven_here) {
            let live = serde_json::to_string(&card).unwrap_or_default();
            match ctx.store.publish_card(&card.name, &me.id, &live, now).await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::warn!(card = card.name, "instance: another instance drives the card now");
                    ctx.live.card_driven(&card.name, false);
                }
                Err(e) => tracing::warn!(error = %e, "instance: cannot publish the card's state"),
            }
        }
        if shutdown.sleep(BEAT).await {
            return;
        }
    }
}

/// Singleton work: what one instance at a time does.
pub(crate) mod singleton {
    /// The preparer's safety-net sweep of every waiting request, and its
    /// giving up on those whose data never came.
    pub(crate) const SWEEP: &str = "preparer sweep";
    /// The alerts: looking at the conditions, and sending to the channels.
    pub(crate) const ALERTS: &str = "alerts";
}

/// Whether this instance does the singleton work `name` now (taking it when
/// no live instance does). A database error answers no: the work waits.
pub(crate) async fn holds(ctx: &ApiContext, name: &str) -> bool {
    let now = now_ms();
    if !ctx.instance.current(now) {
        return false;
    }
    match ctx.store.hold_singleton(name, &ctx.instance.id, now).await {
        Ok(held) => held,
        Err(e) => {
            tracing::warn!(error = %e, work = name, "instance: cannot ask for singleton work");
            false
        }
    }
}
