//! Unit tests of the PostgreSQL store's internals.

use super::*;
use std::path::Path;

#[test]
fn every_migration_file_is_embedded() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/postgres");
    let files = std::fs::read_dir(dir).unwrap().count();
    assert_eq!(files, MIGRATIONS.len(), "add new migration files to MIGRATIONS");
}

/// The bounds only help if they are ordered: the server's errors (acquire,
/// statement) come before this process gives up on a call.
#[test]
fn timeouts_are_bounded_and_ordered() {
    assert!(ACQUIRE_TIMEOUT <= Duration::from_secs(10), "{ACQUIRE_TIMEOUT:?}");
    assert!(CALL_TIMEOUT > ACQUIRE_TIMEOUT + STATEMENT_TIMEOUT, "{CALL_TIMEOUT:?}");
    assert!(IDLE_IN_TRANSACTION_TIMEOUT > STATEMENT_TIMEOUT);
    assert_eq!(pool_options().get_acquire_timeout(), ACQUIRE_TIMEOUT);
}

/// Every pooled session runs under the server-side bounds, even when the URL
/// asks for none (`options=-c statement_timeout=0`). Uses the test server's
/// admin database as it is: nothing is written.
#[tokio::test]
async fn pooled_sessions_carry_the_server_side_timeouts() {
    let admin = std::env::var("ORCH_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let sep = if admin.contains('?') { '&' } else { '?' };
    for url in [admin.clone(), format!("{admin}{sep}options=-c%20statement_timeout%3D0")] {
        let opts = connect_options(&url, &common::redact(&url)).unwrap();
        let pool = pool_options().max_connections(2).connect_with(opts).await.unwrap_or_else(|e| {
            panic!("cannot reach the test PostgreSQL server at {url}: {e} (these tests are never skipped)")
        });
        let show = |name: &'static str| {
            let pool = pool.clone();
            async move {
                let q = sqlx::AssertSqlSafe(format!("SHOW {name}"));
                sqlx::query_scalar::<_, String>(q).fetch_one(&pool).await.unwrap()
            }
        };
        assert_eq!(show("statement_timeout").await, "5s", "{url}");
        assert_eq!(show("idle_in_transaction_session_timeout").await, "30s", "{url}");
        pool.close().await;
    }
}
