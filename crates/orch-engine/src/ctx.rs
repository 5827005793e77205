//! What every task of a node shares: the store, the config, the clock (with the
//! node's offset to the store's clock applied), the jobs it owns, the lease
//! deadline it fences itself by, and the supervisor every task is started through.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use orch_core::Timestamp;
use orch_core::config::Config;
use orch_store::{Job, JobId, Store};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, warn};

use crate::clock::Clock;
use crate::contain::{Containment, JobCgroup};
use crate::layout::Layout;
use crate::metrics::Metrics;
use crate::node::NodeOptions;
use crate::{Error, finalize, job};

/// A process tree a job is running now (its agent or one of its gates).
#[derive(Clone, Debug)]
pub(crate) struct RunningProc {
    pub(crate) pgid: i32,
    pub(crate) cgroup: Option<JobCgroup>,
}

impl RunningProc {
    /// Kills the whole tree at once (no TERM grace): used when the node must stop
    /// the work before its lease can be taken over.
    fn kill_now(&self) {
        crate::process::kill_group(self.pgid, nix::sys::signal::Signal::SIGKILL);
        if let Some(cg) = &self.cgroup {
            cg.kill();
        }
    }
}

/// A job this node owns at one epoch.
#[derive(Debug)]
struct Owned {
    /// Cancelled when the lease is lost (taken over, cancelled), the node fences
    /// itself, or the backstop fires.
    lost: CancellationToken,
    /// The process tree running for the job now, if any.
    proc_: Option<RunningProc>,
    /// When the node killed this job's processes because it could not renew its
    /// lease (store time), reported in `job.fenced_out`.
    fenced_at: Option<Timestamp>,
}

/// The jobs this node owns, keyed by (job, epoch): a node may briefly hold a stale
/// epoch and a fresh one of the same job (it took over its own finalizer). The
/// only type that touches the lock, so no caller can hold it across an await.
#[derive(Debug, Default)]
pub(crate) struct OwnedJobs {
    map: Mutex<HashMap<(JobId, i64), Owned>>,
}

impl OwnedJobs {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<(JobId, i64), Owned>> {
        // Every method leaves the map consistent, so a panic elsewhere while the
        // lock was held cannot have broken it: recover rather than poison the node.
        self.map.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Registers `(id, epoch)`; `lost` is the token its work stops on.
    fn insert(&self, id: JobId, epoch: i64, lost: CancellationToken) {
        self.map().insert((id, epoch), Owned { lost, proc_: None, fenced_at: None });
    }

    fn remove(&self, id: JobId, epoch: i64) -> Option<RunningProc> {
        self.map().remove(&(id, epoch)).and_then(|o| o.proc_)
    }

    /// Records (or clears) the process tree running for the job now.
    pub(crate) fn set_proc(&self, id: JobId, epoch: i64, proc_: Option<RunningProc>) {
        if let Some(o) = self.map().get_mut(&(id, epoch)) {
            o.proc_ = proc_;
        }
    }

    /// When the node fenced itself off this job, if it did.
    pub(crate) fn fenced_at(&self, id: JobId, epoch: i64) -> Option<Timestamp> {
        self.map().get(&(id, epoch)).and_then(|o| o.fenced_at)
    }

    /// Marks every held epoch of `id` (or only those older than `below`) as lost.
    pub(crate) fn lose(&self, id: JobId, below: Option<i64>) {
        for ((jid, e), o) in self.map().iter() {
            if *jid == id && below.is_none_or(|b| *e < b) {
                o.lost.cancel();
            }
        }
    }

    /// Marks exactly `(id, epoch)` as lost.
    pub(crate) fn lose_epoch(&self, id: JobId, epoch: i64) {
        if let Some(o) = self.map().get(&(id, epoch)) {
            o.lost.cancel();
        }
    }

    /// Self-fence: kills every owned job's processes at once, stamps when, and
    /// tells every owner to stop. Returns how many jobs were fenced.
    pub(crate) fn fence_all(&self, now: Timestamp) -> usize {
        let mut map = self.map();
        for o in map.values_mut() {
            if let Some(p) = &o.proc_ {
                p.kill_now();
            }
            o.fenced_at.get_or_insert(now);
            o.lost.cancel();
        }
        map.len()
    }

    pub(crate) fn len(&self) -> usize {
        self.map().len()
    }

    pub(crate) fn keys(&self) -> Vec<(JobId, i64)> {
        self.map().keys().copied().collect()
    }

    pub(crate) fn contains_job(&self, id: JobId) -> bool {
        self.map().keys().any(|(j, _)| *j == id)
    }
}

/// The node's lease clock: when its leases were last confirmed, and so the local
/// deadline by which it must have stopped all owned work (DESIGN §7).
#[derive(Debug)]
pub(crate) struct LeaseDeadline {
    /// When the request of the last successful renewal was sent: every owned
    /// lease runs at least `lease_ttl` from there.
    anchor: Mutex<tokio::time::Instant>,
    /// How long before the lease's expiry the node stops its work: the time a
    /// SIGKILL takes, with room to spare.
    margin: Duration,
    ttl: Duration,
    /// Woken when the anchor moves, so the watchdog re-arms.
    pub(crate) moved: tokio::sync::Notify,
}

impl LeaseDeadline {
    fn new(ttl: Duration) -> Self {
        Self {
            anchor: Mutex::new(tokio::time::Instant::now()),
            margin: ttl.mul_f64(0.2),
            ttl,
            moved: tokio::sync::Notify::new(),
        }
    }

    /// Records a renewal whose request was sent at `sent`.
    pub(crate) fn renewed(&self, sent: tokio::time::Instant) {
        let mut a = self.anchor.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if sent > *a {
            *a = sent;
        }
        drop(a);
        self.moved.notify_waiters();
    }

    /// Records a claim whose request was sent at `sent`: the new job's lease runs
    /// from there, so the deadline may only move earlier, never later.
    pub(crate) fn claimed(&self, sent: tokio::time::Instant) {
        let mut a = self.anchor.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if sent < *a {
            *a = sent;
        }
    }

    /// The instant by which every owned process must be dead unless a renewal
    /// lands first.
    pub(crate) fn deadline(&self) -> tokio::time::Instant {
        *self.anchor.lock().unwrap_or_else(std::sync::PoisonError::into_inner) + self.ttl - self.margin
    }
}

/// A name no other start of any node shares: the process, the moment, and a
/// counter for the nodes one process starts (tests start several).
fn new_incarnation() -> String {
    static STARTED: AtomicI64 = AtomicI64::new(0);
    let n = STARTED.fetch_add(1, Ordering::Relaxed);
    format!("{}-{}-{n}", std::process::id(), crate::clock::system_now().as_millis())
}

/// The (job, epoch) pairs Tier-2 has deferred to, so each gets one event.
#[derive(Debug, Default)]
pub(crate) struct DeferredSet(Mutex<std::collections::HashSet<(JobId, i64)>>);

impl DeferredSet {
    /// True if `key` was not in the set yet.
    pub(crate) fn insert(&self, key: (JobId, i64)) -> bool {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(key)
    }

    pub(crate) fn retain(&self, keep: impl Fn(&(JobId, i64)) -> bool) {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).retain(|k| keep(k));
    }
}

/// Everything the node's tasks share.
pub(crate) struct Ctx {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) config: Arc<Config>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) opts: NodeOptions,
    pub(crate) layout: Layout,
    pub(crate) metrics: Metrics,
    pub(crate) containment: Containment,
    /// The repositories this node has mirrors of.
    pub(crate) repos: crate::vcs::Repos,
    pub(crate) owned: OwnedJobs,
    pub(crate) lease: LeaseDeadline,
    /// This node's offset to the store's clock in ms (store − local), added to
    /// every `now` so leases are stamped and judged in the store's time.
    pub(crate) clock_offset_ms: Arc<AtomicI64>,
    /// Unique per start of this node, so its registry row is never confused with
    /// an older or newer process under the same id.
    pub(crate) incarnation: String,
    /// Stop claiming and looping (shutdown has begun).
    pub(crate) stopping: CancellationToken,
    /// Kill every agent group now (the drain deadline passed).
    pub(crate) kill_all: CancellationToken,
    /// Finalizations Tier-2 has already recorded a deferral for, by (job, epoch).
    pub(crate) deferred: DeferredSet,
    /// Why the node must stop with an error (a supervised task died, integrity broke).
    fatal: Mutex<Option<String>>,
    /// Woken when a job slot frees up.
    pub(crate) slot_freed: tokio::sync::Notify,
    pub(crate) tasks: TaskTracker,
}

impl Ctx {
    pub(crate) fn new(
        store: Arc<dyn Store>,
        config: Arc<Config>,
        clock: Arc<dyn Clock>,
        opts: NodeOptions,
        containment: Containment,
    ) -> Self {
        let ttl = config.reaper.lease_ttl();
        Self {
            layout: Layout::new(opts.data_dir.clone()),
            store,
            config,
            clock,
            opts,
            metrics: Metrics::default(),
            containment,
            repos: crate::vcs::Repos::default(),
            owned: OwnedJobs::default(),
            lease: LeaseDeadline::new(ttl),
            clock_offset_ms: Arc::new(AtomicI64::new(0)),
            incarnation: new_incarnation(),
            stopping: CancellationToken::new(),
            kill_all: CancellationToken::new(),
            fatal: Mutex::new(None),
            deferred: DeferredSet::default(),
            slot_freed: tokio::sync::Notify::new(),
            tasks: TaskTracker::new(),
        }
    }

    /// A `now` in the store's time for parts that outlive a borrow of the
    /// context (the local forge).
    pub(crate) fn store_clock(&self) -> Arc<dyn Fn() -> Timestamp + Send + Sync> {
        let (clock, offset) = (Arc::clone(&self.clock), Arc::clone(&self.clock_offset_ms));
        Arc::new(move || Timestamp::from_millis(clock.now().as_millis() + offset.load(Ordering::Relaxed)))
    }

    /// Now, in the store's time: the injected clock plus the measured offset.
    pub(crate) fn now(&self) -> Timestamp {
        Timestamp::from_millis(self.clock.now().as_millis() + self.clock_offset_ms.load(Ordering::Relaxed))
    }

    /// Stops the node with an error: the process must not carry on half alive or
    /// after an integrity breach (restart and reconcile are safe; this is not).
    pub(crate) fn die(&self, why: String) {
        error!(reason = %why, "stopping the node");
        self.fatal.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get_or_insert(why);
        self.stopping.cancel();
    }

    pub(crate) fn fatal(&self) -> Option<String> {
        self.fatal.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Runs a store call an owner waits on, bounded by the time its lease has
    /// left: past the self-fence deadline the answer no longer matters (the work
    /// has been killed and another node may own the job).
    ///
    /// # Errors
    /// `Error::LeaseDeadline` if the deadline passes first; the call's own error otherwise.
    pub(crate) async fn within_lease<T>(
        &self,
        fut: impl std::future::Future<Output = Result<T, orch_store::Error>>,
    ) -> Result<T, Error> {
        match tokio::time::timeout_at(self.lease.deadline(), fut).await {
            Ok(r) => r.map_err(Error::from),
            Err(_) => Err(Error::LeaseDeadline),
        }
    }

    /// Registers a job this node now owns at `epoch`; returns its lost-lease token.
    pub(crate) fn own(&self, id: JobId, epoch: i64) -> CancellationToken {
        let lost = self.kill_all.child_token();
        self.owned.insert(id, epoch, lost.clone());
        lost
    }

    /// Starts a task for one job. Policy: a job's failure is the job's state,
    /// recorded in the store, so errors are logged and the node goes on; except an
    /// integrity breach (a version conflict under a live epoch) or a panic, which
    /// stop the node. Drained, not aborted, on shutdown.
    fn spawn_job_task<F>(self: &Arc<Self>, name: &'static str, id: JobId, epoch: i64, fut: F)
    where
        F: std::future::Future<Output = Result<(), Error>> + Send + 'static,
    {
        let guard = OwnedGuard { ctx: Arc::clone(self), id, epoch };
        let ctx = Arc::clone(self);
        // The work runs in a task of its own so a panic (a bug, or a broken
        // assertion in `decide`) is seen here and stops the node, instead of
        // vanishing with a detached task while the node goes on half alive.
        let inner = tokio::spawn(async move {
            let _guard = guard;
            fut.await
        });
        self.tasks.spawn(async move {
            match inner.await {
                Ok(Ok(())) => {}
                Ok(Err(Error::Conflict(item))) => {
                    ctx.die(format!("item {item} changed under a live epoch (store integrity breach)"));
                }
                Ok(Err(err)) => warn!(task = name, job = %id, epoch, error = %err, "task failed"),
                Err(join) if join.is_panic() => ctx.die(format!("a {name} task for job {id} panicked: {join}")),
                Err(join) => warn!(task = name, job = %id, epoch, error = %join, "task cancelled"),
            }
        });
    }

    /// Spawns the agent-running task for a claimed job; `settled` is the worktree
    /// the item's previous stage left on this node, when its transition claimed
    /// this job (see `vcs::prepare`).
    pub(crate) fn start_job(self: &Arc<Self>, job: Job, settled: Option<crate::vcs::Tree>) {
        let (id, epoch) = (job.id, job.epoch);
        let lost = self.own(id, epoch);
        let ctx = Arc::clone(self);
        self.spawn_job_task("job", id, epoch, async move {
            let r = job::run(&ctx, &job, &lost, settled).await;
            fenced_if_past_deadline(&ctx, &job, r).await
        });
    }

    /// Spawns a finalizer for a job this node has just taken over at `job.epoch`.
    pub(crate) fn start_finalizer(self: &Arc<Self>, job: Job) {
        let (id, epoch) = (job.id, job.epoch);
        let lost = self.own(id, epoch);
        let ctx = Arc::clone(self);
        self.spawn_job_task("finalizer", id, epoch, async move {
            let r = finalize::finalize(&ctx, &job, &lost).await;
            fenced_if_past_deadline(&ctx, &job, r).await
        });
    }

    /// Starts one of the node's loops (scheduler, heartbeat, reaper, watchdog).
    /// Policy: a loop runs until `stopping`; if it returns before that or panics,
    /// the node is not whole any more and stops with an error naming the loop.
    pub(crate) fn spawn_loop<F>(self: &Arc<Self>, name: &'static str, fut: F) -> tokio::task::JoinHandle<()>
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let ctx = Arc::clone(self);
        let inner = tokio::spawn(fut);
        tokio::spawn(async move {
            let res = inner.await;
            if ctx.stopping.is_cancelled() && res.is_ok() {
                return;
            }
            match res {
                Ok(()) => ctx.die(format!("the {name} loop ended while the node was running")),
                Err(e) if e.is_panic() => ctx.die(format!("the {name} loop panicked: {e}")),
                Err(e) => ctx.die(format!("the {name} loop was cancelled: {e}")),
            }
        })
    }
}

/// An owner whose lease deadline passed while it waited on the store has fenced
/// itself (its processes are dead): that is an outcome to record, with the kill
/// time, not an error to log and forget.
async fn fenced_if_past_deadline(ctx: &Ctx, job: &Job, r: Result<(), Error>) -> Result<(), Error> {
    match r {
        Err(Error::LeaseDeadline) => finalize::fenced_out(ctx, job, "lease deadline", None).await,
        other => other,
    }
}

/// Releases a job from the owned map however its task ends. On a panic it also
/// kills the job's processes: otherwise the heartbeat would keep renewing a lease
/// no one works under, and only the Tier-3 backstop would end the job.
struct OwnedGuard {
    ctx: Arc<Ctx>,
    id: JobId,
    epoch: i64,
}

impl Drop for OwnedGuard {
    fn drop(&mut self) {
        let proc_ = self.ctx.owned.remove(self.id, self.epoch);
        if std::thread::panicking()
            && let Some(p) = proc_
        {
            p.kill_now();
        }
        self.ctx.slot_freed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn ctx() -> Arc<Ctx> {
        let text = "[[repos]]\nname = \"shop\"\nkey = \"SHOP\"\npath = \".\"\n\
                    [agents.analyst]\ncommand = [\"a\"]\n[agents.architect]\ncommand = [\"a\"]\n\
                    [agents.developer]\ncommand = [\"a\"]\n[agents.tester]\ncommand = [\"a\"]\n[agents.deployer]\ncommand = [\"a\"]\n";
        let config = orch_core::config::load(std::path::Path::new("orch.toml"), text, &Default::default()).unwrap();
        let store = orch_store::open("sqlite::memory:").await.unwrap();
        let opts = NodeOptions::new("node-t", std::env::temp_dir());
        Arc::new(Ctx::new(store, Arc::new(config), Arc::new(crate::SystemClock), opts, Containment::ProcessGroup))
    }

    async fn stopped_with(ctx: &Ctx) -> String {
        tokio::time::timeout(Duration::from_secs(10), ctx.stopping.cancelled())
            .await
            .expect("the node was not stopped");
        ctx.fatal().expect("a reason")
    }

    #[tokio::test]
    async fn a_loop_that_panics_stops_the_node_with_its_name() {
        let ctx = ctx().await;
        ctx.spawn_loop("scheduler", async { panic!("boom") }).await.unwrap();
        let why = stopped_with(&ctx).await;
        assert!(why.contains("scheduler loop panicked"), "{why}");
    }

    #[tokio::test]
    async fn a_loop_that_returns_early_stops_the_node() {
        let ctx = ctx().await;
        ctx.spawn_loop("reaper", async {}).await.unwrap();
        assert!(stopped_with(&ctx).await.contains("reaper loop ended while the node was running"));
    }

    #[tokio::test]
    async fn a_loop_that_ends_at_shutdown_is_fine() {
        let ctx = ctx().await;
        ctx.stopping.cancel();
        ctx.spawn_loop("heartbeat", async {}).await.unwrap();
        assert_eq!(ctx.fatal(), None);
    }

    #[tokio::test]
    async fn a_panicking_job_task_or_a_live_epoch_conflict_stops_the_node() {
        let ctx = ctx().await;
        ctx.spawn_job_task("job", JobId(1), 1, async { panic!("bug") });
        assert!(stopped_with(&ctx).await.contains("job task for job 1 panicked"));
        let ctx2 = super::tests::ctx().await;
        ctx2.spawn_job_task("finalizer", JobId(2), 1, async { Err(Error::Conflict("SHOP-1".into())) });
        assert!(stopped_with(&ctx2).await.contains("SHOP-1 changed under a live epoch"));
        assert_eq!(ctx2.owned.len(), 0, "the guard released the job");
    }
}
