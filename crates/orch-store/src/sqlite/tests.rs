//! Unit tests of the SQLite store that need its internals: the writer's batches, statement
//! recompilation, the index plans of the production statements.

use super::*;

#[test]
fn parses_urls() {
    assert!(matches!(parse_url("sqlite::memory:"), Some(Target::Memory)));
    assert!(matches!(parse_url("sqlite://.orch/orch.db"), Some(Target::File(p)) if p == Path::new(".orch/orch.db")));
    assert!(matches!(parse_url("sqlite:///tmp/x.db"), Some(Target::File(p)) if p == Path::new("/tmp/x.db")));
    assert!(parse_url("sqlite://").is_none());
    assert!(parse_url("postgres://x").is_none());
}

#[test]
fn every_migration_file_is_embedded() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/sqlite");
    let files = std::fs::read_dir(dir).unwrap().count();
    assert_eq!(files, MIGRATIONS.len(), "add new migration files to MIGRATIONS");
}

/// A migrated WAL database at `path`, opened the way the store's writer is.
fn writer_conn(path: &Path) -> (Connection, String) {
    let url = format!("sqlite://{}", path.display());
    let target = Target::File(path.to_owned());
    let conn = connect(&target, &url).unwrap();
    use_wal(&conn, &url).unwrap();
    migrate(&conn, &url).unwrap();
    (conn, url)
}

/// The writer's savepoint sub-journal must stay in memory: spilled (past 64 KiB,
/// which a batch of writes passes at once) it is a temp file written page by page.
#[test]
fn connections_keep_temp_storage_in_memory() {
    let dir = tempfile::tempdir().unwrap();
    let (conn, _) = writer_conn(&dir.path().join("orch.db"));
    let temp_store: i64 = conn.query_row("PRAGMA temp_store", [], |r| r.get(0)).unwrap();
    assert_eq!(temp_store, 2, "PRAGMA temp_store: 2 is MEMORY");
}

/// The answer a write got: whether it was reported done, and the error if not.
fn answer<T>(rx: &mut oneshot::Receiver<Result<T>>) -> Result<T> {
    rx.try_recv().expect("run_batch answers every write before it returns")
}

/// SQLite rolls the whole transaction back itself when a write hits SQLITE_FULL
/// (or an I/O error, or runs out of memory) in a statement without a statement
/// journal. The writes queued behind it in the same batch must then not run (in
/// autocommit mode their savepoints would commit each on its own), and every
/// write of the batch must be reported failed. Checked the only way that
/// matters: each write reported failed is absent, each reported done is present.
#[test]
fn batch_rolled_back_by_sqlite_fails_every_write_and_commits_none() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("orch.db");
    let (conn, url) = writer_conn(&path);
    let url: Arc<str> = Arc::from(url.as_str());
    let now = Timestamp::from_millis(1_700_000_000_000);
    let prefix = orch_core::KeyPrefix::new("SHOP").unwrap();
    let new_item = |title: &str| NewItem {
        repo: "repo-shop".into(),
        prefix: prefix.clone(),
        kind: ItemKind::Bug,
        title: title.into(),
        body: String::new(),
        state: orch_core::ItemState::new(TrackName::new("quick"), StageName::new("development")),
    };
    let mut setup = Vec::new();
    for i in 0..3 {
        let item = new_item(&format!("item {i}"));
        setup.push(write_op(url.clone(), Result::is_ok, move |w| w.create_item(&item, now)));
    }
    let (ops, mut answers): (Vec<_>, Vec<_>) = setup.into_iter().unzip();
    run_batch(&conn, &url, ops);
    for a in &mut answers {
        answer(a).unwrap();
    }

    // No page may be added from here on: a write that needs one hits SQLITE_FULL.
    let pages: i64 = conn.query_row("PRAGMA page_count", [], |r| r.get(0)).unwrap();
    conn.pragma_update(None, "max_page_count", pages).unwrap();

    let key = |n: u64| ItemKey::new(prefix.clone(), std::num::NonZeroU64::new(n).unwrap());
    let event = |reason: String| {
        let mut ev = NewEvent::new(key(3), EventKind::ReaperDeferred);
        ev.reason = Some(reason);
        ev
    };
    let huge = event("x".repeat(256 * 1024));
    let small = event("after the full one".into());
    let (k1, k2) = (key(1), key(2));
    let (a, mut a_rx) = write_op(url.clone(), Result::is_ok, move |w| w.set_branch(&k1, "before", now));
    let (b, mut b_rx) = write_op(url.clone(), Result::is_ok, move |w| w.insert_event(&huge, now));
    let (c, mut c_rx) = write_op(url.clone(), Result::is_ok, move |w| w.set_branch(&k2, "after", now));
    let (d, mut d_rx) = write_op(url.clone(), Result::is_ok, move |w| w.insert_event(&small, now));
    run_batch(&conn, &url, vec![a, b, c, d]);
    let (a, b, c, d) = (answer(&mut a_rx), answer(&mut b_rx), answer(&mut c_rx), answer(&mut d_rx));

    // What is really in the file, read by another connection.
    let check = connect(&Target::File(path.clone()), &url).unwrap();
    let branch = |n: u64| -> Option<String> {
        check.query_row("SELECT branch FROM items WHERE key = ?1", [key(n).to_string()], |r| r.get(0)).unwrap()
    };
    let events_with = |pred: &str| -> i64 {
        check.query_row(&format!("SELECT COUNT(*) FROM events WHERE {pred}"), [], |r| r.get(0)).unwrap()
    };
    let present = [
        ("a: set_branch before the full write", a.is_ok(), branch(1).as_deref() == Some("before")),
        ("b: the write that hit SQLITE_FULL", b.is_ok(), events_with("length(reason) > 1000") == 1),
        ("c: set_branch after it", c.is_ok(), branch(2).as_deref() == Some("after")),
        ("d: an event after it", d.is_ok(), events_with("reason = 'after the full one'") == 1),
    ];
    for (what, reported_ok, is_present) in present {
        assert_eq!(reported_ok, is_present, "{what}: reported ok = {reported_ok}, present = {is_present}");
    }
    // Every write is told the real cause, not a savepoint error after the fact.
    for r in [&a, &b, &c, &d] {
        assert!(matches!(r, Err(Error::Unavailable { reason, .. }) if reason.contains("full")), "{r:?}");
    }
    // Guards the test's premise: if SQLite ever rolls back only the statement
    // here, `a` survives and this test no longer reaches the rollback path.
    assert!(a.is_err(), "SQLite kept the batch's transaction open after SQLITE_FULL: {a:?}");

    // The writer is not wedged: with room again, the next batch commits.
    conn.pragma_update(None, "max_page_count", 1_000_000).unwrap();
    let k3 = key(3);
    let (e, mut e_rx) = write_op(url.clone(), Result::is_ok, move |w| w.set_branch(&k3, "later", now));
    run_batch(&conn, &url, vec![e]);
    answer(&mut e_rx).unwrap();
    assert_eq!(branch(3).as_deref(), Some("later"));
}

/// The reaper's, the claim's and the stats' queries must be index searches, not
/// table scans, or a pass over 100,000 items would cost a full scan each.
#[test]
fn hot_queries_use_indexes() {
    let conn = connect(&Target::Memory, "sqlite::memory:").unwrap();
    migrate(&conn, "sqlite::memory:").unwrap();
    let queries = [
        "SELECT id FROM jobs WHERE status = 'queued' ORDER BY queued_at, id LIMIT 5",
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
        "SELECT id FROM gate_results WHERE job = 5 ORDER BY id",
        "SELECT item FROM prs WHERE branch = 'feature/A-1-bug-x'",
    ];
    // The production statements themselves, their parameters bound to NULL.
    let production = [
        W::CLAIM,
        W::LIST_ITEMS,
        W::EXPIRED_RUNNING,
        W::STALE_FINISHING,
        W::OVERDUE,
        W::EVENTS_SINCE,
        W::ITEM_EVENTS_SINCE,
    ];
    for q in queries.into_iter().chain(production) {
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {q}")).unwrap();
        let nulls = vec![rusqlite::types::Value::Null; stmt.parameter_count()];
        let plan: Vec<String> = stmt
            .query_map(rusqlite::params_from_iter(nulls), |r| r.get::<_, String>(3))
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        let scans_table = plan.iter().any(|l| l.starts_with("SCAN") && !l.contains("INDEX"));
        assert!(!scans_table, "{q}\nplan: {plan:?}");
    }
}

/// The claim runs from the writer's statement cache without being compiled
/// again, whatever limit it is given (a bound `LIMIT ?` would expire it at
/// every call: docs/BENCHMARKS.md).
#[test]
fn the_claim_is_not_recompiled_between_calls() {
    use orch_core::{ItemKind, ItemState, KeyPrefix};
    let dir = tempfile::tempdir().unwrap();
    let (conn, url) = writer_conn(&dir.path().join("claim.db"));
    let w = W { conn: &conn, url: &url };
    let now = Timestamp::from_millis(1_000);
    for _ in 0..6 {
        let new = NewItem {
            repo: "shop".into(),
            prefix: KeyPrefix::new("SHOP").unwrap(),
            kind: ItemKind::Bug,
            title: "claim".into(),
            body: String::new(),
            state: ItemState::new(TrackName::from("quick"), StageName::from("development")),
        };
        w.create_item(&new, now).unwrap();
    }
    let mut claimed = 0;
    for limit in [1, 2, 3] {
        claimed += w.claim_jobs("node-a", limit, now, Duration::from_secs(30)).unwrap().len();
    }
    assert_eq!(claimed, 6, "the three claims took every queued job");
    let stmt = conn.prepare_cached(W::CLAIM).unwrap();
    assert!(stmt.get_status(rusqlite::StatementStatus::Run) >= 3, "the cached claim is the one that ran");
    assert_eq!(stmt.get_status(rusqlite::StatementStatus::RePrepare), 0, "the claim was compiled again");
}

/// Events appended in one go keep their order and every field, across the
/// `EVENT_ROWS` chunk boundary, and each row count runs from the cache.
#[test]
fn events_inserted_together_keep_their_order_and_fields() {
    use orch_core::{ItemKind, ItemState, KeyPrefix};
    let dir = tempfile::tempdir().unwrap();
    let (conn, url) = writer_conn(&dir.path().join("events.db"));
    let w = W { conn: &conn, url: &url };
    let now = Timestamp::from_millis(7_000);
    let new = NewItem {
        repo: "shop".into(),
        prefix: KeyPrefix::new("SHOP").unwrap(),
        kind: ItemKind::Bug,
        title: "events".into(),
        body: String::new(),
        state: ItemState::new(TrackName::from("quick"), StageName::from("development")),
    };
    let key = w.create_item(&new, now).unwrap();
    let before: i64 = conn.query_row("SELECT MAX(seq) FROM events", [], |r| r.get(0)).unwrap();
    let count = 2 * EVENT_ROWS + 3;
    let events: Vec<NewEvent> = (0..count)
        .map(|i| {
            let mut ev = NewEvent::new(key.clone(), EventKind::VcsPushed);
            ev.job = (i % 2 == 0).then_some(JobId(i64::try_from(i).unwrap()));
            ev.epoch = (i % 3 == 0).then_some(i64::try_from(i).unwrap());
            ev.from = Some(format!("from {i}"));
            ev.to = (i % 2 == 1).then(|| format!("to {i}"));
            ev.reason = Some(format!("event {i}"));
            ev.data = json!({ "i": i });
            ev
        })
        .collect();
    w.insert_events(&events, now).unwrap();
    let got = w.rows(W::EVENTS_SINCE, params![before, 1_000], event_from_row).unwrap();
    assert_eq!(got.len(), count);
    for (i, (ev, row)) in events.iter().zip(&got).enumerate() {
        assert_eq!(row.seq, before + 1 + i64::try_from(i).unwrap(), "event {i} got seq {}", row.seq);
        assert_eq!(row.kind, ev.kind.as_str(), "event {i}");
        assert_eq!(row.item, key, "event {i}");
        assert_eq!(row.job, ev.job, "event {i}");
        assert_eq!(row.epoch, ev.epoch, "event {i}");
        assert_eq!((&row.from, &row.to, &row.reason), (&ev.from, &ev.to, &ev.reason), "event {i}");
        assert_eq!(row.data, ev.data, "event {i}");
        assert_eq!(row.at, now, "event {i}");
    }
    w.insert_events(&events, now).unwrap();
    let stmt = conn.prepare_cached(&events_insert_sql(EVENT_ROWS)).unwrap();
    assert_eq!(stmt.get_status(rusqlite::StatementStatus::Run), 4, "two full chunks per call, cached");
    assert_eq!(stmt.get_status(rusqlite::StatementStatus::RePrepare), 0);
}

/// The bounded reads (list, the reaper's tiers, the event feeds) are not compiled
/// again when called with another limit or offset either, for the same reason as
/// the claim.
#[test]
fn bounded_reads_are_not_recompiled_between_calls() {
    use orch_core::{ItemKind, ItemState, KeyPrefix};
    let dir = tempfile::tempdir().unwrap();
    let (conn, url) = writer_conn(&dir.path().join("reads.db"));
    let w = W { conn: &conn, url: &url };
    let now = Timestamp::from_millis(1_000);
    for _ in 0..4 {
        let new = NewItem {
            repo: "shop".into(),
            prefix: KeyPrefix::new("SHOP").unwrap(),
            kind: ItemKind::Bug,
            title: "read".into(),
            body: String::new(),
            state: ItemState::new(TrackName::from("quick"), StageName::from("development")),
        };
        w.create_item(&new, now).unwrap();
    }
    w.claim_jobs("node-a", 4, now, Duration::from_secs(30)).unwrap();
    let later = Timestamp::from_millis(1_000_000).as_millis();
    let none: Option<String> = None;
    let mut seen = Vec::new();
    for limit in [1_i64, 2, 3] {
        let items = w
            .rows(W::LIST_ITEMS, params![none, none, none, limit, limit - 1, none, none, none], item_from_row)
            .unwrap();
        let expired = w.rows(W::EXPIRED_RUNNING, params![later, limit], job_from_row).unwrap();
        let stale = w.rows(W::STALE_FINISHING, params![later, limit], job_from_row).unwrap();
        let overdue = w.rows(W::OVERDUE, params![later, limit], job_from_row).unwrap();
        let since = w.rows(W::EVENTS_SINCE, params![0, limit], event_from_row).unwrap();
        let item_since = w.rows(W::ITEM_EVENTS_SINCE, params!["SHOP-1", 0, limit], event_from_row).unwrap();
        seen.push([items.len(), expired.len(), stale.len(), overdue.len(), since.len(), item_since.len()]);
    }
    // Guards the premise: the limits were applied, so each statement really read them.
    let n = |limit: usize| limit.min(4);
    for (i, counts) in seen.iter().enumerate() {
        let limit = i + 1;
        assert_eq!(counts[0], n(limit).min(4 - i), "list, limit {limit} offset {i}");
        assert_eq!(counts[1], n(limit), "expired_running, limit {limit}");
        assert_eq!(counts[2], 0, "no job is finishing");
        assert_eq!(counts[3], n(limit), "overdue, limit {limit}");
        assert_eq!(counts[4], limit, "events_since, limit {limit}");
        assert!(counts[5] >= 1 && counts[5] <= limit, "item events, limit {limit}: {}", counts[5]);
    }
    let mut recompiled = Vec::new();
    for (name, sql) in [
        ("list_items", W::LIST_ITEMS),
        ("expired_running", W::EXPIRED_RUNNING),
        ("stale_finishing", W::STALE_FINISHING),
        ("overdue", W::OVERDUE),
        ("events_since", W::EVENTS_SINCE),
        ("item events_after", W::ITEM_EVENTS_SINCE),
    ] {
        let stmt = conn.prepare_cached(sql).unwrap();
        assert!(
            stmt.get_status(rusqlite::StatementStatus::Run) >= 3,
            "{name}: the cached statement is the one that ran"
        );
        let n = stmt.get_status(rusqlite::StatementStatus::RePrepare);
        if n > 0 {
            recompiled.push(format!("{name}: {n} re-prepares in 3 calls"));
        }
    }
    assert!(recompiled.is_empty(), "compiled again: {recompiled:?}");
}
