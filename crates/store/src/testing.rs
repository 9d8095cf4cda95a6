//! Stores for the store's tests, on either database: a SQLite file in a
//! temporary directory, or a schema of its own in the test PostgreSQL
//! database (`POSTGRES_TEST_URL`, by default the machine's `test` database),
//! dropped with the fixture.

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

    async fn open(place: &Place) -> Store {
        match place {
            Place::Sqlite(_) => unreachable!("a SQLite store opens by its path"),
            Place::Postgres { schema } => {
                Store::connect_with(admin_options().options([("search_path", schema.as_str())]))
                    .await
                    .unwrap()
            }
        }
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let Place::Postgres { schema } = &self.place else { return };
        let drop_schema = format!("DROP SCHEMA {schema} CASCADE");
        // Drop cannot wait on the test's runtime: a thread of its own does.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async {
                let mut admin = PgConnection::connect_with(&admin_options()).await?;
                sqlx::query(sqlx::AssertSqlSafe(drop_schema)).execute(&mut admin).await.map(|_| ())
            })
        })
        .join();
        if let Ok(Err(e)) = dropped {
            eprintln!("could not drop the test schema: {e}");
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

            async fn run($f: $crate::testing::Fixture) $body

            #[tokio::test]
            async fn sqlite() {
                run($crate::testing::Fixture::new($crate::testing::Backend::Sqlite).await).await
            }

            #[tokio::test]
            async fn postgres() {
                run($crate::testing::Fixture::new($crate::testing::Backend::Postgres).await).await
            }
        }
    };
}
pub(crate) use on_both;
