//! Heartbeats of the service's tasks, so that a supervisor can trust
//! `/healthz`: every task beats while it runs (a paused one too); a task that
//! stops beating is stale, one that ends before the stop is dead, and a dead
//! task makes the process exit non-zero so that systemd restarts it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::watch;

/// Silence allowed to any task on top of the longest single step it takes.
pub(crate) const SLACK: Duration = Duration::from_secs(30);

struct Task {
    last_beat: Instant,
    max_silence: Duration,
    ended: Option<String>,
}

/// One task as `/healthz` shows it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct TaskHealth {
    pub name: &'static str,
    /// "ok", "stale" (no beat for longer than allowed) or "dead".
    pub state: &'static str,
    pub since_last_beat_ms: u128,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ended: Option<String>,
}

pub(crate) struct Health {
    tasks: Mutex<BTreeMap<&'static str, Task>>,
    stopping: AtomicBool,
    failed: watch::Sender<Option<String>>,
}

impl Default for Health {
    fn default() -> Health {
        Health { tasks: Mutex::default(), stopping: AtomicBool::new(false), failed: watch::Sender::new(None) }
    }
}

impl Health {
    /// Starts watching a task that beats at least every `max_silence`.
    pub fn register(&self, name: &'static str, max_silence: Duration) {
        let task = Task { last_beat: Instant::now(), max_silence, ended: None };
        self.lock().insert(name, task);
    }

    pub fn beat(&self, name: &'static str) {
        if let Some(task) = self.lock().get_mut(name) {
            task.last_beat = Instant::now();
        }
    }

    /// A task ended. Before the stop that is a failure of the whole service.
    pub fn ended(&self, name: &'static str, how: String) {
        if self.stopping.load(Ordering::SeqCst) {
            return;
        }
        tracing::error!(task = name, how, "a task of the service ended: the service stops, to be restarted");
        if let Some(task) = self.lock().get_mut(name) {
            task.ended = Some(how.clone());
        }
        self.failed.send_replace(Some(format!("the task {name} ended: {how}")));
    }

    /// From now on tasks end because they were told to.
    pub fn stopping(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    /// Resolves with the reason once a task has died.
    pub fn failure(&self) -> watch::Receiver<Option<String>> {
        self.failed.subscribe()
    }

    pub fn report(&self) -> Vec<TaskHealth> {
        self.lock()
            .iter()
            .map(|(&name, task)| {
                let silence = task.last_beat.elapsed();
                let state = match (&task.ended, silence > task.max_silence) {
                    (Some(_), _) => "dead",
                    (None, true) => "stale",
                    (None, false) => "ok",
                };
                TaskHealth { name, state, since_last_beat_ms: silence.as_millis(), ended: task.ended.clone() }
            })
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<&'static str, Task>> {
        self.tasks.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_are_ok_stale_or_dead() {
        let health = Health::default();
        health.register("fast", Duration::from_millis(20));
        health.register("slow", Duration::from_secs(60));
        health.register("gone", Duration::from_secs(60));
        let failure = health.failure();
        assert!(failure.borrow().is_none());
        std::thread::sleep(Duration::from_millis(40));
        health.beat("slow");
        health.ended("gone", "it returned".into());
        let states: Vec<(&str, &str)> = health.report().iter().map(|t| (t.name, t.state)).collect();
        assert_eq!(states, [("fast", "stale"), ("gone", "dead"), ("slow", "ok")]);
        assert_eq!(failure.borrow().as_deref(), Some("the task gone ended: it returned"));
        health.beat("fast");
        assert_eq!(health.report()[0].state, "ok");
    }

    #[test]
    fn tasks_ending_at_the_stop_are_no_failure() {
        let health = Health::default();
        health.register("worker", Duration::from_secs(60));
        health.stopping();
        health.ended("worker", "told to stop".into());
        assert!(health.failure().borrow().is_none());
        assert_eq!(health.report()[0].state, "ok");
    }
}
