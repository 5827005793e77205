//! One orch node: `Node::run` starts the scheduler, the lease heartbeat, the
//! self-fence watchdog and the reaper under one supervisor, and shuts them down
//! once, under one deadline.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use orch_core::config::Config;
use orch_store::Store;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::clock::Clock;
use crate::contain::Containment;
use crate::ctx::Ctx;
use crate::layout::Layout;
use crate::metrics::MetricsSnapshot;
use crate::{Error, reaper, scheduler};

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

/// A running orch node.
#[derive(Clone)]
pub struct Node {
    ctx: Arc<Ctx>,
    /// Why the node cannot run (containment asked for and not available).
    unavailable: Option<String>,
}

impl Node {
    /// A node over `store` and `config`. Containment is chosen here from
    /// `node.isolation`; if it cannot be had, `run` refuses to start and says why.
    pub fn new(store: Arc<dyn Store>, config: Arc<Config>, clock: Arc<dyn Clock>, opts: NodeOptions) -> Self {
        let key = crate::identity::containment_key(&opts.node_id, &opts.data_dir);
        let (containment, unavailable) = match Containment::detect(config.node.isolation, &key) {
            Ok(c) => (c, None),
            Err(e) => (Containment::ProcessGroup, Some(e.to_string())),
        };
        Self { ctx: Arc::new(Ctx::new(store, config, clock, opts, containment)), unavailable }
    }

    /// This node's measured offset to the store's clock, in ms (store − local).
    pub fn clock_offset_ms(&self) -> i64 {
        self.ctx.clock_offset_ms.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// How this node contains its jobs' processes, for logs and `orch queue`.
    pub fn containment(&self) -> String {
        self.ctx.containment.describe()
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
        if let Some(why) = &self.unavailable {
            return Err(Error::Unavailable(why.clone()));
        }
        crate::process::become_subreaper();
        crate::node_registry::register(ctx).await?;
        let n = self.reconcile().await?;
        info!(node = %ctx.opts.node_id, reconciled = n, containment = %ctx.containment.describe(), "node started");
        let heartbeat_stop = CancellationToken::new();
        let hb = ctx.spawn_loop("heartbeat", crate::lease::heartbeat(Arc::clone(ctx), heartbeat_stop.clone()));
        let fence = ctx.spawn_loop("self-fence", crate::lease::watchdog(Arc::clone(ctx), heartbeat_stop.clone()));
        let sched = ctx.spawn_loop("scheduler", scheduler::run(Arc::clone(ctx)));
        let reap = ctx.opts.run_reaper.then(|| ctx.spawn_loop("reaper", reaper::run(Arc::clone(ctx))));

        ctx.stopping.cancelled().await;
        info!(node = %ctx.opts.node_id, owned = ctx.owned.len(), "shutting down: no new claims");
        let _ = sched.await;
        if let Some(r) = reap {
            let _ = r.await;
        }
        ctx.tasks.close();
        if tokio::time::timeout(ctx.opts.drain, ctx.tasks.wait()).await.is_err() {
            warn!(owned = ctx.owned.len(), "drain deadline passed: killing agent groups and releasing leases");
            ctx.kill_all.cancel();
            ctx.tasks.wait().await;
        }
        heartbeat_stop.cancel();
        let _ = hb.await;
        let _ = fence.await;
        crate::node_registry::deregister(ctx).await;
        if let Some(why) = ctx.fatal() {
            return Err(Error::Fatal(why));
        }
        info!(node = %ctx.opts.node_id, "node stopped");
        Ok(())
    }
}
