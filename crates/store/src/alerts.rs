//! The alerts' durable outbox: each alert, the conditions active now, and
//! each channel's delivery. An alert is stored with its deliveries in one
//! transaction, so that one made before a crash is still sent after it.

use customs179_alerts::condition::Active;
use customs179_alerts::{Alert, AlertKind, Event, Severity};
use serde::Serialize;

use crate::backend::{Dialect, on_db};
use crate::{Millis, Store, StoreError};

/// One channel's delivery of an alert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AlertDelivery {
    pub channel: String,
    /// "pending", "sent" or "failed" (given up).
    pub state: String,
    pub attempts: i64,
    /// When the next attempt is due, while pending.
    pub next_at: Option<Millis>,
    /// The last failure's code ("HTTP 500", "errcode 310000", "transport"…) and text.
    pub last_code: Option<String>,
    pub last_error: Option<String>,
    pub sent_at: Option<Millis>,
}

/// An alert and how each channel took it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertRecord {
    #[serde(flatten)]
    pub alert: Alert,
    pub deliveries: Vec<AlertDelivery>,
}

/// The next delivery a channel owes, oldest first.
#[derive(Debug, Clone, PartialEq)]
pub struct DueAlert {
    pub alert: Alert,
    pub attempts: i64,
    /// Not before this time (a retry's backoff).
    pub next_at: Millis,
}

type AlertRow = (i64, String, String, String, String, String, i64, String, Millis, Millis, String);

/// The columns of [`AlertRow`], as a literal so that queries stay static text.
macro_rules! alert_columns {
    () => {
        "a.id, a.kind, a.card, a.level, a.severity, a.event, a.count, a.detail, a.since, a.at, a.source"
    };
}

fn alert_of(row: AlertRow) -> Result<Alert, StoreError> {
    let (id, kind, card, level, severity, event, count, detail, since, at, source) = row;
    let unreadable =
        |what: &str, value: &str| StoreError::Corrupt(format!("alert {id} has the {what} {value:?}"));
    Ok(Alert {
        id,
        kind: AlertKind::parse(&kind).ok_or_else(|| unreadable("kind", &kind))?,
        severity: Severity::parse(&severity).ok_or_else(|| unreadable("severity", &severity))?,
        event: Event::parse(&event).ok_or_else(|| unreadable("event", &event))?,
        card,
        level,
        count,
        detail,
        since,
        at,
        source,
    })
}

/// Asked every second by the alerts: through the partial index of failed
/// requests by time, so that only the recent ones are read, however many
/// failed over the years (the planner may otherwise take all failed ones).
pub(crate) fn count_failed_since(d: Dialect) -> String {
    format!(
        "SELECT COUNT(*) FROM {} WHERE state = 'failed' AND updated_at >= $1",
        d.table_via("requests", "requests_failed_at")
    )
}

impl Store {
    /// The conditions active now, as their alerts raised them.
    pub async fn active_alerts(&self) -> Result<Vec<Active>, StoreError> {
        on_db!(self, pool, d => {
            let rows: Vec<AlertRow> = sqlx::query_as(concat!(
                "SELECT ",
                alert_columns!(),
                " FROM alert_conditions c JOIN alerts a ON a.id = c.alert_id ORDER BY a.id"
            ))
            .fetch_all(pool)
            .await?;
            rows.into_iter()
                .map(|row| {
                    let alert = alert_of(row)?;
                    Ok(Active {
                        kind: alert.kind,
                        card: alert.card,
                        level: alert.level,
                        severity: alert.severity,
                        since: alert.since,
                    })
                })
                .collect()
        })
    }

    /// Stores an alert (its `id` is ignored) with a pending delivery for each
    /// of `channels`, and makes its condition active (raised) or not
    /// (cleared), in one transaction. Returns its id.
    pub async fn record_alert(&self, alert: &Alert, channels: &[&str]) -> Result<i64, StoreError> {
        on_db!(self, pool, d => {
            let mut tx = pool.begin().await?;
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO alerts (kind, card, level, severity, event, count, detail, since, at, source)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING id",
            )
            .bind(alert.kind.as_str())
            .bind(&alert.card)
            .bind(&alert.level)
            .bind(alert.severity.as_str())
            .bind(alert.event.as_str())
            .bind(alert.count)
            .bind(&alert.detail)
            .bind(alert.since)
            .bind(alert.at)
            .bind(&alert.source)
            .fetch_one(&mut *tx)
            .await?;
            for channel in channels {
                sqlx::query("INSERT INTO alert_deliveries (alert_id, channel, state, next_at) VALUES ($1, $2, 'pending', $3)")
                    .bind(id)
                    .bind(channel)
                    .bind(alert.at)
                    .execute(&mut *tx)
                    .await?;
            }
            match alert.event {
                Event::Raised => {
                    sqlx::query(
                        "INSERT INTO alert_conditions (kind, card, alert_id) VALUES ($1, $2, $3)
                         ON CONFLICT (kind, card) DO UPDATE SET alert_id = excluded.alert_id",
                    )
                    .bind(alert.kind.as_str())
                    .bind(&alert.card)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                }
                Event::Cleared => {
                    sqlx::query("DELETE FROM alert_conditions WHERE kind = $1 AND card = $2")
                        .bind(alert.kind.as_str())
                        .bind(&alert.card)
                        .execute(&mut *tx)
                        .await?;
                }
            }
            tx.commit().await?;
            Ok(id)
        })
    }

    /// The oldest delivery `channel` still owes, due or not: a channel sends
    /// in order, so that an all-clear never arrives before its alert.
    pub async fn next_alert_delivery(&self, channel: &str) -> Result<Option<DueAlert>, StoreError> {
        on_db!(self, pool, d => {
            let due: Option<(i64, i64, Millis)> = sqlx::query_as(
                "SELECT alert_id, attempts, next_at FROM alert_deliveries
                 WHERE channel = $1 AND state = 'pending' ORDER BY alert_id LIMIT 1",
            )
            .bind(channel)
            .fetch_optional(pool)
            .await?;
            let Some((id, attempts, next_at)) = due else { return Ok(None) };
            // An alert never changes once stored: no transaction is needed between the two reads.
            let row: AlertRow =
                sqlx::query_as(concat!("SELECT ", alert_columns!(), " FROM alerts a WHERE a.id = $1"))
                    .bind(id)
                    .fetch_one(pool)
                    .await?;
            Ok(Some(DueAlert { alert: alert_of(row)?, attempts, next_at }))
        })
    }

    /// `channel` delivered alert `alert_id`.
    pub async fn alert_sent(&self, alert_id: i64, channel: &str, now: Millis) -> Result<(), StoreError> {
        on_db!(self, pool, d => {
            sqlx::query(
                "UPDATE alert_deliveries SET state = 'sent', attempts = attempts + 1, sent_at = $1, next_at = $2
                 WHERE alert_id = $3 AND channel = $4 AND state = 'pending'",
            )
            .bind(now)
            .bind(now)
            .bind(alert_id)
            .bind(channel)
            .execute(pool)
            .await?;
            Ok(())
        })
    }

    /// A delivery failed with `code` and `error`: tried again at `retry_at`,
    /// or, when None, given up.
    pub async fn alert_not_sent(
        &self,
        alert_id: i64,
        channel: &str,
        code: &str,
        error: &str,
        retry_at: Option<Millis>,
    ) -> Result<(), StoreError> {
        on_db!(self, pool, d => {
            sqlx::query(
                "UPDATE alert_deliveries
             SET attempts = attempts + 1, last_code = $1, last_error = $2,
                 state = CASE WHEN $3 IS NULL THEN 'failed' ELSE 'pending' END, next_at = COALESCE($4, next_at)
             WHERE alert_id = $5 AND channel = $6 AND state = 'pending'",
            )
            .bind(code)
            .bind(error)
            .bind(retry_at)
            .bind(retry_at)
            .bind(alert_id)
            .bind(channel)
            .execute(pool)
            .await?;
            Ok(())
        })
    }

    /// The times `channel` sent since `since`, oldest first: its rate limit.
    pub async fn alert_sends_since(&self, channel: &str, since: Millis) -> Result<Vec<Millis>, StoreError> {
        on_db!(self, pool, d => {
            Ok(sqlx::query_scalar(
                "SELECT sent_at FROM alert_deliveries WHERE channel = $1 AND sent_at IS NOT NULL AND sent_at >= $2
                 ORDER BY sent_at",
            )
            .bind(channel)
            .bind(since)
            .fetch_all(pool)
            .await?)
        })
    }

    /// The newest `limit` alerts, newest first, each with its deliveries.
    pub async fn recent_alerts(&self, limit: i64) -> Result<Vec<AlertRecord>, StoreError> {
        on_db!(self, pool, d => {
            let rows: Vec<AlertRow> =
                sqlx::query_as(concat!("SELECT ", alert_columns!(), " FROM alerts a ORDER BY a.id DESC LIMIT $1"))
                    .bind(limit)
                    .fetch_all(pool)
                    .await?;
            let oldest = rows.last().map_or(i64::MAX, |row| row.0);
            type DeliveryRow = (i64, String, String, i64, Millis, Option<String>, Option<String>, Option<Millis>);
            let deliveries: Vec<DeliveryRow> = sqlx::query_as(
                "SELECT alert_id, channel, state, attempts, next_at, last_code, last_error, sent_at
                 FROM alert_deliveries WHERE alert_id >= $1 ORDER BY alert_id, channel",
            )
            .bind(oldest)
            .fetch_all(pool)
            .await?;
            rows.into_iter()
                .map(|row| {
                    let alert = alert_of(row)?;
                    let deliveries = deliveries
                        .iter()
                        .filter(|d| d.0 == alert.id)
                        .map(|(_, channel, state, attempts, next_at, last_code, last_error, sent_at)| {
                            AlertDelivery {
                                channel: channel.clone(),
                                next_at: (state == "pending").then_some(*next_at),
                                state: state.clone(),
                                attempts: *attempts,
                                last_code: last_code.clone(),
                                last_error: last_error.clone(),
                                sent_at: *sent_at,
                            }
                        })
                        .collect();
                    Ok(AlertRecord { alert, deliveries })
                })
                .collect()
        })
    }

    /// Requests that failed at or after `since`.
    pub async fn count_failed_since(&self, since: Millis) -> Result<i64, StoreError> {
        on_db!(self, pool, d => {
            Ok(sqlx::query_scalar(sqlx::AssertSqlSafe(count_failed_since(d))).bind(since).fetch_one(pool).await?)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::on_both;

    fn alert(kind: AlertKind, event: Event, at: Millis) -> Alert {
        Alert {
            id: 0,
            kind,
            severity: Severity::Critical,
            event,
            card: String::new(),
            level: String::new(),
            count: 2,
            detail: "the card refused".into(),
            since: at - 10,
            at,
            source: "E1".into(),
        }
    }

    on_both! {
    async fn an_alert_is_kept_with_its_deliveries_and_its_condition(f) {
        let store = f.store.clone();
        let raised = store
            .record_alert(&alert(AlertKind::SigningPaused, Event::Raised, 100), &["a", "b"])
            .await
            .unwrap();
        let active = store.active_alerts().await.unwrap();
        assert_eq!(
            active,
            [Active {
                kind: AlertKind::SigningPaused,
                card: String::new(),
                level: String::new(),
                severity: Severity::Critical,
                since: 90
            }]
        );

        // Reopened (a restart), it is all still there.
        store.close().await;
        let store = f.reopen().await;
        assert_eq!(store.active_alerts().await.unwrap().len(), 1);
        let due = store.next_alert_delivery("a").await.unwrap().unwrap();
        assert_eq!((due.alert.id, due.attempts, due.next_at), (raised, 0, 100));
        assert_eq!(due.alert.detail, "the card refused");

        let cleared =
            store.record_alert(&alert(AlertKind::SigningPaused, Event::Cleared, 200), &["a"]).await.unwrap();
        assert_eq!(store.active_alerts().await.unwrap(), []);
        // In order: the raise stays first until it is sent.
        store.alert_not_sent(raised, "a", "HTTP 500", "the channel answered 500", Some(5_000)).await.unwrap();
        let due = store.next_alert_delivery("a").await.unwrap().unwrap();
        assert_eq!((due.alert.id, due.attempts, due.next_at), (raised, 1, 5_000));
        store.alert_sent(raised, "a", 5_001).await.unwrap();
        assert_eq!(store.next_alert_delivery("a").await.unwrap().unwrap().alert.id, cleared);
        store.alert_not_sent(cleared, "a", "transport", "refused", None).await.unwrap();
        assert_eq!(store.next_alert_delivery("a").await.unwrap(), None, "given up");
        assert_eq!(store.alert_sends_since("a", 0).await.unwrap(), [5_001]);
        assert!(store.alert_sends_since("a", 5_002).await.unwrap().is_empty());

        let recent = store.recent_alerts(10).await.unwrap();
        assert_eq!(recent.iter().map(|r| r.alert.id).collect::<Vec<_>>(), [cleared, raised]);
        let states = |r: &AlertRecord| -> Vec<(String, String, i64)> {
            r.deliveries.iter().map(|d| (d.channel.clone(), d.state.clone(), d.attempts)).collect()
        };
        assert_eq!(states(&recent[0]), [("a".into(), "failed".into(), 1)]);
        assert_eq!(states(&recent[1]), [("a".into(), "sent".into(), 2), ("b".into(), "pending".into(), 0)]);
        assert_eq!(recent[1].deliveries[0].last_code.as_deref(), Some("HTTP 500"));
        assert_eq!(recent[1].deliveries[1].next_at, Some(100));
        assert_eq!(store.recent_alerts(1).await.unwrap().len(), 1);
    }
    }

    on_both! {
    async fn a_level_change_replaces_the_active_condition(f) {
        let store = f.store.clone();
        let mut first = alert(AlertKind::Certificate, Event::Raised, 100);
        first.level = "30".into();
        store.record_alert(&first, &[]).await.unwrap();
        let mut second = alert(AlertKind::Certificate, Event::Raised, 200);
        second.level = "7".into();
        store.record_alert(&second, &[]).await.unwrap();
        let active = store.active_alerts().await.unwrap();
        assert_eq!(active.len(), 1);
        assert_eq!(active[0].level, "7");
    }
    }
}
