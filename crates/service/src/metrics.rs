//! The service's own measurements, rendered in the Prometheus text format.
//!
//! Kept per service instance (not in a process-global registry) so that
//! several services in one process, as in the tests, do not mix their counts.
//! Queue depths and pauses are read from the store at scrape time.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds, in seconds, of the latency histograms' buckets.
const FAST_BUCKETS: [f64; 10] = [0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];
const SLOW_BUCKETS: [f64; 10] = [0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 3600.0];

/// A cumulative histogram with fixed buckets.
struct Histogram {
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    count: AtomicU64,
    /// The sum in microseconds, kept as an integer so it can be atomic.
    sum_micros: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }

    fn observe(&self, value: Duration) {
        let secs = value.as_secs_f64();
        for (bound, count) in self.bounds.iter().zip(&self.counts) {
            if secs <= *bound {
                count.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(u64::try_from(value.as_micros()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (bound, count) in self.bounds.iter().zip(&self.counts) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {}", count.load(Ordering::Relaxed));
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum {}", self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6);
        let _ = writeln!(out, "{name}_count {count}");
    }
}

/// Counters with one label, created on first use.
#[derive(Default)]
struct LabelledCounter(Mutex<BTreeMap<String, u64>>);

impl LabelledCounter {
    fn add(&self, label: &str) {
        if let Ok(mut counts) = self.0.lock() {
            *counts.entry(label.to_owned()).or_default() += 1;
        }
    }

    fn render(&self, out: &mut String, name: &str, label: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        if let Ok(counts) = self.0.lock() {
            for (value, count) in counts.iter() {
                let _ = writeln!(out, "{name}{{{label}=\"{}\"}} {count}", escape(value));
            }
        }
    }
}

fn escape(label: &str) -> String {
    label.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

pub(crate) struct Metrics {
    intake_requests: LabelledCounter,
    intake_seconds: Histogram,
    /// Each group commit of the intake writer: where an intake stall would show.
    intake_commit_seconds: Histogram,
    sign_seconds: Histogram,
    /// Signatures made and verified, by card.
    signatures: LabelledCounter,
    /// Failures at a card (unreachable, refused, unusable signatures), by card.
    card_errors: LabelledCounter,
    delivery_seconds: Histogram,
    customs_answers: LabelledCounter,
    late: AtomicU64,
    anomalies: AtomicU64,
    /// `GET /api/events` streams open now.
    events_streams: AtomicU64,
    /// Alerts made, by kind and event ("late raised").
    alerts: LabelledCounter,
    /// Delivery attempts of alerts, by outcome: a failing channel is seen
    /// here even while nobody reads the console.
    alert_deliveries: LabelledCounter,
}

/// One open `GET /api/events` stream, counted in `customs179_events_streams`
/// until dropped.
pub(crate) struct EventsStream(std::sync::Arc<Metrics>);

impl Drop for EventsStream {
    fn drop(&mut self) {
        self.0.events_streams.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics {
            intake_requests: LabelledCounter::default(),
            intake_seconds: Histogram::new(&FAST_BUCKETS),
            intake_commit_seconds: Histogram::new(&FAST_BUCKETS),
            sign_seconds: Histogram::new(&FAST_BUCKETS),
            signatures: LabelledCounter::default(),
            card_errors: LabelledCounter::default(),
            delivery_seconds: Histogram::new(&SLOW_BUCKETS),
            customs_answers: LabelledCounter::default(),
            late: AtomicU64::new(0),
            anomalies: AtomicU64::new(0),
            events_streams: AtomicU64::new(0),
            alerts: LabelledCounter::default(),
            alert_deliveries: LabelledCounter::default(),
        }
    }
}

impl Metrics {
    /// One customs call answered: `outcome` is stored, malformed, refused or unavailable.
    pub fn intake(&self, outcome: &str, took: Duration) {
        self.intake_requests.add(outcome);
        self.intake_seconds.observe(took);
    }

    /// One group commit of customs calls by the intake writer, committed or not.
    pub fn intake_commit(&self, took: Duration) {
        self.intake_commit_seconds.observe(took);
    }

    pub fn signed(&self, card: &str, took: Duration) {
        self.sign_seconds.observe(took);
        self.signatures.add(card);
    }

    pub fn card_error(&self, card: &str) {
        self.card_errors.add(card);
    }

    /// Customs' answer code to an upload, or "transport" when there was none.
    pub fn customs_answer(&self, code: &str) {
        self.customs_answers.add(code);
    }

    /// A request delivered, `since_call` after customs asked.
    pub fn delivered(&self, since_call: Duration, late: bool, anomaly: bool) {
        self.delivery_seconds.observe(since_call);
        if late {
            self.late.fetch_add(1, Ordering::Relaxed);
        }
        if anomaly {
            self.anomalies.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// An alert made: `kind event`, such as `late raised`.
    pub fn alert(&self, kind: &str, event: &str) {
        self.alerts.add(&format!("{kind} {event}"));
    }

    /// One attempt at delivering an alert: `sent`, `failed` (to be retried) or `given_up`.
    pub fn alert_delivery(&self, outcome: &str) {
        self.alert_deliveries.add(outcome);
    }

    /// An events stream opened; it is counted until the guard is dropped.
    pub fn events_stream(self: &std::sync::Arc<Metrics>) -> EventsStream {
        self.events_streams.fetch_add(1, Ordering::Relaxed);
        EventsStream(self.clone())
    }

    /// Everything, with the queue depths and pauses read from the store.
    /// `cards` are (card, stage, paused) of every configured card.
    pub fn render(
        &self,
        depths: &[(&str, i64)],
        paused: &[(&str, bool)],
        cards: &[(&str, &str, bool)],
    ) -> String {
        let mut out = String::with_capacity(4096);
        self.intake_requests.render(
            &mut out,
            "customs179_intake_requests_total",
            "outcome",
            "Customs calls answered, by outcome.",
        );
        self.intake_seconds.render(
            &mut out,
            "customs179_intake_seconds",
            "Time to answer customs' call (stored first).",
        );
        self.intake_commit_seconds.render(
            &mut out,
            "customs179_intake_commit_seconds",
            "Time of each group commit of customs' calls (its count is the number of commits).",
        );
        let _ = writeln!(
            out,
            "# HELP customs179_queue_requests Requests in each state.\n# TYPE customs179_queue_requests gauge"
        );
        for (state, count) in depths {
            let _ = writeln!(out, "customs179_queue_requests{{state=\"{state}\"}} {count}");
        }
        self.delivery_seconds.render(
            &mut out,
            "customs179_delivery_seconds",
            "Time from customs' call to delivery.",
        );
        let _ = writeln!(
            out,
            "# HELP customs179_late_total Requests delivered after their deadline.\n# TYPE customs179_late_total counter\ncustoms179_late_total {}",
            self.late.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP customs179_anomalies_total 20006 answers to a first attempt.\n# TYPE customs179_anomalies_total counter\ncustoms179_anomalies_total {}",
            self.anomalies.load(Ordering::Relaxed)
        );
        self.sign_seconds.render(
            &mut out,
            "customs179_sign_seconds",
            "Time the card took to sign, verification included.",
        );
        self.signatures.render(
            &mut out,
            "customs179_signatures_total",
            "card",
            "Signatures made and verified, by card.",
        );
        self.card_errors.render(
            &mut out,
            "customs179_card_errors_total",
            "card",
            "Failures at a card (unreachable, refused, unusable signatures), by card.",
        );
        self.customs_answers.render(
            &mut out,
            "customs179_customs_answers_total",
            "code",
            "Customs' answers to uploads, by code.",
        );
        let _ = writeln!(
            out,
            "# HELP customs179_paused Whether a stage is paused (1) until an operator resumes it.\n# TYPE customs179_paused gauge"
        );
        for (stage, is_paused) in paused {
            let _ = writeln!(out, "customs179_paused{{stage=\"{stage}\"}} {}", u8::from(*is_paused));
        }
        let _ = writeln!(
            out,
            "# HELP customs179_card_paused Whether a card's stage is paused (1) on that card only.\n# TYPE customs179_card_paused gauge"
        );
        for (card, stage, is_paused) in cards {
            let _ = writeln!(
                out,
                "customs179_card_paused{{card=\"{}\",stage=\"{stage}\"}} {}",
                escape(card),
                u8::from(*is_paused)
            );
        }
        self.alerts.render(&mut out, "customs179_alerts_total", "alert", "Alerts made, by kind and event.");
        self.alert_deliveries.render(
            &mut out,
            "customs179_alert_deliveries_total",
            "outcome",
            "Attempts at delivering alerts to their channels, by outcome (sent, failed, given_up).",
        );
        let _ = writeln!(
            out,
            "# HELP customs179_events_streams GET /api/events streams open (the console keeps one per browser).\n# TYPE customs179_events_streams gauge\ncustoms179_events_streams {}",
            self.events_streams.load(Ordering::Relaxed)
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let metrics = Metrics::default();
        metrics.intake("stored", Duration::from_micros(1_500));
        metrics.intake("stored", Duration::from_millis(30));
        metrics.intake("malformed", Duration::from_micros(300));
        metrics.intake_commit(Duration::from_millis(3));
        metrics.customs_answer("10000");
        metrics.customs_answer("transport");
        metrics.delivered(Duration::from_secs(130), true, false);
        metrics.signed("card-a", Duration::from_millis(200));
        metrics.signed("card-a", Duration::from_millis(200));
        metrics.card_error("card-b");
        let cards = [("card-a", "signing", false), ("card-b", "uploading", true)];
        let text = metrics.render(
            &[("waiting", 2), ("failed", 0)],
            &[("signing", true), ("uploading", false)],
            &cards,
        );
        for line in [
            "customs179_signatures_total{card=\"card-a\"} 2",
            "customs179_card_errors_total{card=\"card-b\"} 1",
            "customs179_card_paused{card=\"card-a\",stage=\"signing\"} 0",
            "customs179_card_paused{card=\"card-b\",stage=\"uploading\"} 1",
            "customs179_intake_requests_total{outcome=\"stored\"} 2",
            "customs179_intake_requests_total{outcome=\"malformed\"} 1",
            "customs179_intake_seconds_bucket{le=\"0.001\"} 1",
            "customs179_intake_seconds_bucket{le=\"0.002\"} 2",
            "customs179_intake_seconds_bucket{le=\"0.05\"} 3",
            "customs179_intake_seconds_bucket{le=\"+Inf\"} 3",
            "customs179_intake_seconds_count 3",
            "customs179_intake_commit_seconds_bucket{le=\"0.002\"} 0",
            "customs179_intake_commit_seconds_bucket{le=\"0.005\"} 1",
            "customs179_intake_commit_seconds_count 1",
            "customs179_queue_requests{state=\"waiting\"} 2",
            "customs179_delivery_seconds_bucket{le=\"120\"} 0",
            "customs179_delivery_seconds_bucket{le=\"300\"} 1",
            "customs179_late_total 1",
            "customs179_customs_answers_total{code=\"10000\"} 1",
            "customs179_customs_answers_total{code=\"transport\"} 1",
            "customs179_paused{stage=\"signing\"} 1",
            "customs179_paused{stage=\"uploading\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
        assert!(text.contains("customs179_intake_seconds_sum 0.0318"), "{text}");
    }

    #[test]
    fn open_event_streams_are_counted_until_dropped() {
        let metrics = std::sync::Arc::new(Metrics::default());
        let gauge = |m: &Metrics| {
            let text = m.render(&[], &[], &[]);
            text.lines().find(|l| l.starts_with("customs179_events_streams ")).map(str::to_owned)
        };
        assert_eq!(gauge(&metrics).as_deref(), Some("customs179_events_streams 0"));
        let one = metrics.events_stream();
        let two = metrics.events_stream();
        assert_eq!(gauge(&metrics).as_deref(), Some("customs179_events_streams 2"));
        drop(one);
        assert_eq!(gauge(&metrics).as_deref(), Some("customs179_events_streams 1"));
        drop(two);
        assert_eq!(gauge(&metrics).as_deref(), Some("customs179_events_streams 0"));
    }
}
