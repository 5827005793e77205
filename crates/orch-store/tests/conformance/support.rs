//! Test scaffolding for the conformance suite: a fresh store per test (a temporary
//! SQLite file, or a new PostgreSQL database on the local server from
//! `orch-test-support`, dropped with the test), fixed instants, and builders for
//! the requests the specs send.

use std::sync::Arc;
use std::time::Duration;

use orch_core::{ItemKind, ItemState, KeyPrefix, StageName, Timestamp, TrackName};
use orch_store::{NewItem, Store};
use orch_test_support::PgDatabase;

/// One test's private store, and what to clean up after it.
pub(crate) struct TestDb {
    pub(crate) url: String,
    pub(crate) store: Arc<dyn Store>,
    /// Keeps the SQLite file's directory alive for the test.
    _dir: Option<tempfile::TempDir>,
    /// The PostgreSQL database, dropped with the `TestDb` (after `store`, whose
    /// pool closes first).
    _pg: Option<PgDatabase>,
}

impl TestDb {
    /// A fresh SQLite file in a temporary directory.
    pub(crate) async fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("orch.db").display());
        let store = orch_store::open(&url).await.unwrap_or_else(|e| panic!("opening {url}: {e}"));
        Self { url, store, _dir: Some(dir), _pg: None }
    }

    /// A fresh database on the test PostgreSQL server (`orch_test_support`). Fails
    /// loudly, naming the URL, when the server cannot be reached: these tests are
    /// never skipped.
    pub(crate) async fn postgres() -> Self {
        let db = PgDatabase::create("orch_t");
        let url = db.url().to_owned();
        let store = orch_store::open(&url).await.unwrap_or_else(|e| panic!("opening {url}: {e}"));
        Self { url, store, _dir: None, _pg: Some(db) }
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
