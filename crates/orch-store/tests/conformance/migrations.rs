//! The migration chain: a store last migrated by an older orch (schema version 1,
//! with history in it) opens under this binary, gains the later migrations, and
//! the trigger-kept terminal counts are backfilled from the rows already there;
//! the node registry that replaced version 1's unused `nodes` table works, and so
//! do version 5's head SHA, gate SHA and the `prs` table that replaced version 1's.

use orch_core::{ItemStatus, JobStatus};
use sqlx::Connection;

fn migration(backend: &str, file: &str) -> String {
    let path = format!("{}/migrations/{backend}/{file}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Version 1 plus a done item with three jobs (done, failed, cancelled) and an
/// open item with a queued job.
const HISTORY: &[&str] = &[
    "CREATE TABLE schema_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)",
    "INSERT INTO schema_migrations VALUES (1, 0)",
    "INSERT INTO key_counters VALUES ('OLD', 2)",
    "INSERT INTO items (key, prefix, number, repo, kind, title, body, track, stage, status, version, attempts, \
     created_at, updated_at) VALUES ('OLD-1', 'OLD', 1, 'r', 'bug', 't', '', 'quick', 'deploy', 'done', 4, '{}', 0, 0)",
    "INSERT INTO items (key, prefix, number, repo, kind, title, body, track, stage, status, version, attempts, \
     created_at, updated_at) VALUES ('OLD-2', 'OLD', 2, 'r', 'bug', 't', '', 'quick', 'development', 'queued', 1, \
     '{}', 0, 0)",
    "INSERT INTO jobs (item, stage, attempt, status, epoch, queued_at) VALUES ('OLD-1', 'development', 1, 'done', 1, 0)",
    "INSERT INTO jobs (item, stage, attempt, status, epoch, queued_at) VALUES ('OLD-1', 'testing', 1, 'failed', 1, 0)",
    "INSERT INTO jobs (item, stage, attempt, status, epoch, queued_at) VALUES ('OLD-1', 'testing', 2, 'cancelled', 2, 0)",
    "INSERT INTO jobs (item, stage, attempt, status, epoch, queued_at) VALUES ('OLD-2', 'development', 1, 'queued', 0, 0)",
];

async fn assert_upgraded(url: &str) {
    let store = orch_store::open(url).await.unwrap_or_else(|e| panic!("opening the v1 store {url}: {e}"));
    let stats = store.queue_stats().await.unwrap();
    assert_eq!(stats.items_by_status[ItemStatus::Done.as_str()], 1);
    assert_eq!(stats.items_by_status[ItemStatus::Queued.as_str()], 1);
    assert_eq!(stats.jobs_by_status[JobStatus::Done.as_str()], 1);
    assert_eq!(stats.jobs_by_status[JobStatus::Failed.as_str()], 1);
    assert_eq!(stats.jobs_by_status[JobStatus::Cancelled.as_str()], 1);
    assert_eq!(stats.jobs_by_status[JobStatus::Queued.as_str()], 1);
    // The key counter carried over.
    let next = store.create_item(crate::support::new_item("OLD", "new"), crate::support::T0).await.unwrap();
    assert_eq!(next.key.to_string(), "OLD-3");
    // Version 4 replaced the `nodes` table version 1 had reserved.
    let reg = orch_store::NodeRegistration {
        id: "node-1".into(),
        incarnation: "inc-1".into(),
        host: "h".into(),
        pid: 7,
        data_dir: "/d".into(),
    };
    let live_for = std::time::Duration::from_secs(15);
    assert_eq!(store.register_node(reg, crate::support::T0, live_for).await.unwrap(), None);
    let nodes = store.nodes().await.unwrap();
    assert_eq!(
        nodes.iter().map(|n| (n.id.as_str(), n.incarnation.as_str(), n.pid)).collect::<Vec<_>>(),
        [("node-1", "inc-1", 7)]
    );
    assert_vcs_columns(&*store).await;
}

/// Version 5: `items.head_sha`, `gate_results.sha` and the rebuilt `prs` exist,
/// start empty on the old rows, and are written and read back.
async fn assert_vcs_columns(store: &dyn orch_store::Store) {
    use crate::support::{T0, TTL, at};
    let old: orch_core::ItemKey = "OLD-2".parse().unwrap();
    let item = store.get_item(&old).await.unwrap().unwrap();
    assert_eq!((item.branch, item.head_sha, item.pr), (None, None, None));
    let job = store.claim_jobs("node-1", 1, T0, TTL).await.unwrap().remove(0);
    assert_eq!(job.item, old, "the v1 item's job is the oldest queued");
    let sha = "0123456789abcdef0123456789abcdef01234567";
    store.record_push(job.id, job.epoch, "feature/OLD-2-bug-t", sha, &[], at(1)).await.unwrap();
    let result = orch_store::GateResult {
        gate: "retest".into(),
        passed: true,
        exit_code: Some(0),
        metric: None,
        duration_ms: 5,
        reason: None,
        sha: Some(sha.into()),
    };
    store.record_gate_result(job.id, job.epoch, result.clone(), at(2)).await.unwrap();
    assert_eq!(store.gate_results(job.id).await.unwrap(), vec![result]);
    let new = orch_store::NewPr {
        item: old.clone(),
        repo: "r".into(),
        title: "t".into(),
        body: String::new(),
        branch: "feature/OLD-2-bug-t".into(),
        head_sha: sha.into(),
        url: "local://r/pulls/2".into(),
    };
    let (opened, created) = store.open_pr(new, at(3)).await.unwrap();
    assert!(created);
    let check = orch_store::PrCheck { sha: sha.into(), passed: true, reason: None, at: at(4) };
    let update = orch_store::PrUpdate { check: Some(("retest".into(), check)), ..Default::default() };
    let updated = store.update_pr(&old, update, at(4)).await.unwrap();
    assert_eq!((opened.number, updated.checks.len()), (2, 1));
    let item = store.get_item(&old).await.unwrap().unwrap();
    assert_eq!((item.head_sha.as_deref(), item.pr), (Some(sha), Some(updated)));
}

#[tokio::test]
async fn sqlite_v1_store_upgrades_and_backfills_counts() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("orch.db");
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch(&migration("sqlite", "0001_init.sql")).unwrap();
        for q in HISTORY {
            c.execute(q, []).unwrap();
        }
    }
    assert_upgraded(&format!("sqlite://{}", path.display())).await;
}

#[tokio::test]
async fn postgres_v1_store_upgrades_and_backfills_counts() {
    let db = orch_test_support::PgDatabase::create("orch_t");
    let url = db.url();
    {
        let mut c = sqlx::PgConnection::connect(url).await.unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(migration("postgres", "0001_init.sql"))).execute(&mut c).await.unwrap();
        for q in HISTORY {
            sqlx::query(*q).execute(&mut c).await.unwrap();
        }
    }
    assert_upgraded(url).await;
}
