//! Shared harness for the engine tests: a temporary folder with shell-script agents
//! and gates, the base config of `orch-test-support` (sub-second timings), a real
//! store on either backend (a SQLite file, or a fresh PostgreSQL database dropped
//! with the harness), a `ManualClock`, helpers that wait on a condition with a
//! deadline, and `backend_tests!`, which runs each scenario on both backends.

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
use orch_test_support::PgDatabase;
pub use orch_test_support::{FAST_REAPER, config_text};

/// A pass verdict written by an agent script.
pub const PASS: &str = r#"printf '{"verdict":"pass","summary":"ok"}' > "$ORCH_VERDICT_FILE""#;

/// The store a scenario runs on; `backend_tests!` runs each scenario on both.
pub use orch_test_support::Backend;

/// Instantiates each `async fn name(backend: Backend)` scenario twice, as
/// `sqlite::name` and `postgres::name`, so both backends are held to one
/// behaviour (the shape of orch-store's conformance suite). A scenario missing
/// from the list is dead code, which clippy refuses.
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::Backend::Sqlite).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::Backend::Postgres).await;
                }
            )*
        }
    };
}
pub(crate) use backend_tests;

pub struct Harness {
    pub dir: tempfile::TempDir,
    pub store: Arc<dyn Store>,
    pub config: Arc<Config>,
    pub clock: ManualClock,
    /// The store's URL, for nodes that open a store of their own.
    pub url: String,
    /// The PostgreSQL database this harness created, dropped with it (after the
    /// fields above, so the store's pool closes first).
    pub pg: Option<PgDatabase>,
}

/// Writes an executable shell script at `dir/name`.
pub fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

impl Harness {
    /// A harness on `backend` whose agents all pass, with `extra` config appended.
    pub async fn new(backend: Backend, extra: &str) -> Self {
        Self::with_reaper(backend, extra, FAST_REAPER).await
    }

    /// A harness on `backend` with `reaper` as the `[reaper]` body.
    pub async fn with_reaper(backend: Backend, extra: &str, reaper: &str) -> Self {
        Self::from_text(backend, config_text(extra, reaper)).await
    }

    /// A harness on `backend` with exactly this config text. The store is the
    /// harness's own whatever the text's `[store]` says.
    pub async fn from_text(backend: Backend, text: String) -> Self {
        Self::from_text_with_ignore(backend, text, Some("*")).await
    }

    /// As [`Harness::from_text`], with `ignore` as the remote's `.gitignore`
    /// (`None`: every file an agent writes is committed, for scenarios that
    /// check the commits).
    pub async fn from_text_with_ignore(backend: Backend, text: String, ignore: Option<&str>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("agents")).unwrap();
        for role in ["analyst", "architect", "developer", "tester", "deployer"] {
            script(
                &dir.path().join("agents"),
                &format!("{role}.sh"),
                &format!("echo \"{role} working on $ORCH_ITEM\"\n{PASS}"),
            );
        }
        // The repo `path = "."` names: this folder, a clone of a remote beside it.
        // These scenarios test the engine, not git (orch-vcs and the CLI's
        // git_pipeline tests do): the remote ignores every file, so the markers
        // the scenarios' agents write never make two items conflict.
        orch_test_support::origin_with_ignore(dir.path(), ignore);
        let path = dir.path().join("orch.toml");
        std::fs::write(&path, &text).unwrap();
        let config = orch_core::config::load(&path, &text, &BTreeMap::new()).unwrap_or_else(|e| panic!("{e}"));
        let (url, pg) = backend.store_url(dir.path(), "orch_engine");
        let store = orch_store::open(&url).await.unwrap_or_else(|e| panic!("opening {url}: {e}"));
        let clock = ManualClock::new(Timestamp::from_millis(1_700_000_000_000));
        Self { dir, store, config: Arc::new(config), clock, url, pg }
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
