//! One orch node: the shared context every task of the node reads, the registry of
//! jobs this node owns right now, and `Node::run`, which starts the scheduler, the
//! lease heartbeat and the reaper and shuts them down once, under one deadline.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use orch_core::config::Config;
use orch_store::{Job, JobId, Store};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::clock::Clock;
use crate::layout::Layout;
use crate::metrics::{Metrics, MetricsSnapshot};
use crate::{Error, finalize, job, reaper, scheduler};

/// How this process runs (flags, not config).
#[derive(Clone, Debug)]
pub struct NodeOptions {
    /// This node's id (the config's `node.id`, or the hostname).
    pub node_id: String,
    /// Where worktrees, logs, prompts and verdicts go.
    pub data_dir: PathBuf,
    /// How often the scheduler polls when no wake-up arrives.
    pub poll_interval: Duration,
    /// How long running agents get to finish on shutdown before their groups are killed.
    pub drain: Duration,
    /// Run the reaper on its interval (tests turn it off and call `reaper_pass`).
    pub run_reaper: bool,
}

impl NodeOptions {
    pub fn new(node_id: impl Into<String>, data_dir: impl Into<PathBuf>) -> Self {
        Self {
            node_id: node_id.into(),
            data_dir: data_dir.into(),
            poll_interval: Duration::from_millis(250),
            drain: Duration::from_secs(10),
            run_reaper: true,
        }
    }
}

/// A job this node owns: its epoch and the tokens that stop its work.
#[derive(Debug)]
pub(crate) struct Owned {
    /// Cancelled when the lease is lost (taken over, cancelled) or the backstop fires.
    pub(crate) lost: CancellationToken,
    /// The agent's process group, once started.
    pub(crate) pgid: Option<i32>,
}

/// Everything the node's tasks share.
pub(crate) struct Ctx {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) config: Arc<Config>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) opts: NodeOptions,
    pub(crate) layout: Layout,
    pub(crate) metrics: Metrics,
    /// Jobs owned now, keyed by (job, epoch): a node may briefly hold a stale epoch
    /// and a fresh one of the same job (takeover of its own finalizer).
    pub(crate) owned: Mutex<HashMap<(JobId, i64), Owned>>,
    /// Stop claiming and looping (shutdown has begun).
    pub(crate) stopping: CancellationToken,
    /// Kill every agent group now (the drain deadline passed).
    pub(crate) kill_all: CancellationToken,
    /// Woken when a job slot frees up.
    pub(crate) slot_freed: tokio::sync::Notify,
    pub(crate) tasks: TaskTracker,
}

impl Ctx {
    pub(crate) fn now(&self) -> orch_core::Timestamp {
        self.clock.now()
    }

    /// Registers a job this node now owns at `epoch`; returns its lost-lease token.
    pub(crate) fn own(&self, id: JobId, epoch: i64) -> CancellationToken {
        let lost = self.kill_all.child_token();
        self.owned_map().insert((id, epoch), Owned { lost: lost.clone(), pgid: None });
        lost
    }

    pub(crate) fn set_pgid(&self, id: JobId, epoch: i64, pgid: i32) {
        if let Some(o) = self.owned_map().get_mut(&(id, epoch)) {
            o.pgid = Some(pgid);
        }
    }

    pub(crate) fn disown(&self, id: JobId, epoch: i64) {
        self.owned_map().remove(&(id, epoch));
        self.slot_freed.notify_one();
    }

    /// Marks every held epoch of `id` as lost (its owner must stop at once).
    pub(crate) fn lose(&self, id: JobId) {
        for ((jid, _), o) in self.owned_map().iter() {
            if *jid == id {
                o.lost.cancel();
            }
        }
    }

    /// Marks every epoch of `id` older than `epoch` as lost: after this node takes
    /// a job over from itself, the stale owner must stop before it does more work.
    pub(crate) fn lose_older(&self, id: JobId, epoch: i64) {
        for ((jid, e), o) in self.owned_map().iter() {
            if *jid == id && *e < epoch {
                o.lost.cancel();
            }
        }
    }

    pub(crate) fn owned_count(&self) -> usize {
        self.owned_map().len()
    }

    pub(crate) fn owned_keys(&self) -> Vec<(JobId, i64)> {
        self.owned_map().keys().copied().collect()
    }

    pub(crate) fn owned_map(&self) -> std::sync::MutexGuard<'_, HashMap<(JobId, i64), Owned>> {
        // A panic while holding this lock would be a bug elsewhere; the map itself
        // is always consistent, so recover it rather than poison the node.
        self.owned.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Starts a task on the node's tracker. Policy: errors are logged with the
    /// task's name and never stop the node (a job's failure is the job's state,
    /// recorded in the store); on shutdown tasks are drained, not aborted.
    pub(crate) fn spawn<F>(self: &Arc<Self>, name: &'static str, fut: F)
    where
        F: std::future::Future<Output = Result<(), Error>> + Send + 'static,
    {
        self.tasks.spawn(async move {
            if let Err(err) = fut.await {
                warn!(task = name, error = %err, "task failed");
            }
        });
    }

    /// Spawns the agent-running task for a claimed job.
    pub(crate) fn start_job(self: &Arc<Self>, job: Job) {
        let lost = self.own(job.id, job.epoch);
        let guard = OwnedGuard { ctx: Arc::clone(self), id: job.id, epoch: job.epoch };
        let ctx = Arc::clone(self);
        self.spawn("job", async move {
            let _guard = guard;
            job::run(&ctx, &job, &lost).await
        });
    }

    /// Spawns a finalizer for a job this node has just taken over at `job.epoch`.
    pub(crate) fn start_finalizer(self: &Arc<Self>, job: Job) {
        let lost = self.own(job.id, job.epoch);
        let guard = OwnedGuard { ctx: Arc::clone(self), id: job.id, epoch: job.epoch };
        let ctx = Arc::clone(self);
        self.spawn("finalizer", async move {
            let _guard = guard;
            finalize::finalize(&ctx, &job, &lost).await
        });
    }
}

/// Releases a job from the owned map however its task ends. On a panic it also
/// kills the agent's group: otherwise the heartbeat would keep renewing a lease
/// no one works under, and only the Tier-3 backstop would end the job.
struct OwnedGuard {
    ctx: Arc<Ctx>,
    id: JobId,
    epoch: i64,
}

impl Drop for OwnedGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let pgid = self.ctx.owned_map().get(&(self.id, self.epoch)).and_then(|o| o.pgid);
            if let Some(pgid) = pgid {
                crate::process::kill_group(pgid, nix::sys::signal::Signal::SIGKILL);
            }
        }
        self.ctx.disown(self.id, self.epoch);
    }
}

/// A running orch node.
#[derive(Clone)]
pub struct Node {
    ctx: Arc<Ctx>,
}

impl Node {
    pub fn new(store: Arc<dyn Store>, config: Arc<Config>, clock: Arc<dyn Clock>, opts: NodeOptions) -> Self {
        let layout = Layout::new(opts.data_dir.clone());
        let stopping = CancellationToken::new();
        Self {
            ctx: Arc::new(Ctx {
                store,
                config,
                clock,
                layout,
                opts,
                metrics: Metrics::default(),
                owned: Mutex::new(HashMap::new()),
                kill_all: CancellationToken::new(),
                stopping,
                slot_freed: tokio::sync::Notify::new(),
                tasks: TaskTracker::new(),
            }),
        }
    }

    /// The token that, when cancelled, starts a graceful shutdown of `run`.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.ctx.stopping.clone()
    }

    pub fn metrics(&self) -> MetricsSnapshot {
        self.ctx.metrics.snapshot()
    }

    pub fn layout(&self) -> &Layout {
        &self.ctx.layout
    }

    pub fn node_id(&self) -> &str {
        &self.ctx.opts.node_id
    }

    /// One reaper pass at the clock's `now` (tests call this directly).
    ///
    /// # Errors
    /// A store error that stopped the pass.
    pub async fn reaper_pass(&self) -> Result<reaper::PassReport, Error> {
        reaper::pass(&self.ctx).await
    }

    /// Jobs owned by this node's previous incarnation: their surviving process
    /// groups are killed first; running ones go back to the queue, finishing ones
    /// are taken over and finalized again.
    ///
    /// # Errors
    /// A store error.
    pub async fn reconcile(&self) -> Result<usize, Error> {
        crate::reconcile::run(&self.ctx).await
    }

    /// Runs the node until the shutdown token is cancelled, then drains: stop
    /// claiming, give running work `drain` to finish, kill what remains and release
    /// its leases, wait for every task.
    ///
    /// # Errors
    /// A store error during start-up reconcile.
    pub async fn run(&self) -> Result<(), Error> {
        let ctx = &self.ctx;
        let n = self.reconcile().await?;
        info!(node = %ctx.opts.node_id, reconciled = n, "node started");
        let heartbeat_stop = CancellationToken::new();
        let hb = tokio::spawn(crate::lease::heartbeat(Arc::clone(ctx), heartbeat_stop.clone()));
        let sched = tokio::spawn(scheduler::run(Arc::clone(ctx)));
        let reap = ctx.opts.run_reaper.then(|| tokio::spawn(reaper::run(Arc::clone(ctx))));

        ctx.stopping.cancelled().await;
        info!(node = %ctx.opts.node_id, owned = ctx.owned_count(), "shutting down: no new claims");
        let _ = sched.await;
        if let Some(r) = reap {
            let _ = r.await;
        }
        ctx.tasks.close();
        if tokio::time::timeout(ctx.opts.drain, ctx.tasks.wait()).await.is_err() {
            warn!(owned = ctx.owned_count(), "drain deadline passed: killing agent groups and releasing leases");
            ctx.kill_all.cancel();
            ctx.tasks.wait().await;
        }
        heartbeat_stop.cancel();
        let _ = hb.await;
        info!(node = %ctx.opts.node_id, "node stopped");
        Ok(())
    }
}
