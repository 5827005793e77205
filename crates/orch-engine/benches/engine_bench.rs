//! Engine benchmark (figures, not assertions): N items through the quick track
//! (four stages, no gates) on SQLite and PostgreSQL at several concurrencies, with
//! an in-process no-op stage (adapter `none`) and with a real agent process
//! (`true`); prints stage transitions/s, queued → claimed p50/p99 (the store's
//! `started_at` is stamped by the claim, before the worktree is prepared and the
//! agent spawned), and the process's peak RSS. Three of issue 13's targets get a
//! figure of their own:
//! - **spawn ratio**: before the `true` cases of a backend, the rate at which this
//!   machine spawns `true` and waits for it (tokio::process, c tasks each looping
//!   spawn + wait, items × 4 processes), measured in the same run; each `true`
//!   case then prints its stages/s as a percentage of it (target ≥ 80 %).
//! - **hand-off latency**: a light-load case (items filed one at a time, each after
//!   the last is done) whose agent is this executable re-invoked as a child
//!   (`--orch-bench-handoff-agent DIR`): it appends its CLOCK_REALTIME start and end,
//!   in ns, to `DIR/$ORCH_JOB_ID`. The hand-off of stage k → k+1 is the start of
//!   stage k+1's agent minus the end of stage k's (target p50 < 3 ms, p99 < 10 ms).
//!   The hand-off thus includes the exec of this executable up to `main`. The
//!   directory goes in argv rather than the environment: orch adds its variables
//!   to the node's environment (`process::spawn`), but argv does not depend on it.
//!   Light-load cases also print the store's view (ms resolution): `finished_at`
//!   of stage k (recorded after the post-run git work) to the claim of stage k+1
//!   (before its worktree is prepared), a part of the hand-off only.
//! - **sleeping agents, node alone**: the node runs in a child process (this
//!   executable with `ORCH_ENGINE_BENCH_NODE` set) while this process files the
//!   items, waits until the store says they run and the child has as many `sleep`
//!   children (a claimed job is `running` before its agent is spawned), leaves it
//!   2 s to settle, then stops polling and samples the child's RSS, peak RSS,
//!   threads and CPU over 10 s from /proc (target < 32 MiB, < 2 % of one core;
//!   CPU is in clock ticks, 0.1 % of a core over 10 s each). The agents
//!   (`sleep 120`) are the child's children; their RSS is not counted.
//!
//! Every stage works on a real git repository (a worktree per item, pushes, the
//! merge), so every figure includes orch's git work. After every case the bench
//! audits the case's store as `orch audit` does and fails on any breach: a figure
//! bought by breaking a guarantee is not a figure.
//!
//! Run: `cargo bench -p orch-engine --bench engine_bench`
//! Env:
//! - `ORCH_BENCH_ITEMS` (default 250): items per burst case.
//! - `ORCH_BENCH_BACKENDS` (default `sqlite,postgres`).
//! - `ORCH_BENCH_CASES` (default all): comma-separated cases, `agent:c` bursts such as
//!   `none:16,true:256`, or `agent:light` for the light-load case of that agent
//!   (c = 16, at most 50 items). Set, only those cases run (the hand-off and
//!   sleeping-agents cases are governed by their own knobs below).
//! - `ORCH_BENCH_HANDOFF_ITEMS` (default 50; 0 skips): items of the hand-off case,
//!   run on each backend.
//! - `ORCH_BENCH_SLEEPERS` (default 500; 0 skips the sleeping-agents case, which
//!   runs once, on SQLite).
//! - `ORCH_TEST_DATABASE_URL`: the PostgreSQL server.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use orch_core::{ItemKind, ItemState, ItemStatus, KeyPrefix};
use orch_engine::{Node, NodeOptions, SystemClock};
use orch_store::{ItemFilter, Job, NewItem, Page, Store};
use orch_test_support::PgDatabase;

/// argv[1] of the hand-off agent: argv[2] is the directory its timestamps go to.
const HANDOFF_AGENT_ARG: &str = "--orch-bench-handoff-agent";
/// Set (to the store's URL), this executable runs the sleeping-agents node.
const NODE_CHILD_URL: &str = "ORCH_ENGINE_BENCH_NODE";
/// The node child's folder (the repository, `orch.toml`'s place, the data dir).
const NODE_CHILD_DIR: &str = "ORCH_ENGINE_BENCH_NODE_DIR";
/// The node child's `max_concurrent_jobs`: the number of sleepers.
const NODE_CHILD_JOBS: &str = "ORCH_ENGINE_BENCH_NODE_JOBS";
/// The sleeping agents' command: outlives the 10 s window by far.
const SLEEP_AGENT: &str = "\"sleep\", \"120\"";
/// How long the node child is left alone after its last agent started.
const SETTLE: Duration = Duration::from_secs(2);
/// How long the node child's CPU is sampled.
const SLEEP_WINDOW: Duration = Duration::from_secs(10);
/// Assumed clock ticks a second of /proc/PID/stat (the usual `CLK_TCK`).
const TICKS_PER_S: f64 = 100.0;

/// An agent of a case.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Agent {
    /// Adapter `none`: no process.
    None,
    /// `true`: the cheapest real process.
    True,
    /// This executable as the hand-off agent: records its start and end.
    Handoff,
}

impl Agent {
    fn parse(name: &str) -> Self {
        match name {
            "none" => Self::None,
            "true" => Self::True,
            "handoff" => Self::Handoff,
            other => panic!("ORCH_BENCH_CASES: unknown agent `{other}` (none, true, handoff)"),
        }
    }

    fn label(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::True => "true",
            Self::Handoff => "handoff",
        }
    }
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().map_or(default, |v| v.parse().unwrap_or_else(|_| panic!("{name}=`{v}` is not a number")))
}

/// CLOCK_REALTIME in ns: the hand-off agent's clock, comparable across processes.
fn realtime_ns() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// A TOML string for `s` (the paths here have no control characters).
fn toml_str(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn config(dir: &Path, concurrency: usize, agent_command: Option<&str>) -> orch_core::config::Config {
    let agent_table = match agent_command {
        None => "adapter = \"none\"".to_owned(),
        Some(cmd) => format!("command = [{cmd}]\nverdict = \"exit-code\"\ntimeout_s = 600"),
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

/// A `/proc/PID/status` field (`VmRSS:`, `Threads:`), its first number.
fn status_field(pid: &str, field: &str) -> u64 {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or_else(|| panic!("{path}: no {field}"))
}

/// User + system CPU ticks of process `pid` so far (every thread).
fn cpu_ticks(pid: &str) -> u64 {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|t| t.parse::<u64>().ok()).unwrap_or_else(|| panic!("{path}: field {i}"));
    tick(11) + tick(12)
}

/// How many processes whose parent is `pid` run `comm` (from /proc/*/stat).
fn children_running(pid: u32, comm: &str) -> usize {
    let entries = std::fs::read_dir("/proc").expect("read /proc");
    entries
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("stat")).ok())
        .filter(|stat| {
            let Some((head, rest)) = stat.rsplit_once(')') else { return false };
            let ppid = rest.split_whitespace().nth(1).and_then(|p| p.parse::<u32>().ok());
            head.split_once('(').is_some_and(|(_, c)| c == comm) && ppid == Some(pid)
        })
        .count()
}

/// The store for one case, and its PostgreSQL database (dropped at the end of
/// the case) when the backend is PostgreSQL.
async fn open(backend: &str, dir: &Path) -> (Arc<dyn Store>, String, Option<PgDatabase>) {
    let (url, db) = if backend == "sqlite" {
        (format!("sqlite://{}", dir.join("bench.db").display()), None)
    } else {
        let db = PgDatabase::create("orch_bench");
        (db.url().to_owned(), Some(db))
    };
    let store = orch_store::open(&url).await.unwrap_or_else(|e| panic!("open the {backend} store {url}: {e}"));
    (store, url, db)
}

fn pct(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn new_item(config: &orch_core::config::Config, title: &str) -> NewItem {
    let track = orch_core::TrackName::from("quick");
    let first = config.first_stage(&track).unwrap_or_else(|| panic!("the config has no track `quick`")).clone();
    NewItem {
        repo: "shop".into(),
        prefix: KeyPrefix::new("SHOP").unwrap(),
        kind: ItemKind::Bug,
        title: title.into(),
        body: String::new(),
        state: ItemState::new(track, first),
    }
}

/// Every done item's jobs, each item's ordered by id (the order its stages ran).
async fn done_items_jobs(store: &dyn Store) -> Vec<Vec<Job>> {
    let filter = ItemFilter { status: Some(ItemStatus::Done), ..ItemFilter::default() };
    let mut out = Vec::new();
    let mut offset = 0;
    loop {
        let page = store.list_items(&filter, Page { offset, limit: 500 }).await.expect("list the done items");
        if page.is_empty() {
            return out;
        }
        offset += page.len() as u32;
        for item in page {
            let mut jobs = store.jobs_for_item(&item.key).await.unwrap_or_else(|e| panic!("jobs of {}: {e}", item.key));
            jobs.sort_by_key(|j| j.id.0);
            out.push(jobs);
        }
    }
}

/// `what: n=…, p50 …, p99 …, max …` of `values` in ns, printed in ms.
fn print_ns_spread(what: &str, mut values: Vec<i64>) {
    values.sort_unstable();
    let ms = |ns: i64| ns as f64 / 1e6;
    println!(
        "    {what}: n={} p50 {:.3} ms p99 {:.3} ms max {:.3} ms",
        values.len(),
        ms(pct(&values, 0.5)),
        ms(pct(&values, 0.99)),
        ms(values.last().copied().unwrap_or(0)),
    );
}

/// The hand-off agent's record of job `id`: (start, end) in ns.
fn handoff_record(dir: &Path, id: i64) -> (i64, i64) {
    let path = dir.join(id.to_string());
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("hand-off record {}: {e}", path.display()));
    let ns: Vec<i64> = text
        .lines()
        .map(|l| l.parse().unwrap_or_else(|_| panic!("hand-off record {}: `{l}` is not ns", path.display())))
        .collect();
    match ns.as_slice() {
        [start, end] => (*start, *end),
        _ => panic!("hand-off record {}: {} lines, not 2 (a job ran twice?)", path.display(), ns.len()),
    }
}

/// The rate (processes/s) at which this machine spawns `true` and waits for it:
/// `c` tasks, each looping spawn + wait, `n` processes in all. What a stage that
/// runs `true` costs at the least, measured next to the cases it is compared with.
async fn spawn_reference(c: usize, n: usize) -> f64 {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..c {
        let next = Arc::clone(&next);
        tasks.spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < n {
                let status = tokio::process::Command::new("true")
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .await
                    .expect("bare spawn-and-wait: spawn `true`");
                assert!(status.success(), "bare spawn-and-wait: `true` ended {status}");
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("bare spawn-and-wait task");
    }
    n as f64 / started.elapsed().as_secs_f64()
}

/// Throughput when `sequential` is false (all items filed at once; queued ->
/// started then includes time spent waiting in the queue). With `sequential`, items
/// are filed one at a time, each after the last is done: light load, where queued
/// -> started is orch's own dispatch latency, and the hand-offs are printed.
/// Returns the case's stages/s.
async fn run_case(backend: &str, agent: Agent, concurrency: usize, items: usize, sequential: bool) -> f64 {
    let dir = tempfile::tempdir().expect("a temporary folder for the case");
    // Every item works on a real repository (a worktree per item, pushes, the merge).
    orch_test_support::origin_with_ignore(dir.path(), Some("*"));
    let handoff_dir = dir.path().join("handoff");
    let command = match agent {
        Agent::None => None,
        Agent::True => Some("\"true\"".to_owned()),
        Agent::Handoff => {
            std::fs::create_dir(&handoff_dir).unwrap_or_else(|e| panic!("create {}: {e}", handoff_dir.display()));
            let exe = std::env::current_exe().expect("the bench's own executable");
            Some(
                [exe.to_str().expect("a UTF-8 executable path"), HANDOFF_AGENT_ARG, handoff_dir.to_str().unwrap()]
                    .map(toml_str)
                    .join(", "),
            )
        }
    };
    let config = Arc::new(config(dir.path(), concurrency, command.as_deref()));
    let (store, _url, _drop_db) = open(backend, dir.path()).await;
    let mut opts = NodeOptions::new("bench", dir.path().join("data"));
    opts.run_reaper = false;
    let node = Node::new(store.clone(), config.clone(), Arc::new(SystemClock), opts);
    let n = node.clone();
    let run = tokio::spawn(async move { n.run().await });

    let started = Instant::now();
    for _ in 0..items {
        let item = store
            .create_item(new_item(&config, "bench"), orch_engine::Clock::now(&SystemClock))
            .await
            .expect("file an item");
        while sequential
            && store.get_item(&item.key).await.expect("read the item").is_some_and(|i| i.status != ItemStatus::Done)
        {
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
    }
    loop {
        let stats = store.queue_stats().await.expect("queue stats");
        let done = stats.items_by_status.get("done").copied().unwrap_or(0);
        if done as usize >= items {
            break;
        }
        // An item that stops short of done would make the case wait forever.
        let blocked = stats.items_by_status.get("blocked").copied().unwrap_or(0);
        assert_eq!(
            blocked,
            0,
            "{backend} {} c={concurrency}: {blocked} items blocked; see their events",
            agent.label()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let elapsed = started.elapsed();
    node.shutdown_token().cancel();
    let _ = run.await;
    // What `orch audit` runs: speed must not have cost a guarantee (I1-I4).
    let audit = orch_engine::audit::audit_store(store.as_ref(), &config).await.expect("audit the case's store");
    assert!(
        audit.is_clean(),
        "{backend} {} c={concurrency}: the audit found {} breaches: {:#?}",
        agent.label(),
        audit.breaches_total,
        audit.breaches
    );

    let items_jobs = done_items_jobs(store.as_ref()).await;
    let mut latencies: Vec<i64> = items_jobs
        .iter()
        .flatten()
        .filter_map(|job| Some(job.started_at?.as_millis() - job.queued_at.as_millis()))
        .collect();
    latencies.sort_unstable();
    let stages_per_s = (items * 4) as f64 / elapsed.as_secs_f64();
    println!(
        "{backend:<8} {:<7} c={concurrency:<4} items={items:<5} {:<10} {:>8.0} transitions/s   queued->claimed p50 {:>4} ms p99 {:>4} ms   peak RSS {:>6} KiB",
        agent.label(),
        if sequential { "light-load" } else { "burst" },
        stages_per_s,
        pct(&latencies, 0.5),
        pct(&latencies, 0.99),
        status_field("self", "VmHWM:"),
    );
    println!(
        "    audit (what `orch audit` runs): {} items, {} events, {} breaches, {} fenced-out notices",
        audit.items_checked, audit.events_checked, audit.breaches_total, audit.notices_total
    );
    if sequential && agent != Agent::None {
        // Stage k's finish as the node recorded it -> stage k+1 claimed (`started_at`).
        let from_store: Vec<i64> = items_jobs
            .iter()
            .flat_map(|jobs| jobs.windows(2))
            .filter_map(|w| Some((w[1].started_at?.as_millis() - w[0].finished_at?.as_millis()) * 1_000_000))
            .collect();
        print_ns_spread("store: finished_at k -> claimed k+1 (ms resolution, part of the hand-off)", from_store);
    }
    if agent == Agent::Handoff {
        let from_agents: Vec<i64> = items_jobs
            .iter()
            .flat_map(|jobs| jobs.windows(2))
            .map(|w| handoff_record(&handoff_dir, w[1].id.0).0 - handoff_record(&handoff_dir, w[0].id.0).1)
            .collect();
        print_ns_spread("hand-off, agent exit -> next agent started (agents' CLOCK_REALTIME)", from_agents);
    }
    stages_per_s
}

/// The node of the sleeping-agents case, alone in this process: opens the store
/// and runs the node until SIGTERM (sent by the parent, or by the kernel when the
/// parent dies).
fn node_child(url: &str) {
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM).expect("node child: set the parent-death signal");
    let dir = PathBuf::from(std::env::var(NODE_CHILD_DIR).expect("node child: ORCH_ENGINE_BENCH_NODE_DIR"));
    let jobs = env_usize(NODE_CHILD_JOBS, 0);
    // The runtime `orch serve` builds (orch-cli's context.rs).
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("node child: the runtime");
    rt.block_on(async {
        let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("node child: listen for SIGTERM");
        let config = Arc::new(config(&dir, jobs, Some(SLEEP_AGENT)));
        let store = orch_store::open(url).await.unwrap_or_else(|e| panic!("node child: open {url}: {e}"));
        let mut opts = NodeOptions::new("bench", dir.join("data"));
        opts.run_reaper = false;
        opts.drain = Duration::from_millis(100);
        let node = Node::new(store, config, Arc::new(SystemClock), opts);
        let stop = node.shutdown_token();
        tokio::spawn(async move {
            sigterm.recv().await;
            stop.cancel();
        });
        node.run().await.unwrap_or_else(|e| panic!("node child: run: {e}"));
    });
}

/// RSS and CPU of a node supervising `count` sleeping agents, the node alone: it
/// runs in a child process, and this one stops polling the store while it samples.
async fn sleeping_agents(count: usize) {
    let dir = tempfile::tempdir().expect("a temporary folder for the sleepers");
    orch_test_support::origin_with_ignore(dir.path(), Some("*"));
    let config = config(dir.path(), count, Some(SLEEP_AGENT));
    // Opened (and migrated) before the child starts, so the child only opens it.
    let (store, url, _drop_db) = open("sqlite", dir.path()).await;
    let exe = std::env::current_exe().expect("the bench's own executable");
    let mut child = std::process::Command::new(exe)
        .env(NODE_CHILD_URL, &url)
        .env(NODE_CHILD_DIR, dir.path())
        .env(NODE_CHILD_JOBS, count.to_string())
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn the node child");
    let pid = child.id().to_string();
    for _ in 0..count {
        store
            .create_item(new_item(&config, "sleep"), orch_engine::Clock::now(&SystemClock))
            .await
            .expect("file an item");
    }
    let filed = Instant::now();
    // A claimed job is `running` in the store before its worktree is prepared and
    // its agent spawned: wait for the store, then for the `sleep` processes.
    loop {
        let running = store.queue_stats().await.expect("queue stats").jobs_by_status.get("running").copied();
        if running.unwrap_or(0) as usize >= count {
            break;
        }
        if let Some(status) = child.try_wait().expect("poll the node child") {
            panic!("the node child ended ({status}) before its {count} jobs were claimed");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    while children_running(child.id(), "sleep") < count {
        if let Some(status) = child.try_wait().expect("poll the node child") {
            panic!("the node child ended ({status}) before its {count} agents were running");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let ramp = filed.elapsed();
    // What follows a spawn (`record_started`, the log) settles well within this.
    std::thread::sleep(SETTLE);
    // From here on this process does nothing but read the child's /proc files.
    let ticks0 = cpu_ticks(&pid);
    let t0 = Instant::now();
    std::thread::sleep(SLEEP_WINDOW);
    let ticks = cpu_ticks(&pid) - ticks0;
    let window = t0.elapsed().as_secs_f64();
    let (rss, hwm, threads) =
        (status_field(&pid, "VmRSS:"), status_field(&pid, "VmHWM:"), status_field(&pid, "Threads:"));
    let cpu = ticks as f64 / TICKS_PER_S / window * 100.0;
    println!(
        "node alone (pid {pid}) supervising {count} sleeping agents (all {count} agents started {:.1} s after the last item was filed): \
         RSS {rss} KiB = {:.1} MiB (target < 32 MiB), peak {hwm} KiB = {:.1} MiB, \
         CPU {cpu:.2} % of one core over {window:.1} s ({ticks} ticks; target < 2 %), {threads} threads",
        ramp.as_secs_f64(),
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0,
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id().try_into().expect("a pid")),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM the node child");
    let status = child.wait().expect("wait for the node child");
    assert!(status.success(), "the node child ended {status}");
}

fn main() {
    // First, so the hand-off agent's start is as early as this process can tell.
    let start_ns = realtime_ns();
    let mut args = std::env::args_os().skip(1);
    if args.next().as_deref() == Some(OsStr::new(HANDOFF_AGENT_ARG)) {
        let dir = PathBuf::from(args.next().expect("hand-off agent: no directory after the flag"));
        let job = std::env::var("ORCH_JOB_ID").expect("hand-off agent: ORCH_JOB_ID is not set");
        let path = dir.join(job);
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("hand-off agent: open {}: {e}", path.display()));
        let end_ns = realtime_ns();
        file.write_all(format!("{start_ns}\n{end_ns}\n").as_bytes())
            .unwrap_or_else(|e| panic!("hand-off agent: write {}: {e}", path.display()));
        std::process::exit(0);
    }
    if let Ok(url) = std::env::var(NODE_CHILD_URL) {
        node_child(&url);
        return;
    }

    let items = env_usize("ORCH_BENCH_ITEMS", 250);
    let handoff_items = env_usize("ORCH_BENCH_HANDOFF_ITEMS", 50);
    let sleepers = env_usize("ORCH_BENCH_SLEEPERS", 500);
    let backends = std::env::var("ORCH_BENCH_BACKENDS").unwrap_or_else(|_| "sqlite,postgres".into());
    // (agent, c, light-load); light-load cases run at most 50 items, at c = 16.
    let cases: Vec<(Agent, usize, bool)> = match std::env::var("ORCH_BENCH_CASES") {
        Ok(list) => list
            .split(',')
            .filter(|c| !c.is_empty())
            .map(|case| {
                let (agent, c) =
                    case.rsplit_once(':').unwrap_or_else(|| panic!("ORCH_BENCH_CASES: `{case}` is not agent:c"));
                if c == "light" {
                    return (Agent::parse(agent), 16, true);
                }
                let c = c.parse().unwrap_or_else(|_| panic!("ORCH_BENCH_CASES: `{case}`: c is not a number"));
                (Agent::parse(agent), c, false)
            })
            .collect(),
        Err(_) => [Agent::None, Agent::True]
            .into_iter()
            .flat_map(|agent| [(agent, 1, false), (agent, 16, false), (agent, 256, false), (agent, 16, true)])
            .collect(),
    };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("the bench's runtime");
    rt.block_on(async {
        println!(
            "orch engine bench: {items} items x 4 stages per burst case, {} cores, load average {}",
            std::thread::available_parallelism().map_or(0, |n| n.get()),
            std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim(),
        );
        for backend in backends.split(',').filter(|b| !b.is_empty()) {
            // Bare spawn-and-wait rates of this backend's `true` cases, by (c, processes),
            // each measured just before the first case that needs it. A light-load case
            // runs one stage at a time, so its reference is c = 1.
            let mut references: BTreeMap<(usize, usize), f64> = BTreeMap::new();
            for &(agent, c, light) in &cases {
                let n = if light { items.min(50) } else { items };
                let shape = if light { (1, n * 4) } else { (c, n * 4) };
                if agent == Agent::True && !references.contains_key(&shape) {
                    let rate = spawn_reference(shape.0, shape.1).await;
                    println!(
                        "{backend:<8} bare spawn+wait `true` c={:<4} processes={:<5} {rate:>8.0} processes/s",
                        shape.0, shape.1
                    );
                    references.insert(shape, rate);
                }
                let stages_per_s = run_case(backend, agent, c, n, light).await;
                if agent == Agent::True {
                    println!(
                        "    spawn ratio: {:.0} % of bare spawn+wait at c={} ({:.0} processes/s)",
                        stages_per_s / references[&shape] * 100.0,
                        shape.0,
                        references[&shape]
                    );
                }
            }
            if handoff_items > 0 {
                run_case(backend, Agent::Handoff, 16, handoff_items, true).await;
            }
        }
        if sleepers > 0 {
            sleeping_agents(sleepers).await;
        }
    });
}
