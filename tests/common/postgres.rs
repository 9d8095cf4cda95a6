//! Tests of the service on PostgreSQL: each in a schema of its own of the test database
//! (`POSTGRES_TEST_URL`, by default the machine's `test` database), which the service
//! reaches through `[store] url`. A test picks its store with [`on_store`]; the macro
//! [`crate::both_stores`] runs a test once on each (on two worker threads: some kill `serve`
//! while their senders run).

use std::sync::atomic::{AtomicU64, Ordering};

use sqlx::Connection as _;
use sqlx::postgres::PgConnection;

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

tokio::task_local! {
    static STORE: Backend;
}

/// Runs `test` with services (and `serve` processes) started in it on `backend`.
pub async fn on_store(backend: Backend, test: impl std::future::Future<Output = ()>) {
    STORE.scope(backend, test).await
}

/// The store this test runs its services on: SQLite unless [`on_store`] says otherwise.
pub fn backend() -> Backend {
    STORE.try_with(|backend| *backend).unwrap_or(Backend::Sqlite)
}

/// The test PostgreSQL database's address.
pub fn base_url() -> String {
    std::env::var("POSTGRES_TEST_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned())
}

/// A schema of the test database, for one test's services; [`Schema::drop_now`] removes it
/// (`.ci/run` removes those that failed tests left).
#[derive(Debug, Clone)]
pub struct Schema {
    pub name: String,
}

impl Schema {
    /// A new schema when the test runs on PostgreSQL ([`backend`]).
    pub async fn for_backend() -> Option<Schema> {
        match backend() {
            Backend::Sqlite => None,
            Backend::Postgres => Some(Schema::create().await),
        }
    }

    pub async fn create() -> Schema {
        static SEQUENCE: AtomicU64 = AtomicU64::new(0);
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
        let name = format!(
            "customs179_test_e2e_{}_{nanos}_{}",
            std::process::id(),
            SEQUENCE.fetch_add(1, Ordering::Relaxed)
        );
        let mut admin = PgConnection::connect(&base_url())
            .await
            .expect("the tests need PostgreSQL (POSTGRES_TEST_URL, or postgres@127.0.0.1:5432/test)");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {name}"))).execute(&mut admin).await.unwrap();
        Schema { name }
    }

    /// `[store] url` for a service working in this schema (its connections named after it).
    pub fn url(&self) -> String {
        let separator = if base_url().contains('?') { '&' } else { '?' };
        format!(
            "{}{separator}options=-c%20search_path%3D{name}&application_name={name}",
            base_url(),
            name = self.name
        )
    }

    /// A connection of the test's own, in the schema.
    pub async fn connect(&self) -> PgConnection {
        let mut conn = PgConnection::connect(&base_url()).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!("SET search_path TO {}", self.name)))
            .execute(&mut conn)
            .await
            .unwrap();
        conn
    }

    /// Drops the schema, cutting off whatever still uses it.
    pub async fn drop_now(&self) {
        let mut admin = PgConnection::connect(&base_url()).await.unwrap();
        sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1")
            .bind(&self.name)
            .execute(&mut admin)
            .await
            .unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {} CASCADE", self.name)))
            .execute(&mut admin)
            .await
            .unwrap();
    }
}

/// Runs each test once per store, as `name::sqlite` and `name::postgres`.
#[macro_export]
macro_rules! both_stores {
    ($($(#[$meta:meta])* async fn $name:ident() $body:block)*) => {$(
        $(#[$meta])*
        mod $name {
            use super::*;

            async fn run() $body

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                common::postgres::on_store(common::postgres::Backend::Sqlite, run()).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                common::postgres::on_store(common::postgres::Backend::Postgres, run()).await
            }
        }
    )*};
}
