//! Stores for the store's tests, on either database: a SQLite file in a
//! temporary directory, or a schema of its own in the test PostgreSQL
//! database (`POSTGRES_TEST_URL`, by default the machine's `test` database),
//! dropped when the test has passed (`.ci/run` drops those that failed
//! tests left).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use sqlx::Connection as _;
use sqlx::postgres::{PgConnectOptions, PgConnection};

use crate::Store;

/// Where the PostgreSQL tests run unless `POSTGRES_TEST_URL` says otherwise.
const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Backend {
    Sqlite,
    Postgres,
}

pub(crate) struct Fixture {
    pub store: Store,
    /// The SQLite file (on PostgreSQL, a path nothing uses).
    pub path: PathBuf,
    place: Place,
}

enum Place {
    Sqlite(#[allow(dead_code)] tempfile::TempDir),
    Postgres { schema: String },
}

fn admin_options() -> PgConnectOptions {
    let url = std::env::var("POSTGRES_TEST_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned());
    url.parse().expect("POSTGRES_TEST_URL is not a PostgreSQL address")
}

impl Fixture {
    pub(crate) async fn new(backend: Backend) -> Fixture {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                let path = dir.path().join("nested/dir/queue.sqlite");
                let store = Store::open(&path).await.unwrap();
                Fixture { store, path, place: Place::Sqlite(dir) }
            }
            Backend::Postgres => {
                static SEQUENCE: AtomicU64 = AtomicU64::new(0);
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .subsec_nanos();
                let schema = format!(
                    "customs179_test_{}_{nanos}_{}",
                    std::process::id(),
                    SEQUENCE.fetch_add(1, Ordering::Relaxed)
                );
                let mut admin = PgConnection::connect_with(&admin_options())
                    .await
                    .expect("the tests need PostgreSQL (POSTGRES_TEST_URL, or postgres@127.0.0.1:5432/test)");
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
                    .execute(&mut admin)
                    .await
                    .unwrap();
                let place = Place::Postgres { schema };
                let store = Fixture::open(&place).await;
                Fixture { store, path: PathBuf::from("/nonexistent"), place }
            }
        }
    }

    /// Another store on the same database, as another process would open it.
    pub(crate) async fn reopen(&self) -> Store {
        match &self.place {
            Place::Sqlite(_) => Store::open(&self.path).await.unwrap(),
            place => Fixture::open(place).await,
        }
    }

    /// Closes the store and drops the schema, cutting off the connections
    /// of stores the test reopened.
    pub(crate) async fn finish(self) {
        self.store.close().await;
        let Place::Postgres { schema } = &self.place else { return };
        let mut admin = PgConnection::connect_with(&admin_options()).await.unwrap();
        sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1")
            .bind(schema)
            .execute(&mut admin)
            .await
            .unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
            .execute(&mut admin)
            .await
            .unwrap();
    }

    async fn open(place: &Place) -> Store {
        match place {
            Place::Sqlite(_) => unreachable!("a SQLite store opens by its path"),
            Place::Postgres { schema } => {
                let options =
                    admin_options().options([("search_path", schema.as_str())]).application_name(schema);
                Store::connect_with(options).await.unwrap()
            }
        }
    }
}

/// Runs the test `$name` once per database, as `$name::sqlite` and
/// `$name::postgres`, with `$f` the [`Fixture`].
macro_rules! on_both {
    ($(#[$meta:meta])* async fn $name:ident($f:ident) $body:block) => {
        $(#[$meta])*
        mod $name {
            use super::*;

            async fn run($f: &$crate::testing::Fixture) $body

            #[tokio::test]
            async fn sqlite() {
                let f = $crate::testing::Fixture::new($crate::testing::Backend::Sqlite).await;
                run(&f).await;
                f.finish().await;
            }

            #[tokio::test]
            async fn postgres() {
                let f = $crate::testing::Fixture::new($crate::testing::Backend::Postgres).await;
                run(&f).await;
                f.finish().await;
            }
        }
    };
}
pub(crate) use on_both;
