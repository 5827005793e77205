//! PostgreSQL-only behaviour that the trait cannot show on SQLite (which has one
//! writer at a time): seqs committed out of order, and index use of the hot queries.

use orch_core::{EventKind, ItemKey};
use orch_store::NewEvent;
use sqlx::Connection;

use crate::support::{T0, TestDb};

/// A transaction holding seq n open while seq n+1 commits: `events_since` hands out
/// neither until n commits, so a tailing reader never skips n.
#[tokio::test]
async fn events_since_never_skips_a_seq_still_in_flight() {
    let db = TestDb::postgres().await;
    let key: ItemKey = "SHOP-1".parse().unwrap();
    let mut slow = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let mut tx = slow.begin().await.unwrap();
    let held: i64 = sqlx::query_scalar(
        "INSERT INTO events (at, item, kind, data) VALUES (0, 'SHOP-1', 'reaper.deferred', '{}') RETURNING seq",
    )
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    db.store.append_events(&[NewEvent::new(key.clone(), EventKind::ReaperReaped)], T0).await.unwrap();
    let early = db.store.events_since(0, 100).await.unwrap();
    assert!(early.is_empty(), "handed out {early:?} while seq {held} was in flight");
    tx.commit().await.unwrap();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    let all = loop {
        let all = db.store.events_since(0, 100).await.unwrap();
        if all.len() == 2 || tokio::time::Instant::now() > deadline {
            break all;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    };
    let kinds: Vec<&str> = all.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["reaper.deferred", "reaper.reaped"]);
    assert_eq!(all[0].seq, held);
}

/// The reaper's, the claim's and the views' queries have an index path: with
/// sequential scans priced out, the planner still finds no need for one.
#[tokio::test]
async fn hot_queries_use_indexes() {
    let db = TestDb::postgres().await;
    let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
    sqlx::query("SET enable_seqscan = off").execute(&mut conn).await.unwrap();
    let queries = [
        "SELECT id FROM jobs WHERE status = 'queued' ORDER BY queued_at, id LIMIT 5 FOR UPDATE SKIP LOCKED",
        "SELECT id FROM jobs WHERE status = 'running' AND lease_expires_at < 5 ORDER BY lease_expires_at, id LIMIT 5",
        "SELECT id FROM jobs WHERE status = 'finishing' AND finished_at < 5 ORDER BY finished_at, id LIMIT 5",
        "SELECT id FROM jobs WHERE status IN ('running', 'finishing') AND started_at < 5 ORDER BY started_at, id LIMIT 5",
        "SELECT id FROM jobs WHERE status IN ('running', 'finishing') AND owner = 'n' ORDER BY id",
        "SELECT id FROM jobs WHERE item = 'A-1' AND status IN ('queued', 'running', 'finishing')",
        "SELECT id FROM jobs WHERE item = 'A-1' ORDER BY id",
        "SELECT seq FROM events WHERE item = 'A-1' ORDER BY seq",
        "SELECT seq FROM events WHERE seq > 5 ORDER BY seq LIMIT 5",
        "SELECT status, COUNT(*) FROM items WHERE status NOT IN ('done', 'cancelled') GROUP BY status",
        "SELECT status, SUM(n) FROM status_counts WHERE tbl = 'items' GROUP BY status",
        "SELECT stage, COUNT(*) FROM items WHERE status NOT IN ('done', 'cancelled') GROUP BY stage",
        "SELECT status, COUNT(*) FROM jobs WHERE status IN ('queued', 'running', 'finishing') GROUP BY status",
        "SELECT id FROM jobs WHERE status IN ('running', 'finishing') ORDER BY started_at, id",
    ];
    for q in queries {
        let plan: Vec<String> =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("EXPLAIN {q}"))).fetch_all(&mut conn).await.unwrap();
        assert!(!plan.iter().any(|l| l.contains("Seq Scan")), "{q}\n{}", plan.join("\n"));
    }
}
