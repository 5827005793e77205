//! Test scaffolding for the conformance suite: a fresh store per test (a temporary
//! SQLite file, or a new PostgreSQL database on the local server), fixed instants,
//! and builders for the requests the specs send.

use std::sync::Arc;
use std::time::Duration;

use orch_core::{ItemKind, ItemState, KeyPrefix, StageName, Timestamp, TrackName};
use orch_store::{NewItem, Store};
use sqlx::Connection;

/// The admin URL of the test PostgreSQL server; each test creates its own database there.
pub(crate) fn pg_admin_url() -> String {
    std::env::var("ORCH_TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// `url` with its database name replaced by `db`.
pub(crate) fn with_database(url: &str, db: &str) -> String {
    let (base, query) = url.split_once('?').map_or((url, None), |(b, q)| (b, Some(q)));
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let base = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{db}?{q}"),
        None => format!("{base}/{db}"),
    }
}

/// One test's private store, and what to clean up after it.
pub(crate) struct TestDb {
    pub(crate) url: String,
    pub(crate) store: Arc<dyn Store>,
    /// Keeps the SQLite file's directory alive for the test.
    _dir: Option<tempfile::TempDir>,
    /// The PostgreSQL database to drop at the end.
    pg_db: Option<String>,
}

impl TestDb {
    /// A fresh SQLite file in a temporary directory.
    pub(crate) async fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("orch.db").display());
        let store = orch_store::open(&url).await.unwrap_or_else(|e| panic!("opening {url}: {e}"));
        Self { url, store, _dir: Some(dir), pg_db: None }
    }

    /// A fresh database on the test PostgreSQL server. Fails loudly, naming the URL,
    /// when the server cannot be reached: these tests are never skipped.
    pub(crate) async fn postgres() -> Self {
        let db = create_pg_database().await;
        let url = with_database(&pg_admin_url(), &db);
        let store = orch_store::open(&url).await.unwrap_or_else(|e| panic!("opening {url}: {e}"));
        Self { url, store, _dir: None, pg_db: Some(db) }
    }

    /// Opening the database again, expecting a refusal.
    pub(crate) async fn reopen_err(&self) -> orch_store::Error {
        match orch_store::open(&self.url).await {
            Ok(_) => panic!("reopening {} should have failed", self.url),
            Err(e) => e,
        }
    }

    /// Another store on the same database (a second process or node).
    pub(crate) async fn reopen(&self) -> Arc<dyn Store> {
        orch_store::open(&self.url).await.unwrap_or_else(|e| panic!("reopening {}: {e}", self.url))
    }
}

/// Creates `orch_t_<random>` on the test server and returns its name.
pub(crate) async fn create_pg_database() -> String {
    let admin = pg_admin_url();
    let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap_or_else(|e| {
        panic!(
            "cannot reach the test PostgreSQL server at {admin}: {e}\n\
             start it, or point ORCH_TEST_DATABASE_URL at one (these tests are never skipped)"
        )
    });
    let name = format!("orch_t_{:016x}", rand::random::<u64>());
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("creating database {name} on {admin}: {e}"));
    name
}

/// Drops a test database, best-effort (a leftover `orch_t_*` is harmless).
pub(crate) fn drop_pg_database(name: &str) {
    let name = name.to_owned();
    // Drop runs outside any runtime guarantee (it may run while a panic unwinds), so
    // it gets a thread and a small runtime of its own.
    let _ = std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
        rt.block_on(async move {
            if let Ok(mut conn) = sqlx::PgConnection::connect(&pg_admin_url()).await {
                let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")))
                    .execute(&mut conn)
                    .await;
            }
        });
    })
    .join();
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some(db) = self.pg_db.take() {
            drop_pg_database(&db);
        }
    }
}

/// A fixed instant the specs count from, so lease arithmetic is exact.
pub(crate) const T0: Timestamp = Timestamp::from_millis(1_700_000_000_000);

/// `T0` plus `ms` milliseconds.
pub(crate) fn at(ms: i64) -> Timestamp {
    Timestamp::from_millis(T0.as_millis() + ms)
}

/// The lease length the specs use.
pub(crate) const TTL: Duration = Duration::from_secs(30);

/// A bug for repo `shop` (prefix `prefix`) starting at `quick`/`development`.
pub(crate) fn new_item(prefix: &str, title: &str) -> NewItem {
    NewItem {
        repo: format!("repo-{}", prefix.to_lowercase()),
        prefix: KeyPrefix::new(prefix).expect("valid prefix"),
        kind: ItemKind::Bug,
        title: title.to_owned(),
        body: format!("body of {title}"),
        state: ItemState::new(TrackName::new("quick"), StageName::new("development")),
    }
}
