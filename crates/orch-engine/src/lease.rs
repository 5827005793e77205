//! The node's leases: the heartbeat that renews them and the watchdog that fences
//! the node off its own work when it cannot.
//!
//! Every `heartbeat_s` one store statement renews the leases of every job this
//! node owns. A job whose lease did not renew has been taken over or cancelled: its
//! owner is told at once and stops (DESIGN §2). A renewal that does not come back
//! is the dangerous case: the store may be unreachable while another node takes the
//! jobs over when their leases expire. So the node keeps a local deadline — the
//! send time of the last successful renewal + `lease_ttl_s` − a margin — and a
//! watchdog kills every owned process at that deadline by its own timer, raced
//! against the renewal, never waiting for a store call to return (DESIGN §7,
//! "Self-fencing before expiry"). The renewal call itself is bounded by the same
//! deadline.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use orch_store::JobId;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::ctx::Ctx;

/// Renews leases until `stop` is cancelled.
pub(crate) async fn heartbeat(ctx: Arc<Ctx>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(ctx.config.reaper.heartbeat());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {
                renew_once(&ctx).await;
                crate::node_registry::heartbeat(&ctx).await;
                // Daemons killed with their jobs were re-parented to the node (child
                // subreaper): collect their exit status so no zombie lingers.
                let _ = tokio::task::spawn_blocking(crate::process::reap_adopted).await;
            }
        }
    }
}

/// Kills every owned process when the lease deadline passes without a renewal.
pub(crate) async fn watchdog(ctx: Arc<Ctx>, stop: CancellationToken) {
    loop {
        let deadline = ctx.lease.deadline();
        let moved = ctx.lease.moved.notified();
        tokio::select! {
            () = stop.cancelled() => return,
            () = moved => continue,
            () = tokio::time::sleep_until(deadline) => {}
        }
        if ctx.lease.deadline() > deadline {
            continue; // a renewal landed just now
        }
        let fenced = ctx.owned.fence_all(ctx.now());
        if fenced > 0 {
            ctx.metrics.self_fenced(fenced);
            warn!(jobs = fenced, "lease deadline passed without a renewal: killed all owned work (self-fence)");
        }
        // Nothing more to do until a renewal moves the deadline again.
        tokio::select! {
            () = stop.cancelled() => return,
            () = ctx.lease.moved.notified() => {}
        }
    }
}

/// One renewal round. Returns false when the store could not be asked in time.
pub(crate) async fn renew_once(ctx: &Ctx) -> bool {
    let sent = tokio::time::Instant::now();
    let held = ctx.owned.keys();
    if held.is_empty() {
        // No lease to keep: the deadline only matters from the next claim on, and
        // a claim stamps a fresh lease of its own.
        ctx.lease.renewed(sent);
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
    let call = ctx.store.renew_leases(&ctx.opts.node_id, &request, now, ctx.config.reaper.lease_ttl());
    match ctx.within_lease(call).await {
        Ok(renewed) => {
            ctx.lease.renewed(sent);
            let renewed: HashSet<_> = renewed.into_iter().collect();
            for (id, epoch) in &held {
                if !renewed.contains(id) || newest.get(id) != Some(epoch) {
                    warn!(job = %id, epoch, "lease lost: job was taken over, cancelled or ended elsewhere");
                    ctx.owned.lose_epoch(*id, *epoch);
                }
            }
            debug!(renewed = renewed.len(), "leases renewed");
            true
        }
        // A short outage is not a lost lease: keep working until the watchdog's
        // deadline, which does not wait for this call.
        Err(err) => {
            warn!(error = %err, "lease renewal failed");
            false
        }
    }
}
