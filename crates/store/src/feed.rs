//! Live views of the requests that changed: those this process's commits
//! changed and, on PostgreSQL, those every other instance's did, heard
//! through the notifications the database sends while some instance
//! listens (PostgreSQL's migration 0002). What may have been missed (a
//! watcher fell behind, the relay of the others' changes started, lost its
//! connection or failed) is told as a gap: the watcher starts again from a
//! snapshot.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use sqlx::postgres::{PgListener, PgPool};
use tokio::sync::broadcast;

use crate::backend::Pool;
use crate::{Store, StoreError};

/// The sessionIDs of the requests one commit changed (in any way: state,
/// claim, attempts, error).
pub type Changed = Arc<[String]>;

/// Commits a live view may fall behind by before it must start again from a
/// fresh snapshot.
const FEED_CAPACITY: usize = 1_024;

/// How often the relay looks whether anybody still watches.
const WATCHERS_LOOKED_AT: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub(crate) struct Feed {
    sender: broadcast::Sender<Changed>,
    /// Whether the relay of the other instances' changes runs.
    relaying: Arc<AtomicBool>,
    /// Moved whenever the relay may have missed changes.
    gaps: Arc<AtomicU64>,
    /// Whether the relay hears the database's notices now.
    listening: Arc<tokio::sync::watch::Sender<bool>>,
}

impl Default for Feed {
    fn default() -> Feed {
        let (sender, _) = broadcast::channel(FEED_CAPACITY);
        let (listening, _) = tokio::sync::watch::channel(false);
        Feed { sender, relaying: Arc::default(), gaps: Arc::default(), listening: Arc::new(listening) }
    }
}

/// One watcher of the requests that changed.
pub struct Watch {
    receiver: broadcast::Receiver<Changed>,
    gaps: Arc<AtomicU64>,
    gaps_seen: u64,
    listening: tokio::sync::watch::Receiver<bool>,
}

/// How long [`Watch::ready`] waits for the relay.
const READY_WITHIN: Duration = Duration::from_secs(2);

impl Watch {
    /// Waits (a little) until every change from now on will be told: on
    /// PostgreSQL, until the relay of the other instances' changes hears the
    /// database. A snapshot read after it misses nothing the watcher is not
    /// told of; if the relay is not ready in time, the first gather says
    /// some may be missing.
    pub async fn ready(&mut self) {
        let ready = tokio::time::timeout(READY_WITHIN, self.listening.wait_for(|listening| *listening)).await;
        if matches!(ready, Ok(Ok(_))) {
            self.gaps_seen = self.gaps.load(Ordering::SeqCst);
        }
    }

    /// The sessionIDs changed since the last call, each once, and whether
    /// some may be missing: the watcher fell behind, or other instances'
    /// changes could not all be heard.
    pub fn gather(&mut self) -> (Vec<String>, bool) {
        let mut changed = BTreeSet::new();
        let gaps = self.gaps.load(Ordering::SeqCst);
        let mut missing = gaps != self.gaps_seen;
        self.gaps_seen = gaps;
        loop {
            match self.receiver.try_recv() {
                Ok(ids) => changed.extend(ids.iter().cloned()),
                Err(broadcast::error::TryRecvError::Lagged(_)) => missing = true,
                Err(broadcast::error::TryRecvError::Empty | broadcast::error::TryRecvError::Closed) => break,
            }
        }
        (changed.into_iter().collect(), missing)
    }
}

impl Store {
    /// The requests changed from now on: by this process's commits, and on
    /// PostgreSQL by every instance's. Changes made by commands (which work
    /// on the database directly) move [`Store::changes`] instead.
    pub fn watch_requests(&self) -> Watch {
        let receiver = self.feed.sender.subscribe();
        let gaps_seen = self.feed.gaps.load(Ordering::SeqCst);
        let mut listening = self.feed.listening.subscribe();
        match &self.pool {
            Pool::Postgres(pool) => self.relay_others(pool),
            // This process makes every change: nothing to wait for.
            Pool::Sqlite(_) => listening = tokio::sync::watch::channel(true).1,
        }
        Watch { receiver, gaps: self.feed.gaps.clone(), gaps_seen, listening }
    }

    /// Tells the watchers that these requests changed (after the commit).
    pub(crate) fn changed(&self, session_ids: impl FnOnce() -> Vec<String>) {
        // Nobody watching (the usual case): nothing to build.
        if self.feed.sender.receiver_count() > 0 {
            let _ = self.feed.sender.send(session_ids().into());
        }
    }

    /// Starts the relay of the other instances' changes, unless it runs.
    fn relay_others(&self, pool: &PgPool) {
        if self.feed.relaying.swap(true, Ordering::SeqCst) {
            return;
        }
        let (store, pool) = (self.clone(), pool.clone());
        tokio::spawn(async move {
            let me = store
                .instance
                .as_deref()
                .map_or_else(|| format!("process {}", std::process::id()), str::to_owned);
            if let Err(e) = store.relay(&pool, &me).await {
                tracing::warn!(error = %e, "cannot hear the other instances' changes; live views start again from a snapshot");
            }
            if let Err(e) =
                sqlx::query("DELETE FROM change_listeners WHERE instance = $1").bind(&me).execute(&pool).await
            {
                tracing::warn!(error = %e, "cannot stop the database's notices of changes");
            }
            store.feed.listening.send_replace(false);
            store.feed.gaps.fetch_add(1, Ordering::SeqCst);
            store.feed.relaying.store(false, Ordering::SeqCst);
            // A watcher that came as the relay was ending needs one (a failing database is
            // asked again a second later, not at once).
            tokio::time::sleep(WATCHERS_LOOKED_AT).await;
            if store.feed.sender.receiver_count() > 0 {
                store.relay_others(&pool);
            }
        });
    }

    /// Passes the database's notices of changed requests on to the watchers
    /// until none is left.
    async fn relay(&self, pool: &PgPool, me: &str) -> Result<(), StoreError> {
        let channel: String =
            sqlx::query_scalar("SELECT 'customs179_' || md5(current_schema())").fetch_one(pool).await?;
        let mut listener = PgListener::connect_with(pool).await?;
        listener.listen(&channel).await?;
        sqlx::query(
            "INSERT INTO change_listeners (instance, since)
             VALUES ($1, CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT))
             ON CONFLICT (instance) DO NOTHING",
        )
        .bind(me)
        .execute(pool)
        .await?;
        // What changed before the database sent notices is not known.
        self.feed.gaps.fetch_add(1, Ordering::SeqCst);
        self.feed.listening.send_replace(true);
        // Heard in a task of its own, never cancelled but to stop: a notice half read when
        // a wait was cut short would be lost.
        let feed = self.feed.clone();
        let mut hearing = tokio::spawn(async move {
            loop {
                match listener.try_recv().await {
                    Ok(Some(notice)) => {
                        let ids: Vec<String> = notice.payload().split('\n').map(str::to_owned).collect();
                        let _ = feed.sender.send(ids.into());
                    }
                    // The connection was lost and made again: notices may have been lost.
                    Ok(None) => {
                        feed.gaps.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(e) => return Err::<(), _>(e),
                }
            }
        });
        loop {
            tokio::select! {
                heard = &mut hearing => {
                    return match heard {
                        Ok(result) => result.map_err(StoreError::from),
                        // It panicked: the relay ends, and the watchers are told of a gap.
                        Err(_) => Ok(()),
                    };
                }
                () = tokio::time::sleep(WATCHERS_LOOKED_AT) => {
                    if self.feed.sender.receiver_count() == 0 {
                        hearing.abort();
                        return Ok(());
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_watcher_that_fell_behind_or_missed_a_relay_knows_it() {
        let feed = Feed::default();
        let mut watch = Watch {
            receiver: feed.sender.subscribe(),
            gaps: feed.gaps.clone(),
            gaps_seen: 0,
            listening: feed.listening.subscribe(),
        };
        for n in 0..FEED_CAPACITY + 1 {
            feed.sender.send(vec![format!("S{n}")].into()).unwrap();
        }
        let (changed, missing) = watch.gather();
        assert!(missing, "S0 was lost");
        assert_eq!(changed.len(), FEED_CAPACITY);
        feed.sender.send(vec!["B".to_owned(), "A".to_owned()].into()).unwrap();
        feed.sender.send(vec!["B".to_owned()].into()).unwrap();
        assert_eq!(watch.gather(), (vec!["A".to_owned(), "B".to_owned()], false), "each once");
        feed.gaps.fetch_add(1, Ordering::SeqCst);
        assert_eq!(watch.gather(), (vec![], true), "the relay may have missed some");
        assert_eq!(watch.gather(), (vec![], false));
    }
}
