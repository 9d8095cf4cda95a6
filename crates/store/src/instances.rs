//! The instances of the service on one database, and what each of them
//! holds while it lives: its claims of requests, the cards it drives, the
//! singleton work it does and the bulk replays it works through.
//!
//! An instance registers at start under a fresh id and beats every second
//! ([`Store::instance_heartbeat`]). One that has not beaten for
//! [`INSTANCE_TTL`] is dead: any instance may then declare it so
//! ([`Store::retire_dead_instances`]), which releases its claims (the
//! generation moves on, fencing off whatever it might still write) and
//! turns its "PIN in flight" marks into pauses of their cards. Its cards
//! and singletons go to whichever live instance asks next, its bulk replays
//! to the next that looks ([`Store::adopt_replays`]). An instance
//! declared dead that beats again learns it from its heartbeat, and stops.
//!
//! Times are the instances' own clocks set to the database's (see
//! [`Store::clock_offset`]), so that one instance's clock running ahead
//! cannot make it think the others dead.

use serde::Serialize;

use crate::backend::{for_each_connection, on_db};
use crate::controls::{ControlWrites as _, MARK, PinInFlight};
use crate::queue::RELEASED;
use crate::{Millis, Store, StoreError};

/// How long an instance lives without a heartbeat.
pub const INSTANCE_TTL: Millis = 5_000;

/// How long an instance's row is kept once it stopped (for the status).
const STOPPED_KEPT: Millis = 7 * 24 * 3_600_000;

/// An instance as it registers.
#[derive(Debug, Clone)]
pub struct InstanceInfo {
    /// Fresh at every start.
    pub id: String,
    /// What operators know it by (host and pid, or configured).
    pub name: String,
    pub version: String,
    /// Its listeners' addresses.
    pub intake: String,
    pub admin: String,
}

/// An instance as the status shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InstanceView {
    pub id: String,
    pub name: String,
    pub version: String,
    pub intake: String,
    pub admin: String,
    pub started_at: Millis,
    pub heartbeat_at: Millis,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped_at: Option<Millis>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_reason: Option<String>,
    /// Beating, and not stopped.
    pub alive: bool,
    /// What it saw of customs at its last heartbeat, as it published it.
    #[serde(skip)]
    pub customs: Option<String>,
}

/// An instance found dead, and what it left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadInstance {
    pub name: String,
    /// Its claims of requests, released.
    pub released: u64,
    /// Its "PIN in flight" marks, now pauses of their cards.
    pub marks: Vec<PinInFlight>,
}

/// What asking for a card came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CardLease {
    /// This instance drives the card (it already did, or takes it now); the
    /// marks others left on it are now pauses of its signing.
    Held { paused: Vec<PinInFlight> },
    /// A live instance drives it.
    HeldBy { owner: String },
}

/// A card as the status shows it: who drives it, and what that instance
/// last saw of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardLeaseView {
    pub card: String,
    /// The driving instance's name.
    pub owner: String,
    pub owner_alive: bool,
    pub since: Millis,
    /// JSON, as the owner published it.
    pub live: Option<String>,
    pub live_at: Option<Millis>,
}

/// The condition that instance `i` lives at `$1` (now).
pub(crate) fn alive(i: &str) -> String {
    format!("({i}.stopped_at IS NULL AND {i}.heartbeat_at > $1 - {INSTANCE_TTL})")
}

/// The writes of an instance's end, shared by a clean stop and a death.
trait InstanceWrites {
    /// Releases `id`'s claims and turns its marks into pauses; its cards
    /// and singletons are freed when `free` (a clean stop), else left for
    /// others to take.
    async fn retire(
        &mut self,
        id: &str,
        free: bool,
        now: Millis,
    ) -> Result<(u64, Vec<PinInFlight>), StoreError>;
}

for_each_connection! { impl InstanceWrites {
    async fn retire(&mut self, id: &str, free: bool, now: Millis) -> Result<(u64, Vec<PinInFlight>), StoreError> {
        let released = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE requests SET {RELEASED} WHERE lease_until IS NOT NULL AND lease_owner = $2"
        )))
        .bind(now)
        .bind(id)
        .execute(&mut *self)
        .await?
        .rows_affected();
        let marks: Vec<PinInFlight> =
            sqlx::query_as(sqlx::AssertSqlSafe(format!("DELETE FROM pin_in_flight WHERE instance = $1 RETURNING {MARK}")))
                .bind(id)
                .fetch_all(&mut *self)
                .await?;
        self.pause_for_marks(&marks, |_| true, now).await?;
        sqlx::query("DELETE FROM change_listeners WHERE instance = $1").bind(id).execute(&mut *self).await?;
        // Its bulk replays go on elsewhere: the next instance to look adopts them.
        sqlx::query("UPDATE replays SET worker = NULL WHERE worker = $1 AND finished_at IS NULL")
            .bind(id)
            .execute(&mut *self)
            .await?;
        if free {
            sqlx::query("DELETE FROM card_leases WHERE owner = $1").bind(id).execute(&mut *self).await?;
            sqlx::query("DELETE FROM singletons WHERE owner = $1").bind(id).execute(&mut *self).await?;
        }
        if released > 0 {
            self.bump_changes().await?;
        }
        Ok((released, marks))
    }
}}

impl Store {
    /// This store, making its claims as instance `id`.
    pub fn as_instance(&self, id: &str) -> Store {
        Store { instance: Some(id.into()), ..self.clone() }
    }

    /// How far the database's clock is ahead of this machine's, in ms (0 on
    /// SQLite, whose clock is this machine's): read halfway through a round
    /// trip, so off by half of one at most.
    pub async fn clock_offset(&self, local_now: impl Fn() -> Millis) -> Result<Millis, StoreError> {
        on_db!(self, pool, d => {
            if d == crate::backend::Dialect::Sqlite {
                return Ok(0);
            }
            let mut conn = pool.acquire().await?;
            let before = local_now();
            let db: Millis = sqlx::query_scalar("SELECT CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)")
                .fetch_one(&mut *conn)
                .await?;
            let after = local_now();
            Ok(db - (before + after) / 2)
        })
    }

    /// Registers an instance at its start. On SQLite, where the service
    /// holds the file's lock, every other instance is stopped already:
    /// their rows say so (their claims were released at the open).
    pub async fn register_instance(&self, info: &InstanceInfo, now: Millis) -> Result<(), StoreError> {
        on_db!(self, pool, d => {
            let mut tx = pool.begin().await?;
            if self.is_exclusive() {
                sqlx::query(
                    "UPDATE instances SET stopped_at = $1, stop_reason = 'found stopped at the next start'
                     WHERE stopped_at IS NULL",
                )
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            sqlx::query("DELETE FROM instances WHERE stopped_at < $1").bind(now - STOPPED_KEPT).execute(&mut *tx).await?;
            sqlx::query(
                "INSERT INTO instances (id, name, version, intake, admin, started_at, heartbeat_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $6)",
            )
            .bind(&info.id)
            .bind(&info.name)
            .bind(&info.version)
            .bind(&info.intake)
            .bind(&info.admin)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(())
        })
    }

    /// Beats for instance `id`. False when it was declared dead meanwhile
    /// (or stopped): its claims and cards may be another's now, and it must
    /// stop working. `customs` (JSON, the service's to read) is what it saw
    /// of customs, for the others' status ([`InstanceView::customs`]).
    pub async fn instance_heartbeat(&self, id: &str, customs: &str, now: Millis) -> Result<bool, StoreError> {
        on_db!(self, pool, d => {
            let beat = sqlx::query(
                "UPDATE instances SET heartbeat_at = $1, customs = $3 WHERE id = $2 AND stopped_at IS NULL",
            )
            .bind(now)
            .bind(id)
            .bind(customs)
            .execute(pool)
            .await?;
            Ok(beat.rows_affected() == 1)
        })
    }

    /// Instance `id` stops cleanly: its claims are released, and its cards
    /// and singletons freed for the others at once.
    pub async fn instance_stopped(&self, id: &str, now: Millis) -> Result<(), StoreError> {
        on_db!(self, pool, d => {
            let mut tx = pool.begin_with(d.begin_writing()).await?;
            let stopping = sqlx::query(
                "UPDATE instances SET stopped_at = $1, stop_reason = 'stopped' WHERE id = $2 AND stopped_at IS NULL",
            )
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?;
            if stopping.rows_affected() == 1 {
                tx.retire(id, true, now).await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    /// Declares dead every instance that has not beaten for
    /// [`INSTANCE_TTL`], releasing what it held (see the module's doc).
    /// Any instance may run it, at any time: one transaction, and an
    /// instance is declared dead once.
    pub async fn retire_dead_instances(&self, now: Millis) -> Result<Vec<DeadInstance>, StoreError> {
        // The only process working the queue: whatever else registered is stopped.
        if self.is_exclusive() {
            return Ok(Vec::new());
        }
        self.declare_dead(None, &format!("no heartbeat for {} s", INSTANCE_TTL / 1_000), now).await
    }

    /// Declares instance `id` dead for `reason` (known otherwise than by its
    /// heartbeat: its process is gone), releasing what it held as
    /// [`Store::retire_dead_instances`] does. None when it was stopped already.
    pub async fn retire_instance(
        &self,
        id: &str,
        reason: &str,
        now: Millis,
    ) -> Result<Option<DeadInstance>, StoreError> {
        Ok(self.declare_dead(Some(id), reason, now).await?.pop())
    }

    /// Declares dead, for `reason`, instance `id`, or (None) every instance
    /// that has not beaten for [`INSTANCE_TTL`], unless already stopped.
    async fn declare_dead(
        &self,
        id: Option<&str>,
        reason: &str,
        now: Millis,
    ) -> Result<Vec<DeadInstance>, StoreError> {
        on_db!(self, pool, d => {
            let mut tx = pool.begin_with(d.begin_writing()).await?;
            let dead: Vec<(String, String)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "UPDATE instances SET stopped_at = $1, stop_reason = $2
                 WHERE stopped_at IS NULL AND (id = $3 OR ($3 IS NULL AND heartbeat_at <= $1 - {INSTANCE_TTL}))
                 RETURNING id, name"
            )))
            .bind(now)
            .bind(reason)
            .bind(id)
            .fetch_all(&mut *tx)
            .await?;
            let mut retired = Vec::with_capacity(dead.len());
            for (id, name) in dead {
                let (released, marks) = tx.retire(&id, false, now).await?;
                retired.push(DeadInstance { name, released, marks });
            }
            tx.commit().await?;
            Ok(retired)
        })
    }

    /// The instances running, and those stopped in the last `recent` ms,
    /// the oldest first.
    pub async fn instances(&self, now: Millis, recent: Millis) -> Result<Vec<InstanceView>, StoreError> {
        on_db!(self, pool, d => {
            type Row = (String, String, String, String, String, Millis, Millis, Option<Millis>, Option<String>, bool, Option<String>);
            let rows: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT id, name, version, intake, admin, started_at, heartbeat_at, stopped_at, stop_reason, {}, customs
                 FROM instances i WHERE stopped_at IS NULL OR stopped_at >= $1 - $2 ORDER BY started_at, id",
                alive("i")
            )))
            .bind(now)
            .bind(recent)
            .fetch_all(pool)
            .await?;
            Ok(rows
                .into_iter()
                .map(|(id, name, version, intake, admin, started_at, heartbeat_at, stopped_at, stop_reason, alive, customs)| {
                    InstanceView { id, name, version, intake, admin, started_at, heartbeat_at, stopped_at, stop_reason, alive, customs }
                })
                .collect())
        })
    }

    /// How many instances are alive now.
    pub async fn live_instances(&self, now: Millis) -> Result<i64, StoreError> {
        on_db!(self, pool, d => {
            let sql = format!("SELECT COUNT(*) FROM instances i WHERE {}", alive("i"));
            Ok(sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).bind(now).fetch_one(pool).await?)
        })
    }

    /// Asks for `card` as instance `me`: held when no live instance but
    /// `me` drives it. Taking it over turns the marks others left on it into
    /// a pause of its signing (see [`CardLease::Held`]): the PIN they may
    /// have sent is never sent again before an operator looked.
    pub async fn take_card(&self, card: &str, me: &str, now: Millis) -> Result<CardLease, StoreError> {
        on_db!(self, pool, d => {
            let mut tx = pool.begin_with(d.begin_writing()).await?;
            let created = sqlx::query(
                "INSERT INTO card_leases (card, owner, since) VALUES ($1, $2, $3) ON CONFLICT (card) DO NOTHING",
            )
            .bind(card)
            .bind(me)
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected()
                == 1;
            if !created {
                let owner: String = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                    "SELECT owner FROM card_leases WHERE card = $1{}",
                    d.for_update()
                )))
                .bind(card)
                .fetch_one(&mut *tx)
                .await?;
                if owner == me {
                    return Ok(CardLease::Held { paused: Vec::new() });
                }
                let sql = format!("SELECT name FROM instances i WHERE id = $2 AND {}", alive("i"));
                let live: Option<String> =
                    sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).bind(now).bind(&owner).fetch_optional(&mut *tx).await?;
                if let Some(owner) = live {
                    return Ok(CardLease::HeldBy { owner });
                }
                sqlx::query("UPDATE card_leases SET owner = $1, since = $2, live = NULL, live_at = NULL WHERE card = $3")
                    .bind(me)
                    .bind(now)
                    .bind(card)
                    .execute(&mut *tx)
                    .await?;
            }
            let paused: Vec<PinInFlight> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "DELETE FROM pin_in_flight WHERE card = $1 AND (instance IS NULL OR instance <> $2) RETURNING {MARK}"
            )))
            .bind(card)
            .bind(me)
            .fetch_all(&mut *tx)
            .await?;
            tx.pause_for_marks(&paused, |_| true, now).await?;
            tx.commit().await?;
            Ok(CardLease::Held { paused })
        })
    }

    /// Publishes what instance `me` sees of `card` (JSON) for the status of
    /// every instance. False when `me` does not drive the card (any more).
    pub async fn publish_card(
        &self,
        card: &str,
        me: &str,
        live: &str,
        now: Millis,
    ) -> Result<bool, StoreError> {
        // Nobody else would read it: the only process shows its own view.
        if self.is_exclusive() {
            return Ok(true);
        }
        on_db!(self, pool, d => {
            let published = sqlx::query("UPDATE card_leases SET live = $1, live_at = $2 WHERE card = $3 AND owner = $4")
                .bind(live)
                .bind(now)
                .bind(card)
                .bind(me)
                .execute(pool)
                .await?;
            Ok(published.rows_affected() == 1)
        })
    }

    /// Every card some instance drives or drove, by name.
    pub async fn card_leases(&self, now: Millis) -> Result<Vec<CardLeaseView>, StoreError> {
        on_db!(self, pool, d => {
            type Row = (String, Option<String>, bool, Millis, Option<String>, Option<Millis>);
            let rows: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT c.card, i.name, COALESCE({}, FALSE), c.since, c.live, c.live_at
                 FROM card_leases c LEFT JOIN instances i ON i.id = c.owner ORDER BY c.card",
                alive("i")
            )))
            .bind(now)
            .fetch_all(pool)
            .await?;
            Ok(rows
                .into_iter()
                .map(|(card, owner, owner_alive, since, live, live_at)| CardLeaseView {
                    card,
                    owner: owner.unwrap_or_default(),
                    owner_alive,
                    since,
                    live,
                    live_at,
                })
                .collect())
        })
    }

    /// Whether instance `me` does the singleton work `name` (taking it when
    /// no live instance does).
    pub async fn hold_singleton(&self, name: &str, me: &str, now: Millis) -> Result<bool, StoreError> {
        if self.is_exclusive() {
            return Ok(true);
        }
        on_db!(self, pool, d => {
            let sql = format!(
                "INSERT INTO singletons (name, owner, since) VALUES ($2, $3, $1)
                 ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, since = excluded.since
                 WHERE singletons.owner <> excluded.owner
                   AND NOT EXISTS (SELECT 1 FROM instances i WHERE i.id = singletons.owner AND {})",
                alive("i")
            );
            sqlx::query(sqlx::AssertSqlSafe(sql)).bind(now).bind(name).bind(me).execute(pool).await?;
            let owner: Option<String> = sqlx::query_scalar("SELECT owner FROM singletons WHERE name = $1")
                .bind(name)
                .fetch_optional(pool)
                .await?;
            Ok(owner.as_deref() == Some(me))
        })
    }
}
