//! Engine benchmark (figures, not assertions): N items through the quick track
//! (four stages, no gates) on SQLite and PostgreSQL at several concurrencies, with
//! an in-process no-op stage (adapter `none`) and with a real agent process
//! (`true`); prints stage transitions/s, queued → agent-started p50/p99, and the
//! process's peak RSS. Then RSS and CPU while supervising 500 sleeping agents.
//!
//! Run: `cargo bench -p orch-engine --bench engine_bench`
//! Env: ORCH_BENCH_ITEMS (default 250), ORCH_BENCH_BACKENDS (default sqlite,postgres),
//! ORCH_BENCH_CASES (default all: comma-separated `agent:c` burst cases such as
//! `none:16,none:256`; set, it also skips the light-load cases), ORCH_BENCH_SLEEPERS
//! (default 500; 0 skips the sleeping-agents case), ORCH_TEST_DATABASE_URL.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use orch_core::{ItemKind, ItemState, ItemStatus, KeyPrefix};
use orch_engine::{Node, NodeOptions, SystemClock};
use orch_store::{ItemFilter, NewItem, Page, Store};
use orch_test_support::PgDatabase;

fn config(dir: &std::path::Path, concurrency: usize, agent: &str) -> orch_core::config::Config {
    let agent_table = match agent {
        "none" => "adapter = \"none\"".to_owned(),
        cmd => format!("command = [{cmd}]\nverdict = \"exit-code\"\ntimeout_s = 600"),
    };
    let mut text = format!(
        "[node]\nid = \"bench\"\nmax_concurrent_jobs = {concurrency}\n[reaper]\ninterval_s = 15\nheartbeat_s = 5\nlease_ttl_s = 30\n\
         [[repos]]\nname = \"shop\"\nkey = \"SHOP\"\npath = \".\"\n"
    );
    for role in ["analyst", "architect", "developer", "tester", "deployer"] {
        text.push_str(&format!("[agents.{role}]\n{agent_table}\n"));
    }
    let path = dir.join("orch.toml");
    orch_core::config::load(&path, &text, &BTreeMap::new()).unwrap_or_else(|e| panic!("{e}"))
}

fn status_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with(field)).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()))
        .unwrap_or(0)
}

fn cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    f.get(11).and_then(|u| u.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0)
}

/// The store for one case, and its PostgreSQL database (dropped at the end of
/// the case) when the backend is PostgreSQL.
async fn open(backend: &str, dir: &std::path::Path) -> (Arc<dyn Store>, Option<PgDatabase>) {
    let (url, db) = if backend == "sqlite" {
        (format!("sqlite://{}", dir.join("bench.db").display()), None)
    } else {
        let db = PgDatabase::create("orch_bench");
        (db.url().to_owned(), Some(db))
    };
    (orch_store::open(&url).await.unwrap(), db)
}

fn pct(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Throughput when `sequential` is false (all items filed at once; queued ->
/// started then includes time spent waiting in the queue). With `sequential`, items
/// are filed one at a time, each after the last is done: light load, where queued
/// -> started is orch's own dispatch latency.
async fn run_case(backend: &str, agent: &str, concurrency: usize, items: usize, sequential: bool) {
    let dir = tempfile::tempdir().unwrap();
    // Every item works on a real repository (a worktree per item, pushes, the merge).
    orch_test_support::origin_with_ignore(dir.path(), Some("*"));
    let config = Arc::new(config(dir.path(), concurrency, agent));
    let (store, _drop_db) = open(backend, dir.path()).await;
    let mut opts = NodeOptions::new("bench", dir.path().join("data"));
    opts.run_reaper = false;
    let node = Node::new(store.clone(), config.clone(), Arc::new(SystemClock), opts);
    let n = node.clone();
    let run = tokio::spawn(async move { n.run().await });

    let track = orch_core::TrackName::from("quick");
    let first = config.first_stage(&track).unwrap().clone();
    let started = Instant::now();
    for _ in 0..items {
        let new = NewItem {
            repo: "shop".into(),
            prefix: KeyPrefix::new("SHOP").unwrap(),
            kind: ItemKind::Bug,
            title: "bench".into(),
            body: String::new(),
            state: ItemState::new(track.clone(), first.clone()),
        };
        let item = store.create_item(new, orch_engine::Clock::now(&SystemClock)).await.unwrap();
        while sequential && store.get_item(&item.key).await.unwrap().is_some_and(|i| i.status != ItemStatus::Done) {
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
    }
    let filter = ItemFilter { status: Some(ItemStatus::Done), ..ItemFilter::default() };
    loop {
        let stats = store.queue_stats().await.unwrap();
        let done = stats.items_by_status.get("done").copied().unwrap_or(0);
        if done as usize >= items {
            break;
        }
        // An item that stops short of done would make the case wait forever.
        let blocked = stats.items_by_status.get("blocked").copied().unwrap_or(0);
        assert_eq!(blocked, 0, "{backend} {agent} c={concurrency}: {blocked} items blocked; see their events");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let elapsed = started.elapsed();
    node.shutdown_token().cancel();
    let _ = run.await;

    let mut latencies = Vec::new();
    let mut offset = 0;
    loop {
        let page = store.list_items(&filter, Page { offset, limit: 500 }).await.unwrap();
        if page.is_empty() {
            break;
        }
        offset += page.len() as u32;
        for item in page {
            for job in store.jobs_for_item(&item.key).await.unwrap() {
                if let Some(s) = job.started_at {
                    latencies.push(s.as_millis() - job.queued_at.as_millis());
                }
            }
        }
    }
    latencies.sort_unstable();
    let transitions = items * 4;
    println!(
        "{backend:<8} {agent:<6} c={concurrency:<4} items={items:<5} {:<10} {:>8.0} transitions/s   queued->started p50 {:>4} ms p99 {:>4} ms   peak RSS {:>6} KiB",
        if sequential { "light-load" } else { "burst" },
        transitions as f64 / elapsed.as_secs_f64(),
        pct(&latencies, 0.5),
        pct(&latencies, 0.99),
        status_kb("VmHWM:"),
    );
}

async fn sleeping_agents(count: usize) {
    let dir = tempfile::tempdir().unwrap();
    orch_test_support::origin_with_ignore(dir.path(), Some("*"));
    let config = Arc::new(config(dir.path(), count, "\"sleep\", \"120\""));
    let (store, _drop_db) = open("sqlite", dir.path()).await;
    let mut opts = NodeOptions::new("bench", dir.path().join("data"));
    opts.run_reaper = false;
    opts.drain = Duration::from_millis(100);
    let node = Node::new(store.clone(), config.clone(), Arc::new(SystemClock), opts);
    let n = node.clone();
    let run = tokio::spawn(async move { n.run().await });
    let track = orch_core::TrackName::from("quick");
    let first = config.first_stage(&track).unwrap().clone();
    for _ in 0..count {
        let new = NewItem {
            repo: "shop".into(),
            prefix: KeyPrefix::new("SHOP").unwrap(),
            kind: ItemKind::Bug,
            title: "sleep".into(),
            body: String::new(),
            state: ItemState::new(track.clone(), first.clone()),
        };
        store.create_item(new, orch_engine::Clock::now(&SystemClock)).await.unwrap();
    }
    loop {
        let running = store.queue_stats().await.unwrap().jobs_by_status.get("running").copied().unwrap_or(0);
        if running as usize >= count {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ticks0 = cpu_ticks();
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let cpu = (cpu_ticks() - ticks0) as f64 / 100.0 / t0.elapsed().as_secs_f64() * 100.0;
    println!(
        "supervising {count} sleeping agents: RSS {} KiB (peak {} KiB), CPU {cpu:.1} % over 3 s (includes this bench's own store polling)",
        status_kb("VmRSS:"),
        status_kb("VmHWM:")
    );
    node.shutdown_token().cancel();
    let _ = run.await;
}

fn main() {
    let items: usize = std::env::var("ORCH_BENCH_ITEMS").ok().and_then(|v| v.parse().ok()).unwrap_or(250);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async {
        println!(
            "orch engine bench: {items} items x 4 stages per case, {} cores",
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );
        let backends = std::env::var("ORCH_BENCH_BACKENDS").unwrap_or_else(|_| "sqlite,postgres".into());
        let cases = std::env::var("ORCH_BENCH_CASES").ok();
        let sleepers: usize = std::env::var("ORCH_BENCH_SLEEPERS").ok().and_then(|v| v.parse().ok()).unwrap_or(500);
        for backend in backends.split(',').filter(|b| !b.is_empty()) {
            match &cases {
                Some(list) => {
                    for case in list.split(',').filter(|c| !c.is_empty()) {
                        let (agent, c) = case
                            .rsplit_once(':')
                            .unwrap_or_else(|| panic!("ORCH_BENCH_CASES: `{case}` is not agent:c"));
                        let agent = if agent == "true" { "\"true\"" } else { agent };
                        let c: usize =
                            c.parse().unwrap_or_else(|_| panic!("ORCH_BENCH_CASES: `{case}`: c is not a number"));
                        run_case(backend, agent, c, items, false).await;
                    }
                }
                None => {
                    for agent in ["none", "\"true\""] {
                        for c in [1, 16, 256] {
                            run_case(backend, agent, c, items, false).await;
                        }
                        run_case(backend, agent, 16, items.min(50), true).await;
                    }
                }
            }
        }
        if sleepers > 0 {
            sleeping_agents(sleepers).await;
        }
    });
}
