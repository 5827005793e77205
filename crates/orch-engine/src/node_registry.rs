//! The node's entry in the store's `nodes` table (DESIGN §5) and its offset to the
//! store's clock.
//!
//! - Registered at start: refused while a live node holds the id, so a second
//!   `orch serve` under the same id can never reconcile (release, re-run) the
//!   first one's live work.
//! - Touched with every heartbeat, together with the offset, which is measured
//!   each time too. A touch that finds another incarnation in the row means the id
//!   was taken over while this node looked dead: it stops.
//! - Marked stopped on a clean shutdown, so a restart need not wait.
//!
//! The offset is `store clock − this host's clock`, measured against the system
//! clock (not the injected one) and added on top of the injected clock: leases are
//! stamped and judged in the store's time, so a node whose clock is skewed neither
//! reaps healthy work nor lets its own leases lapse early. Tests that drive a
//! `ManualClock` see an offset of a few milliseconds at most.

use std::sync::atomic::Ordering;
use std::time::Duration;

use orch_store::NodeRegistration;
use tracing::{info, warn};

use crate::Error;
use crate::clock::system_now;
use crate::ctx::Ctx;

/// An offset larger than this is logged loudly: at this size lease decisions made
/// in local time would be wrong by a noticeable share of a lease.
pub(crate) const CLOCK_OFFSET_WARN_MS: i64 = 1_000;

/// How long one measurement or registry call may take before it is given up.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Measures the offset to the store's clock and applies it. Returns it, or
/// `None` when the store has no clock of its own (SQLite: same host) or did not
/// answer in time.
pub(crate) async fn measure_offset(ctx: &Ctx) -> Option<i64> {
    let before = system_now().as_millis();
    let store = tokio::time::timeout(CALL_TIMEOUT, ctx.store.store_time()).await.ok()?.ok()??;
    let after = system_now().as_millis();
    let offset = store.as_millis() - (before + after) / 2;
    let previous = ctx.clock_offset_ms.swap(offset, Ordering::Relaxed);
    if offset.abs() > CLOCK_OFFSET_WARN_MS && (previous.abs() <= CLOCK_OFFSET_WARN_MS || previous == 0) {
        warn!(
            offset_ms = offset,
            bound_ms = CLOCK_OFFSET_WARN_MS,
            "this host's clock is off the store's; leases are stamped and judged in the store's time"
        );
    }
    Some(offset)
}

/// Registers this node; refuses to start under the id of a live node.
///
/// # Errors
/// `orch_store::Error::NodeIdInUse` naming the live node, or a store error.
pub(crate) async fn register(ctx: &Ctx) -> Result<(), Error> {
    measure_offset(ctx).await;
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_owned()).unwrap_or_default();
    let reg = NodeRegistration {
        id: ctx.opts.node_id.clone(),
        incarnation: ctx.incarnation.clone(),
        host,
        pid: i32::try_from(std::process::id()).unwrap_or(0),
        data_dir: ctx.opts.data_dir.display().to_string(),
    };
    let ttl = ctx.config.reaper.lease_ttl();
    let previous = match ctx.store.register_node(reg.clone(), ctx.now(), ttl).await {
        // The row looks live by time, but the process it names is provably gone:
        // the node was killed and is being restarted on the same host. Waiting out
        // the rest of its lease would only delay recovery. The row is judged at its
        // own `last_seen` if that is later than our `now`: each incarnation
        // measures its own offset to the store's clock, a few ms apart on
        // PostgreSQL, so a heartbeat of the dead one can be stamped after our
        // `now`, where even a zero lifetime still looks live.
        Err(orch_store::Error::NodeIdInUse { host, pid, last_seen, .. }) if host == reg.host && provably_dead(pid) => {
            info!(node = %reg.id, previous_pid = pid, "the previous incarnation on this host is gone; taking its id now");
            ctx.store.register_node(reg, ctx.now().max(last_seen), Duration::ZERO).await?
        }
        other => other?,
    };
    if let Some(p) = previous {
        info!(node = %ctx.opts.node_id, previous_incarnation = %p.incarnation, previous_pid = p.pid, "node registered, replacing a dead incarnation");
    }
    Ok(())
}

/// Whether a node process `pid` on this host is certainly not running: no such
/// process, or this very process (one process runs one node at a time, so an
/// entry naming our own pid is an earlier node of ours being replaced). A pid now
/// used by an unrelated process is taken as alive: the safe side.
fn provably_dead(pid: i32) -> bool {
    pid == i32::try_from(std::process::id()).unwrap_or(-1)
        || (pid > 0 && !std::path::Path::new(&format!("/proc/{pid}")).exists())
}

/// One heartbeat: a fresh offset and `last_seen`.
pub(crate) async fn heartbeat(ctx: &Ctx) {
    let offset = measure_offset(ctx).await.unwrap_or_else(|| ctx.clock_offset_ms.load(Ordering::Relaxed));
    let call = ctx.store.touch_node(&ctx.opts.node_id, &ctx.incarnation, ctx.now(), offset);
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(Ok(true)) => {}
        Ok(Ok(false)) => ctx.die(format!(
            "node id {} was registered by another incarnation while this one looked dead; \
             stopping so two nodes never run under one id",
            ctx.opts.node_id
        )),
        Ok(Err(e)) => warn!(error = %e, "node heartbeat failed"),
        Err(_) => warn!("node heartbeat: the store did not answer"),
    }
}

/// Marks this incarnation stopped (clean shutdown).
pub(crate) async fn deregister(ctx: &Ctx) {
    let call = ctx.store.deregister_node(&ctx.opts.node_id, &ctx.incarnation, ctx.now());
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => warn!(error = %e, "could not mark the node stopped; a restart waits for it to look dead"),
        Err(_) => warn!("could not mark the node stopped: the store did not answer"),
    }
}
