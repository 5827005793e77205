//! The node's lease heartbeat: every `heartbeat_s`, one store statement renews the
//! leases of every job this node owns (running agents and finalizers alike). A job
//! whose lease did not renew has been taken over or cancelled: its owner is told at
//! once and stops, which is how a stale owner learns it is fenced (DESIGN §2).

use std::collections::{HashMap, HashSet};

use orch_store::JobId;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::node::Ctx;

/// Renews leases until `stop` is cancelled.
///
/// A node that cannot reach the store for most of a lease's life stops all its
/// own work: by then another node may have taken its jobs over, and an owner that
/// cannot hear that it was fenced must assume it was (no agent outlives its lease).
pub(crate) async fn heartbeat(ctx: Arc<Ctx>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(ctx.config.reaper.heartbeat());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let self_fence_after = ctx.config.reaper.lease_ttl().mul_f64(0.75);
    let mut last_ok = tokio::time::Instant::now();
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {
                if renew_once(&ctx).await {
                    last_ok = tokio::time::Instant::now();
                } else if last_ok.elapsed() > self_fence_after {
                    let held = ctx.owned_keys();
                    if !held.is_empty() {
                        warn!(jobs = held.len(), "store unreachable for most of a lease: stopping all owned work");
                        for (id, _) in held {
                            ctx.lose(id);
                        }
                    }
                }
            }
        }
    }
}

/// One renewal round. Returns false only when the store could not be asked.
pub(crate) async fn renew_once(ctx: &Ctx) -> bool {
    let held = ctx.owned_keys();
    if held.is_empty() {
        return true;
    }
    // A node may hold two epochs of one job (it took over its own finalizer); only
    // the newest can be current, so only that one is sent for renewal.
    let mut newest: HashMap<JobId, i64> = HashMap::new();
    for (id, epoch) in &held {
        let e = newest.entry(*id).or_insert(*epoch);
        *e = (*e).max(*epoch);
    }
    let request: Vec<(JobId, i64)> = newest.iter().map(|(id, e)| (*id, *e)).collect();
    let now = ctx.now();
    match ctx.store.renew_leases(&ctx.opts.node_id, &request, now, ctx.config.reaper.lease_ttl()).await {
        Ok(renewed) => {
            let renewed: HashSet<_> = renewed.into_iter().collect();
            let map = ctx.owned_map();
            for (id, epoch) in &held {
                if (!renewed.contains(id) || newest.get(id) != Some(epoch))
                    && let Some(o) = map.get(&(*id, *epoch))
                {
                    warn!(job = %id, epoch, "lease lost: job was taken over, cancelled or ended elsewhere");
                    o.lost.cancel();
                }
            }
            debug!(renewed = renewed.len(), "leases renewed");
            true
        }
        // A short outage is not a lost lease: keep working until the self-fence
        // deadline in `heartbeat`.
        Err(err) => {
            warn!(error = %err, "lease renewal failed");
            false
        }
    }
}
