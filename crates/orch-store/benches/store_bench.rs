//! The store's throughput benchmark (`cargo bench -p orch-store --bench store_bench`):
//! claims/s, durable stage transitions/s and commits/s on SQLite and PostgreSQL with
//! 1, 16 and 64 concurrent workers, next to the machine's raw single-row commit rate,
//! so `docs/BENCHMARKS.md` can say how close the store gets to the hardware.
//!
//! A "stage transition" is what a no-op stage costs the store: claim one job,
//! record_started, record_finished, and commit_transition that ends the job and
//! enqueues the next stage's (4 writes). A "stage hand-off" is what the engine
//! sends for such a stage now: one commit_transition that also records the run
//! (`RunEnd`) and claims the next stage's job for the same worker (`ClaimNext`),
//! after a `get_item` (1 write, 1 read). Every case runs on a fresh database.
//!
//! It also times `queue_stats` and one reaper pass over `ORCH_BENCH_ITEMS` (default
//! 100,000) bulk-loaded items.
//!
//! Knobs: `ORCH_BENCH_JOBS` (jobs per case, default 2000), `ORCH_BENCH_WORKERS`
//! (comma list, default `1,16,64`), `ORCH_BENCH_BACKENDS` (default `sqlite,postgres`),
//! `ORCH_BENCH_RAW_SECS` (default 2), `ORCH_TEST_DATABASE_URL` (admin URL of the
//! PostgreSQL server; a fresh database is created per case and dropped after).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use orch_core::{EventKind, ItemKind, ItemState, JobStatus, KeyPrefix, StageName, Timestamp, TrackName};
use orch_store::{
    ClaimNext, CommitOutcome, ExitInfo, Job, JobFinal, NewEvent, NewItem, RunEnd, RunInfo, Store, TransitionCommit,
};
use sqlx::Connection;
use tokio::task::JoinSet;

const T0: Timestamp = Timestamp::from_millis(1_700_000_000_000);
const TTL: Duration = Duration::from_secs(30);
const STAGES: [&str; 4] = ["development", "testing", "deploy-staging", "deploy"];

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn admin_url() -> String {
    std::env::var("ORCH_TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

fn with_database(url: &str, db: &str) -> String {
    let scheme_end = url.find("://").map_or(0, |i| i + 3);
    let base = match url[scheme_end..].find('/') {
        Some(i) => &url[..scheme_end + i],
        None => url,
    };
    format!("{base}/{db}")
}

/// A fresh database for one case; dropped (PostgreSQL) or deleted (SQLite) after.
struct Db {
    url: String,
    _dir: Option<tempfile::TempDir>,
    pg: Option<String>,
}

impl Db {
    async fn new(backend: &str) -> Db {
        if backend == "sqlite" {
            let dir = tempfile::tempdir().expect("temp dir");
            let url = format!("sqlite://{}", dir.path().join("bench.db").display());
            Db { url, _dir: Some(dir), pg: None }
        } else {
            let admin = admin_url();
            let mut c =
                sqlx::PgConnection::connect(&admin).await.unwrap_or_else(|e| panic!("cannot reach {admin}: {e}"));
            let name = format!("orch_bench_{:016x}", rand::random::<u64>());
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                .execute(&mut c)
                .await
                .expect("create db");
            Db { url: with_database(&admin, &name), _dir: None, pg: Some(name) }
        }
    }

    async fn drop_db(self) {
        if let Some(name) = &self.pg
            && let Ok(mut c) = sqlx::PgConnection::connect(&admin_url()).await
        {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")))
                .execute(&mut c)
                .await;
        }
    }
}

fn new_item(i: usize) -> NewItem {
    NewItem {
        repo: "bench".into(),
        prefix: KeyPrefix::new("B").expect("prefix"),
        kind: ItemKind::Bug,
        title: format!("item {i}"),
        body: String::new(),
        state: ItemState::new(TrackName::new("quick"), StageName::new(STAGES[0])),
    }
}

/// Creates `n` items (so `n` queued jobs), 16 at a time.
async fn fill(store: &Arc<dyn Store>, n: usize) {
    let next = Arc::new(AtomicUsize::new(0));
    let mut set = JoinSet::new();
    for _ in 0..16 {
        let (store, next) = (store.clone(), next.clone());
        set.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return;
                }
                store.create_item(new_item(i), T0).await.expect("create_item");
            }
        });
    }
    set.join_all().await;
}

/// The commit that ends `job` and enqueues the next stage (or finishes the item).
/// With `handoff` it is what the engine sends for a no-op stage with no gates: the
/// commit also records the run's start and end (`RunEnd`, with the `job.started`
/// and `job.finished` events) and claims the next stage's job for `handoff`'s node.
async fn commit_for(store: &dyn Store, job: &Job, handoff: Option<&str>) -> CommitOutcome {
    let item = store.get_item(&job.item).await.expect("get_item").expect("item exists");
    let pos = STAGES.iter().position(|s| *s == job.stage.as_str()).unwrap_or(0);
    let mut next = item.state();
    next.version += 1;
    let mut ev = NewEvent::new(job.item.clone(), EventKind::ItemAdvanced);
    let enqueue = match STAGES.get(pos + 1) {
        Some(stage) => {
            next.stage = StageName::new(*stage);
            next.status = orch_core::ItemStatus::Queued;
            next.attempts.insert(StageName::new(*stage), 1);
            ev.from = Some(job.stage.to_string());
            ev.to = Some((*stage).to_owned());
            Some((StageName::new(*stage), 1))
        }
        None => {
            next.status = orch_core::ItemStatus::Done;
            ev.kind = EventKind::ItemDone;
            None
        }
    };
    let mut events = vec![ev];
    let mut run_end = None;
    let mut claim_next = None;
    if let Some(node) = handoff {
        let run = RunInfo { pid: 0, pgid: 0, proc_start: None, log_path: "/dev/null".into() };
        let exit = ExitInfo { exit_code: Some(0), ..ExitInfo::default() };
        let started = NewEvent::job_started(job.item.clone(), job.id, job.epoch, &run);
        let finished = NewEvent::job_finished(job.item.clone(), job.id, job.epoch, &exit);
        events.splice(0..0, [started, finished]);
        run_end = Some(RunEnd { run: Some(run), exit_code: Some(0), usage: None });
        claim_next = enqueue.as_ref().map(|_| ClaimNext { node: node.to_owned(), lease_ttl: TTL });
    }
    let commit = TransitionCommit {
        item: job.item.clone(),
        expected_version: item.version,
        job: Some(JobFinal {
            id: job.id,
            epoch: job.epoch,
            status: JobStatus::Done,
            reason: None,
            verdict: None,
            run_end,
        }),
        next,
        cancel_active_jobs: false,
        events,
        enqueue,
        claim_next,
    };
    store.commit_transition(commit, T0).await.expect("commit_transition")
}

/// Runs `workers` tasks of `body` until `n` operations are counted or a body
/// reports `None` (no work left); returns the count and the time taken.
async fn run_workers<F, Fut>(workers: usize, n: usize, body: F) -> (usize, Duration)
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Option<usize>> + Send,
{
    let done = Arc::new(AtomicUsize::new(0));
    let body = Arc::new(body);
    let start = Instant::now();
    let mut set = JoinSet::new();
    for w in 0..workers {
        let (done, body) = (done.clone(), body.clone());
        set.spawn(async move {
            while done.load(Ordering::Relaxed) < n {
                match body(w).await {
                    None => break,
                    // Nothing claimable right now: other workers hold the jobs.
                    Some(0) => tokio::task::yield_now().await,
                    Some(k) => {
                        done.fetch_add(k, Ordering::Relaxed);
                    }
                }
            }
        });
    }
    set.join_all().await;
    (done.load(Ordering::Relaxed), start.elapsed())
}

async fn bench_claims(backend: &str, workers: usize, n: usize) -> (usize, Duration) {
    let db = Db::new(backend).await;
    let store = orch_store::open(&db.url).await.expect("open");
    fill(&store, n).await;
    let s = store.clone();
    let out = run_workers(workers, n, move |w| {
        let s = s.clone();
        async move {
            let jobs = s.claim_jobs(&format!("node-{w}"), 1, T0, TTL).await.expect("claim");
            if jobs.is_empty() { None } else { Some(jobs.len()) }
        }
    })
    .await;
    drop(store);
    db.drop_db().await;
    out
}

async fn bench_transitions(backend: &str, workers: usize, n: usize) -> (usize, Duration) {
    let db = Db::new(backend).await;
    let store = orch_store::open(&db.url).await.expect("open");
    // Enough items that the pipeline never runs dry: each item gives 4 transitions.
    fill(&store, n.div_ceil(STAGES.len()).max(workers * 2)).await;
    let s = store.clone();
    let out = run_workers(workers, n, move |w| {
        let s = s.clone();
        async move {
            let node = format!("node-{w}");
            let Some(job) = s.claim_jobs(&node, 1, T0, TTL).await.expect("claim").pop() else { return Some(0) };
            let run = RunInfo { pid: 1, pgid: 1, proc_start: None, log_path: "/dev/null".into() };
            s.record_started(job.id, job.epoch, run, T0).await.expect("started");
            s.record_finished(
                job.id,
                job.epoch,
                ExitInfo { exit_code: Some(0), reason: None, verdict: None, usage: None },
                T0,
            )
            .await
            .expect("finished");
            match commit_for(&*s, &job, None).await {
                CommitOutcome::Applied { .. } => Some(1),
                other => panic!("commit: {other:?}"),
            }
        }
    })
    .await;
    drop(store);
    db.drop_db().await;
    out
}

/// What a no-op stage costs the store as the engine runs it now: one write per
/// stage. A worker claims a job when it holds none; each commit ends its job,
/// records the run, moves the item and claims the next stage's job for the same
/// worker, which goes straight on with it (`ClaimNext::claimed_job`, no read).
async fn bench_handoffs(backend: &str, workers: usize, n: usize) -> (usize, Duration) {
    let db = Db::new(backend).await;
    let store = orch_store::open(&db.url).await.expect("open");
    fill(&store, n.div_ceil(STAGES.len()).max(workers * 2)).await;
    let held: Arc<Vec<std::sync::Mutex<Option<Job>>>> =
        Arc::new((0..workers).map(|_| std::sync::Mutex::new(None)).collect());
    let s = store.clone();
    let out = run_workers(workers, n, move |w| {
        let (s, held) = (s.clone(), held.clone());
        async move {
            let node = format!("node-{w}");
            let mine = held[w].lock().ok().and_then(|mut h| h.take());
            let job = match mine {
                Some(job) => job,
                None => match s.claim_jobs(&node, 1, T0, TTL).await.expect("claim").pop() {
                    Some(job) => job,
                    None => return Some(0),
                },
            };
            match commit_for(&*s, &job, Some(&node)).await {
                CommitOutcome::Applied { enqueued } => {
                    if let Some(id) = enqueued {
                        let pos = STAGES.iter().position(|st| *st == job.stage.as_str()).unwrap_or(0);
                        let stage = StageName::new(STAGES[pos + 1]);
                        let claim = ClaimNext { node: node.clone(), lease_ttl: TTL };
                        let next = claim.claimed_job(id, &job.item, &stage, 1, T0);
                        if let Ok(mut h) = held[w].lock() {
                            *h = Some(next);
                        }
                    }
                    Some(1)
                }
                other => panic!("commit: {other:?}"),
            }
        }
    })
    .await;
    drop(store);
    db.drop_db().await;
    out
}

async fn bench_commits(backend: &str, workers: usize, n: usize) -> (usize, Duration) {
    let db = Db::new(backend).await;
    let store = orch_store::open(&db.url).await.expect("open");
    fill(&store, n).await;
    let mut claimed = Vec::with_capacity(n);
    while claimed.len() < n {
        let batch = store.claim_jobs("node", 500, T0, TTL).await.expect("claim");
        if batch.is_empty() {
            break;
        }
        claimed.extend(batch);
    }
    let queue = Arc::new(std::sync::Mutex::new(claimed));
    let s = store.clone();
    let out = run_workers(workers, n, move |_| {
        let (s, queue) = (s.clone(), queue.clone());
        async move {
            let job = queue.lock().ok().and_then(|mut q| q.pop());
            let job = job?;
            match commit_for(&*s, &job, None).await {
                CommitOutcome::Applied { .. } => Some(1),
                other => panic!("commit: {other:?}"),
            }
        }
    })
    .await;
    drop(store);
    db.drop_db().await;
    out
}

/// The hardware's reference: one connection committing `UPDATE t SET n = n + 1` in
/// autocommit for `secs` (SQLite in WAL with synchronous=FULL, like the store; one
/// connection per row for PostgreSQL's multi-connection figure).
async fn bench_raw(backend: &str, connections: usize, secs: u64) -> (usize, Duration) {
    let db = Db::new(backend).await;
    let setup = ["CREATE TABLE t (id INTEGER PRIMARY KEY, n BIGINT NOT NULL)", "INSERT INTO t VALUES (1, 0)"];
    let deadline = Duration::from_secs(secs);
    let count = Arc::new(AtomicUsize::new(0));
    let start;
    if let Some(path) = db.url.strip_prefix("sqlite://") {
        let c = rusqlite::Connection::open(path).expect("open");
        c.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(())).expect("wal");
        c.execute_batch("PRAGMA synchronous = FULL").expect("full");
        for q in setup {
            c.execute(q, []).expect("setup");
        }
        start = Instant::now();
        while start.elapsed() < deadline {
            c.prepare_cached("UPDATE t SET n = n + 1 WHERE id = 1").and_then(|mut s| s.execute([])).expect("update");
            count.fetch_add(1, Ordering::Relaxed);
        }
    } else {
        let mut c = sqlx::PgConnection::connect(&db.url).await.expect("connect");
        sqlx::query("CREATE TABLE t (id INTEGER PRIMARY KEY, n BIGINT NOT NULL)").execute(&mut c).await.expect("setup");
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO t SELECT g, 0 FROM generate_series(1, {}) g",
            connections.max(1)
        )))
        .execute(&mut c)
        .await
        .expect("setup");
        start = Instant::now();
        let mut set = JoinSet::new();
        for i in 0..connections {
            let (url, count) = (db.url.clone(), count.clone());
            // Each connection updates its own row, so they contend only on commits.
            set.spawn(async move {
                let mut c = sqlx::PgConnection::connect(&url).await.expect("connect");
                let id = i64::try_from(i + 1).unwrap_or(1);
                while start.elapsed() < deadline {
                    sqlx::query("UPDATE t SET n = n + 1 WHERE id = $1").bind(id).execute(&mut c).await.expect("update");
                    count.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        set.join_all().await;
    }
    let elapsed = start.elapsed();
    db.drop_db().await;
    (count.load(Ordering::Relaxed), elapsed)
}

/// The driver's floor: one connection running `SELECT 1` for `secs` (rusqlite in
/// the caller's thread for SQLite, as the store's writer does; sqlx over loopback
/// for PostgreSQL).
async fn bench_roundtrip(backend: &str, secs: u64) -> (usize, Duration) {
    let db = Db::new(backend).await;
    let deadline = Duration::from_secs(secs);
    let mut count = 0;
    let start = Instant::now();
    if let Some(path) = db.url.strip_prefix("sqlite://") {
        let c = rusqlite::Connection::open(path).expect("open");
        while start.elapsed() < deadline {
            c.prepare_cached("SELECT 1").and_then(|mut s| s.query_row([], |r| r.get::<_, i64>(0))).expect("select");
            count += 1;
        }
    } else {
        let mut c = sqlx::PgConnection::connect(&db.url).await.expect("connect");
        while start.elapsed() < deadline {
            sqlx::query("SELECT 1").execute(&mut c).await.expect("select");
            count += 1;
        }
    }
    let took = start.elapsed();
    db.drop_db().await;
    (count, took)
}

/// p50 and p99 of `runs` calls of `f`, in milliseconds.
async fn latency<F, Fut>(runs: usize, mut f: F) -> (f64, f64)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut took: Vec<Duration> = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = Instant::now();
        f().await;
        took.push(start.elapsed());
    }
    took.sort();
    let at = |q: f64| took[((took.len() as f64 * q) as usize).min(took.len() - 1)].as_secs_f64() * 1000.0;
    (at(0.50), at(0.99))
}

/// `queue_stats` and one reaper pass (the three tier queries) over `n` items.
async fn bench_views(backend: &str, n: usize, runs: usize) {
    let db = Db::new(backend).await;
    drop(orch_store::open(&db.url).await.expect("open")); // migrate
    orch_test_support::bulk_load_items(&db.url, n).await;
    let store = orch_store::open(&db.url).await.expect("open");
    let now = Timestamp::from_millis(T0.as_millis() + 60_000);
    let (p50, p99) = latency(runs, || async {
        let stats = store.queue_stats().await.expect("queue_stats");
        assert_eq!(stats.active_jobs.len(), n / 100);
    })
    .await;
    println!("| {backend:<8} | queue_stats, {n} items               | p50 {p50:>6.2} ms | p99 {p99:>6.2} ms |");
    let (p50, p99) = latency(runs, || async {
        let expired = store.expired_running(now, 100).await.expect("tier 1");
        store.stale_finishing(now, 100).await.expect("tier 2");
        store.overdue(now, 100).await.expect("tier 3");
        assert_eq!(expired.len(), 100.min(n / 100));
    })
    .await;
    println!("| {backend:<8} | reaper pass (3 tiers), {n} items     | p50 {p50:>6.2} ms | p99 {p99:>6.2} ms |");
    drop(store);
    db.drop_db().await;
}

fn row(backend: &str, case: &str, workers: usize, (ops, took): (usize, Duration)) {
    let rate = ops as f64 / took.as_secs_f64();
    println!("| {backend:<8} | {case:<34} | {workers:>7} | {ops:>6} | {:>7.2} | {rate:>9.0} |", took.as_secs_f64());
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    // `cargo bench` passes `--bench`; any other argument is a filter on the case name.
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with("--"));
    let n = env_usize("ORCH_BENCH_JOBS", 2000);
    let raw_secs = u64::try_from(env_usize("ORCH_BENCH_RAW_SECS", 2)).unwrap_or(2);
    let workers: Vec<usize> = std::env::var("ORCH_BENCH_WORKERS")
        .unwrap_or_else(|_| "1,16,64".into())
        .split(',')
        .filter_map(|w| w.trim().parse().ok())
        .collect();
    let backends: Vec<String> = std::env::var("ORCH_BENCH_BACKENDS")
        .unwrap_or_else(|_| "sqlite,postgres".into())
        .split(',')
        .map(|s| s.trim().to_owned())
        .collect();
    // A comma-separated list of words; a case runs if its name contains one.
    let wanted = |case: &str| filter.as_deref().is_none_or(|f| f.split(',').any(|w| case.contains(w)));
    println!("jobs per case: {n}");
    println!("| backend  | case                               | workers |    ops |    secs |     ops/s |");
    println!("|----------|------------------------------------|--------:|-------:|--------:|----------:|");
    for backend in &backends {
        let b = backend.as_str();
        if wanted("raw") {
            let label = if b == "sqlite" { "raw 1-row commit (WAL, FULL)" } else { "raw 1-row commit" };
            row(b, label, 1, bench_raw(b, 1, raw_secs).await);
            if b == "postgres" {
                row(b, "raw 1-row commit", 16, bench_raw(b, 16, raw_secs).await);
            }
        }
        if wanted("roundtrip") {
            row(b, "driver round trip (SELECT 1)", 1, bench_roundtrip(b, raw_secs).await);
        }
        for &w in &workers {
            if wanted("claim") {
                row(b, "claim (1 job per call)", w, bench_claims(b, w, n).await);
            }
            if wanted("transition") {
                row(b, "stage transition (4 writes)", w, bench_transitions(b, w, n).await);
            }
            if wanted("handoff") {
                row(b, "stage hand-off (1 write)", w, bench_handoffs(b, w, n).await);
            }
            if wanted("commit") {
                row(b, "commit_transition alone", w, bench_commits(b, w, n).await);
            }
        }
    }
    if wanted("views") {
        let items = env_usize("ORCH_BENCH_ITEMS", 100_000);
        println!();
        println!("| backend  | view                                  | latency        |                |");
        println!("|----------|---------------------------------------|----------------|----------------|");
        for backend in &backends {
            bench_views(backend, items, 50).await;
        }
    }
}
