//! I8 for the store: bad URLs, unreachable servers and files that are not orch
//! databases give a clear error naming what was asked for, never a panic.
//!
//! Tests run as root, where a chmod-0444 file is still writable, so "read-only"
//! cannot be staged honestly; instead the specs use paths that cannot be a database
//! at all (under a non-directory, a directory, random bytes).

use std::io::Write;

use orch_store::Error;

use crate::support::TestDb;

#[tokio::test]
async fn unknown_scheme_is_refused() {
    let err = orch_store::open("mysql://u@h/db").await.err().expect("refused");
    assert!(matches!(&err, Error::UnknownScheme { url } if url == "mysql://u@h/db"), "{err}");
    assert!(err.to_string().contains("sqlite://PATH"), "{err}");
    let err = orch_store::open("").await.err().expect("refused");
    assert!(matches!(err, Error::UnknownScheme { .. }));
}

#[tokio::test]
async fn unreachable_postgres_is_unavailable() {
    let url = "postgres://postgres@127.0.0.1:1/none";
    let err = orch_store::open(url).await.err().expect("nothing listens on port 1");
    assert!(matches!(&err, Error::Unavailable { url: u, .. } if u == url), "{err}");
    assert!(err.to_string().contains("127.0.0.1:1"), "{err}");
}

#[tokio::test]
async fn missing_postgres_database_is_unavailable() {
    let url = orch_test_support::with_database(&orch_test_support::pg_admin_url(), "orch_no_such_db");
    let err = orch_store::open(&url).await.err().expect("no such database");
    assert!(matches!(&err, Error::Unavailable { .. }), "{err}");
    assert!(err.to_string().contains("orch_no_such_db"), "{err}");
}

#[tokio::test]
async fn sqlite_path_under_a_file_is_unavailable() {
    let url = "sqlite:///dev/null/orch.db";
    let err = orch_store::open(url).await.err().expect("cannot create a file under /dev/null");
    assert!(matches!(&err, Error::Unavailable { .. }), "{err}");
    assert!(err.to_string().contains("/dev/null"), "{err}");
}

#[tokio::test]
async fn sqlite_path_that_is_a_directory_is_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().display());
    let err = orch_store::open(&url).await.err().expect("a directory is not a database");
    assert!(matches!(&err, Error::Unavailable { .. }), "{err}");
    assert!(err.to_string().contains(&dir.path().display().to_string()), "{err}");
}

#[tokio::test]
async fn sqlite_corrupt_file_is_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("orch.db");
    let mut noise = vec![0u8; 64 * 1024];
    for b in noise.iter_mut() {
        *b = rand::random();
    }
    std::fs::File::create(&path).unwrap().write_all(&noise).unwrap();
    let url = format!("sqlite://{}", path.display());
    let err = orch_store::open(&url).await.err().expect("random bytes are not a database");
    assert!(matches!(&err, Error::Unavailable { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains(&path.display().to_string()) && text.contains("not a database"), "{text}");
}

#[tokio::test]
async fn sqlite_in_memory_opens() {
    let store = orch_store::open("sqlite::memory:").await.unwrap();
    assert!(store.queue_stats().await.unwrap().active_jobs.is_empty());
}

/// Precondition: a freshly migrated store. A database migrated by a newer orch
/// (a higher `schema_migrations.version`) is refused with `SchemaTooNew`.
pub(crate) async fn newer_schema_is_refused(db: &TestDb) {
    bump_schema(&db.url).await;
    let err = db.reopen_err().await;
    assert!(matches!(&err, Error::SchemaTooNew { found: 999, .. }), "{err}");
    assert!(err.to_string().contains("upgrade orch"), "{err}");
}

async fn bump_schema(url: &str) {
    use sqlx::Connection;
    let sql = "INSERT INTO schema_migrations (version, applied_at) VALUES (999, 0)";
    if let Some(path) = url.strip_prefix("sqlite://") {
        let c = rusqlite::Connection::open(path).unwrap();
        c.execute(sql, []).unwrap();
    } else {
        let mut c = sqlx::PgConnection::connect(url).await.unwrap();
        sqlx::query(sql).execute(&mut c).await.unwrap();
    }
}

/// Precondition: a freshly migrated store. Opening it again applies nothing and
/// loses nothing (migrations are idempotent at open).
pub(crate) async fn reopening_keeps_data(db: &TestDb) {
    let item = db.store.create_item(crate::support::new_item("SHOP", "x"), crate::support::T0).await.unwrap();
    let again = db.reopen().await;
    assert_eq!(again.get_item(&item.key).await.unwrap(), Some(item));
}
