//! Shared harness for the engine tests: a temporary folder with shell-script agents
//! and gates, a config with sub-second timings, a real store (SQLite file by
//! default), a `ManualClock`, and helpers that wait on a condition with a deadline.

#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use orch_core::config::Config;
use orch_core::{ItemKey, ItemKind, ItemState, ItemStatus, KeyPrefix, Timestamp};
use orch_engine::{ManualClock, Node, NodeOptions};
use orch_store::{Event, Item, Job, NewItem, Store};

/// A pass verdict written by an agent script.
pub const PASS: &str = r#"printf '{"verdict":"pass","summary":"ok"}' > "$ORCH_VERDICT_FILE""#;

pub struct Harness {
    pub dir: tempfile::TempDir,
    pub store: Arc<dyn Store>,
    pub config: Arc<Config>,
    pub clock: ManualClock,
    pub url: String,
    /// The PostgreSQL database this harness created, dropped with it.
    pub pg_db: Option<String>,
}

impl Drop for Harness {
    fn drop(&mut self) {
        let Some(name) = self.pg_db.take() else { return };
        // Drop may run while a panic unwinds and outside the test's runtime: use a
        // thread with a small runtime of its own.
        let _ = std::thread::spawn(move || {
            use sqlx::Connection;
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
            rt.block_on(async move {
                if let Ok(mut conn) = sqlx::PgConnection::connect(&pg_admin_url()).await {
                    let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                    let _ = sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut conn).await;
                }
            });
        })
        .join();
    }
}

fn pg_admin_url() -> String {
    std::env::var("ORCH_TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// Writes an executable shell script at `dir/name`.
pub fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// The base config: two tracks (quick has development → testing → deploy-staging →
/// deploy), agents for every role running `agents/<role>.sh`, sub-second reaper
/// timings, plus `extra` appended (edges, gates, overrides of agents).
pub fn config_text(extra: &str, reaper: &str) -> String {
    format!(
        r#"
[store]
url = "sqlite://orch.db"

[node]
id = "node-a"
max_concurrent_jobs = 8
data_dir = "data"

[reaper]
{reaper}

[[repos]]
name = "shop"
key = "SHOP"
path = "."

[agents.analyst]
command = ["./agents/analyst.sh"]
timeout_s = 20
[agents.architect]
command = ["./agents/architect.sh"]
timeout_s = 20
[agents.developer]
command = ["./agents/developer.sh"]
timeout_s = 20
[agents.tester]
command = ["./agents/tester.sh"]
timeout_s = 20
[agents.deployer]
command = ["./agents/deployer.sh"]
timeout_s = 20

{extra}
"#
    )
}

pub const FAST_REAPER: &str =
    "interval_s = 0.2\nfinalize_grace_s = 1\nmax_running_s = 60\nlease_ttl_s = 1\nheartbeat_s = 0.05\n";

impl Harness {
    /// A harness whose agents all pass, with `extra` config appended.
    pub async fn new(extra: &str) -> Self {
        Self::with_reaper(extra, FAST_REAPER).await
    }

    pub async fn with_reaper(extra: &str, reaper: &str) -> Self {
        Self::from_text(config_text(extra, reaper)).await
    }

    /// A harness on exactly this config text, with a fresh PostgreSQL database
    /// (from `ORCH_TEST_DATABASE_URL`) as its store instead of SQLite.
    pub async fn from_text_pg(text: String) -> Self {
        let url = fresh_pg_database().await;
        let mut h = Self::from_text(text).await;
        h.store = orch_store::open(&url).await.unwrap();
        h.pg_db = url.rsplit_once('/').map(|(_, db)| db.to_owned());
        h.url = url;
        h
    }

    /// A harness on exactly this config text.
    pub async fn from_text(text: String) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("agents")).unwrap();
        for role in ["analyst", "architect", "developer", "tester", "deployer"] {
            script(
                &dir.path().join("agents"),
                &format!("{role}.sh"),
                &format!("echo \"{role} working on $ORCH_ITEM\"\n{PASS}"),
            );
        }
        let path = dir.path().join("orch.toml");
        std::fs::write(&path, &text).unwrap();
        let config = orch_core::config::load(&path, &text, &BTreeMap::new()).unwrap_or_else(|e| panic!("{e}"));
        let url = format!("sqlite://{}", dir.path().join("orch.db").display());
        let store = orch_store::open(&url).await.unwrap();
        let clock = ManualClock::new(Timestamp::from_millis(1_700_000_000_000));
        Self { dir, store, config: Arc::new(config), clock, url, pg_db: None }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Replaces an agent script.
    pub fn agent(&self, role: &str, body: &str) {
        script(&self.path().join("agents"), &format!("{role}.sh"), body);
    }

    pub fn node_opts(&self, id: &str) -> NodeOptions {
        let mut o = NodeOptions::new(id, self.path().join("data"));
        o.run_reaper = false;
        o.poll_interval = Duration::from_millis(50);
        o.drain = Duration::from_secs(5);
        o
    }

    /// A node on this harness's store and clock (not yet running).
    pub fn node(&self, id: &str) -> Node {
        Node::new(self.store.clone(), self.config.clone(), Arc::new(self.clock.clone()), self.node_opts(id))
    }

    /// Starts `node.run()` in the background.
    pub fn start(&self, node: &Node) -> tokio::task::JoinHandle<()> {
        let n = node.clone();
        tokio::spawn(async move { n.run().await.unwrap() })
    }

    pub async fn add_item(&self, kind: ItemKind) -> ItemKey {
        let track = self.config.repo("shop").unwrap().track_for(kind).unwrap().clone();
        let first = self.config.first_stage(&track).unwrap().clone();
        let new = NewItem {
            repo: "shop".into(),
            prefix: KeyPrefix::new("SHOP").unwrap(),
            kind,
            title: "Fix the checkout".into(),
            body: "It breaks on empty carts.".into(),
            state: ItemState::new(track, first),
        };
        self.store.create_item(new, self.clock.now_ts()).await.unwrap().key
    }

    pub async fn item(&self, key: &ItemKey) -> Item {
        self.store.get_item(key).await.unwrap().unwrap()
    }

    pub async fn jobs(&self, key: &ItemKey) -> Vec<Job> {
        self.store.jobs_for_item(key).await.unwrap()
    }

    pub async fn events(&self, key: &ItemKey) -> Vec<Event> {
        self.store.events_for_item(key).await.unwrap()
    }

    pub async fn kinds(&self, key: &ItemKey) -> Vec<String> {
        self.events(key).await.into_iter().map(|e| e.kind).collect()
    }

    /// Waits until the item reaches `status` (deadline 30 s), returning it. On
    /// timeout the item, its jobs and its events are printed to show where it stuck.
    pub async fn wait_status(&self, key: &ItemKey, status: ItemStatus) -> Item {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let item = self.item(key).await;
            if item.status == status {
                return item;
            }
            if tokio::time::Instant::now() > deadline {
                let jobs = self.jobs(key).await;
                let events: Vec<String> = self
                    .events(key)
                    .await
                    .iter()
                    .map(|e| {
                        format!(
                            "{} {} {:?}->{:?} epoch={:?} job={:?} {:?}",
                            e.seq, e.kind, e.from, e.to, e.epoch, e.job, e.reason
                        )
                    })
                    .collect();
                panic!(
                    "timed out waiting for {key} to be {status}: item {item:#?}\njobs {jobs:#?}\nevents {events:#?}"
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until a job of the item satisfies `pred`.
    pub async fn wait_job(&self, key: &ItemKey, what: &str, pred: impl Fn(&Job) -> bool) -> Job {
        let store = self.store.clone();
        let k = key.clone();
        let pred = &pred;
        wait_for(what, || {
            let store = store.clone();
            let k = k.clone();
            async move { store.jobs_for_item(&k).await.unwrap().into_iter().find(|j| pred(j)) }
        })
        .await
    }

    /// The audit over every event in the store must find nothing, both over the
    /// whole log at once and streamed item by item as `orch audit` does. Nodes may
    /// still be appending (the chaos test audits mid-run), so the streamed audit,
    /// which reads later, must have seen at least every event the whole-log read did.
    pub async fn assert_audit_clean(&self) {
        let events = self.store.events_since(0, 1_000_000).await.unwrap();
        let breaches = orch_engine::audit::audit(&self.config, &events);
        assert!(breaches.is_empty(), "audit breaches: {breaches:#?}");
        let report = orch_engine::audit::audit_store(&*self.store, &self.config).await.unwrap();
        assert!(report.is_clean(), "streamed audit breaches: {:#?}", report.breaches);
        assert!(
            report.events_checked >= events.len() as u64,
            "the streamed audit checked {} events, fewer than the {} already in the log",
            report.events_checked,
            events.len()
        );
    }
}

pub trait NowTs {
    fn now_ts(&self) -> Timestamp;
}

impl NowTs for ManualClock {
    fn now_ts(&self) -> Timestamp {
        orch_engine::Clock::now(self)
    }
}

/// Polls `check` until it yields `Some`, failing the test after 30 s.
pub async fn wait_for<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until a file exists (an agent or gate signalling it got somewhere).
pub async fn wait_file(path: &Path) {
    let p = path.to_path_buf();
    wait_for(&format!("file {}", p.display()), || {
        let p = p.clone();
        async move { p.exists().then_some(()) }
    })
    .await
}

/// Whether a process exists and is not a zombie.
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// A node running on its own runtime thread, which `crash` drops mid-flight: no
/// more heartbeats, no cleanup, exactly what a dead process leaves behind (its
/// child processes are left to the test, as a dead machine's would be gone).
pub struct CrashableNode {
    kill: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl CrashableNode {
    pub fn start(h: &Harness, id: &str) -> Self {
        Self::start_with(h, h.node_opts(id), Arc::new(h.clock.clone()))
    }

    /// A node with its own options and clock (the chaos test runs the reaper on
    /// its interval against the system clock).
    pub fn start_with(h: &Harness, opts: NodeOptions, clock: Arc<dyn orch_engine::Clock>) -> Self {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let url = h.url.clone();
        let config = h.config.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
            rt.block_on(async move {
                let store = orch_store::open(&url).await.unwrap();
                let node = Node::new(store, config, clock, opts);
                tokio::select! {
                    r = node.run() => r.unwrap(),
                    _ = rx => {}
                }
            });
            rt.shutdown_background();
        });
        Self { kill: Some(tx), thread: Some(thread) }
    }

    /// Stops the node abruptly.
    pub fn crash(mut self) {
        if let Some(tx) = self.kill.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

/// Reads a pid a script wrote into `path` once it is there.
pub async fn read_pid(path: &Path) -> i32 {
    let p = path.to_path_buf();
    wait_for(&format!("pid in {}", p.display()), || {
        let p = p.clone();
        async move { std::fs::read_to_string(&p).ok()?.trim().parse().ok() }
    })
    .await
}

/// Creates an empty database on the test server and returns its URL. Fails the
/// test loudly (naming the URL) when no server answers: these tests never skip.
pub async fn fresh_pg_database() -> String {
    use sqlx::Connection;
    let admin =
        std::env::var("ORCH_TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL is required at ORCH_TEST_DATABASE_URL={admin}: {e}"));
    let name = format!("orch_engine_{}", rand::random::<u64>());
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&mut conn).await.unwrap();
    let base = admin.rsplit_once('/').map(|(b, _)| b.to_owned()).unwrap_or(admin.clone());
    format!("{base}/{name}")
}
