//! The two databases behind [`crate::Store`]: SQLite (the embedded default)
//! and PostgreSQL (for several instances on one database).
//!
//! Each method of the store is written once, as the body of [`on_db!`],
//! and compiled for both pools: the SQL is dialect-neutral (`$1`
//! placeholders, which sqlx's SQLite driver numbers as PostgreSQL does),
//! and what the two spell differently comes from [`Dialect`]. Statements
//! shared between methods live in traits implemented for both connection
//! types by [`for_each_connection!`].

use sqlx::postgres::PgPool;
use sqlx::sqlite::SqlitePool;

#[derive(Debug, Clone)]
pub(crate) enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// What SQLite and PostgreSQL spell differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// Begins a transaction that reads, then writes. SQLite must take its
    /// write lock at once: a deferred transaction that has read cannot wait
    /// for it (SQLITE_BUSY at once, whatever busy_timeout says). PostgreSQL
    /// locks the rows it writes as it goes.
    pub(crate) fn begin_writing(self) -> &'static str {
        match self {
            Dialect::Sqlite => "BEGIN IMMEDIATE",
            Dialect::Postgres => "BEGIN",
        }
    }

    /// Locks the rows a read of a read-then-write transaction found, until
    /// it ends: on PostgreSQL, a concurrent transaction that reads them so
    /// waits, where by default both would act on what they read. SQLite's
    /// write transactions take turns already.
    pub(crate) fn for_update(self) -> &'static str {
        match self {
            Dialect::Sqlite => "",
            Dialect::Postgres => " FOR UPDATE",
        }
    }

    /// Ends the subquery of a claim: on PostgreSQL, the rows it picks are
    /// locked, and rows another instance's claim has locked are passed over
    /// rather than waited for (each claim takes other work). SQLite's claims
    /// take turns.
    pub(crate) fn skip_locked(self) -> &'static str {
        match self {
            Dialect::Sqlite => "",
            Dialect::Postgres => " FOR UPDATE SKIP LOCKED",
        }
    }

    /// Locks the rows a condition reads against change until the
    /// transaction ends, letting other readers lock them too; a change
    /// under way is waited for, and the condition read again after it.
    pub(crate) fn for_share(self) -> &'static str {
        match self {
            Dialect::Sqlite => "",
            Dialect::Postgres => " FOR SHARE",
        }
    }

    /// The statement that makes the writers of `table` take turns for the
    /// rest of the transaction (readers go on), for a transaction that
    /// decides on rows that may not exist yet, which [`Dialect::for_update`]
    /// cannot lock. None on SQLite, whose write transactions take turns.
    pub(crate) fn lock_writers(self, table: &str) -> Option<String> {
        match self {
            Dialect::Sqlite => None,
            Dialect::Postgres => Some(format!("LOCK TABLE {table} IN SHARE ROW EXCLUSIVE MODE")),
        }
    }

    /// The strings of a JSON array bound (as text) at `param`, as a
    /// subquery of one column.
    pub(crate) fn json_strings(self, param: &str) -> String {
        match self {
            Dialect::Sqlite => format!("SELECT value FROM json_each({param})"),
            Dialect::Postgres => format!("SELECT jsonb_array_elements_text({param}::jsonb)"),
        }
    }

    /// The pairs of a JSON array of `[text, integer]` arrays bound (as text)
    /// at `param`, as a subquery of two columns.
    pub(crate) fn json_pairs(self, param: &str) -> String {
        match self {
            Dialect::Sqlite => {
                format!(
                    "SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]') FROM json_each({param})"
                )
            }
            Dialect::Postgres => {
                format!(
                    "SELECT value->>0, (value->>1)::bigint FROM jsonb_array_elements({param}::jsonb) AS value"
                )
            }
        }
    }

    /// The larger of two values.
    pub(crate) fn greatest(self) -> &'static str {
        match self {
            Dialect::Sqlite => "MAX",
            Dialect::Postgres => "GREATEST",
        }
    }

    /// `column` in a condition, kept off its index where the planner would
    /// otherwise walk it. SQLite's planner needs the hint (a unary `+`);
    /// PostgreSQL's weighs the indexes by their statistics, and has no such
    /// hint for text.
    pub(crate) fn unindexed(self, column: &str) -> String {
        match self {
            Dialect::Sqlite => format!("+{column}"),
            Dialect::Postgres => column.to_owned(),
        }
    }

    /// `table` in a FROM clause, read through `index` where SQLite's planner
    /// would take another one.
    pub(crate) fn table_via(self, table: &str, index: &str) -> String {
        match self {
            Dialect::Sqlite => format!("{table} INDEXED BY {index}"),
            Dialect::Postgres => table.to_owned(),
        }
    }
}

/// Runs `$body` with `$pool` bound to the store's pool and `$d` to its
/// [`Dialect`]; the body is compiled once per database.
macro_rules! on_db {
    ($store:expr, $pool:ident, $d:ident => $body:expr) => {
        match &$store.pool {
            $crate::backend::Pool::Sqlite($pool) => {
                #[allow(unused_variables)]
                let $d = $crate::backend::Dialect::Sqlite;
                $body
            }
            $crate::backend::Pool::Postgres($pool) => {
                #[allow(unused_variables)]
                let $d = $crate::backend::Dialect::Postgres;
                $body
            }
        }
    };
}
pub(crate) use on_db;

/// Implements a trait for both connection types with the same body; inside
/// it, `Db` is the connection's database.
macro_rules! for_each_connection {
    (impl $trait:ident { $($body:tt)* }) => {
        impl $trait for sqlx::SqliteConnection {
            $($body)*
        }
        impl $trait for sqlx::PgConnection {
            $($body)*
        }
    };
}
pub(crate) use for_each_connection;
