//! The reaper (DESIGN §7): every `reaper.interval_s`, one indexed query per tier.
//!
//! - Tier-1, dead agent: `running` with an expired lease → take over, stamp
//!   `exit=lost`, finalize as a failure (a retry within the stage's attempts).
//! - Tier-2, orphaned finalization: `finishing` longer than `finalize_grace_s`. A
//!   live lease means a finalizer is still working: defer (count it, log it, record
//!   it). Only an expired lease — or the kill-switch
//!   `finalizer_liveness_enabled = false`, which goes by age alone as the old
//!   system did — leads to a takeover (epoch + 1) and a fresh finalization.
//! - Tier-3, backstop: anything not ended `max_running_s` after it started is
//!   failed with reason `timeout` whatever its lease says, and its group killed if local.
//!
//! Liveness is never inferred from age while the switch is on (the incident of §2).
//!
//! Each pass ends by adding what it did to the store's cluster-wide counters
//! (`Store::record_reaper_pass`), which `GET /queue` shows; the node's own
//! in-memory counters (`Metrics`) feed `/metrics`.

use std::sync::Arc;

use orch_core::{EventKind, JobStatus, StageResult};
use orch_store::{ExitInfo, Job, NewEvent, ReaperPassCounts, TakeOver};
use serde::Serialize;
use serde_json::json;
use tracing::{info, warn};

use crate::ctx::Ctx;
use crate::metrics::Tier;
use crate::{Error, finalize, process};

/// Rows looked at per tier per pass; the rest wait for the next pass.
const BATCH: u32 = 256;

/// What one pass did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PassReport {
    pub tier1_reaped: usize,
    pub tier2_deferred: usize,
    pub tier2_taken_over: usize,
    pub tier3_reaped: usize,
}

pub(crate) async fn run(ctx: Arc<Ctx>) {
    let mut tick = tokio::time::interval(ctx.config.reaper.interval());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = ctx.stopping.cancelled() => return,
            _ = tick.tick() => {
                if let Err(err) = pass(&ctx).await {
                    warn!(error = %err, "reaper pass failed");
                }
            }
        }
    }
}

/// One pass over the three tiers at the clock's `now`.
pub(crate) async fn pass(ctx: &Arc<Ctx>) -> Result<PassReport, Error> {
    let mut report = PassReport::default();
    let now = ctx.now();
    let r = &ctx.config.reaper;

    // Tier-3 first: the backstop wins over everything else. One job's failure is
    // logged and skipped so it cannot starve the rest of the pass.
    for job in ctx.store.overdue(now.sub(r.max_running()), BATCH).await? {
        match tier3(ctx, &job).await {
            Ok(true) => report.tier3_reaped += 1,
            Ok(false) => {}
            Err(err) => warn!(item = %job.item, job = %job.id, error = %err, "tier-3 reap failed"),
        }
    }
    for job in ctx.store.expired_running(now, BATCH).await? {
        match tier1(ctx, &job).await {
            Ok(true) => report.tier1_reaped += 1,
            Ok(false) => {}
            Err(err) => warn!(item = %job.item, job = %job.id, error = %err, "tier-1 reap failed"),
        }
    }
    let stale = ctx.store.stale_finishing(now.sub(r.finalize_grace()), BATCH).await?;
    // Forget deferrals of jobs no longer stale (ended, or taken over), so the set
    // stays as small as the set of finalizations running long right now.
    ctx.deferred.retain(|(id, epoch)| stale.iter().any(|j| j.id == *id && j.epoch == *epoch));
    for job in stale {
        if let Err(err) = tier2(ctx, &job, now, &mut report).await {
            warn!(item = %job.item, job = %job.id, error = %err, "tier-2 pass failed");
        }
    }
    // Housekeeping, bounded so a slow remote never delays the next pass.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), crate::vcs::sweep_worktrees(ctx)).await;
    let done_at = ctx.now();
    ctx.metrics.pass_done(done_at.as_millis());
    // The cluster-wide, restart-proof totals `GET /queue` shows: one statement
    // per pass, whatever the pass did (it also carries `last_pass_at`).
    let counts = ReaperPassCounts {
        finalizer_defers: report.tier2_deferred as u64,
        reaped_tier1: report.tier1_reaped as u64,
        reaped_tier2: report.tier2_taken_over as u64,
        reaped_tier3: report.tier3_reaped as u64,
    };
    ctx.store.record_reaper_pass(counts, done_at).await?;
    Ok(report)
}

async fn tier2(ctx: &Arc<Ctx>, job: &Job, now: orch_core::Timestamp, report: &mut PassReport) -> Result<(), Error> {
    let r = &ctx.config.reaper;
    {
        let lease_live = job.lease_expires_at.is_some_and(|t| t > now);
        if r.finalizer_liveness_enabled && lease_live {
            ctx.metrics.deferred();
            report.tier2_deferred += 1;
            // One event per job epoch: the log says a finalizer ran long, the
            // counter says how often it was looked at (an event per pass would grow
            // the log without bound while a slow gate runs).
            if ctx.deferred.insert((job.id, job.epoch)) {
                info!(item = %job.item, job = %job.id, epoch = job.epoch, owner = ?job.owner, "reaper.deferred: finalizer lease is live");
                let mut e = event(job, EventKind::ReaperDeferred, "finalizer holds a live lease");
                e.data = json!({ "tier": 2, "owner": job.owner, "lease_expires_at": job.lease_expires_at });
                ctx.store.append_events(&[e], now).await?;
            }
            return Ok(());
        }
        let why = if lease_live {
            "finalization older than finalize_grace_s (liveness check disabled)"
        } else {
            "finalization older than finalize_grace_s and its lease expired"
        };
        let when = if r.finalizer_liveness_enabled { TakeOver::IfLeaseExpired } else { TakeOver::Force };
        if let Some(taken) = take_over(ctx, job, when, why).await? {
            ctx.metrics.reaped(Tier::Two);
            report.tier2_taken_over += 1;
            ctx.start_finalizer(taken);
        }
    }
    Ok(())
}

async fn tier1(ctx: &Arc<Ctx>, job: &Job) -> Result<bool, Error> {
    let owner = job.owner.clone().unwrap_or_default();
    let why = format!("lease of owner {owner} expired while the agent was running");
    let Some(taken) = take_over(ctx, job, TakeOver::IfLeaseExpired, &why).await? else { return Ok(false) };
    ctx.metrics.reaped(Tier::One);
    kill_if_local(ctx, job);
    if taken.status == JobStatus::Finishing {
        // The agent exited between our query and the takeover: its run is
        // recorded, so finalize it rather than calling it lost.
        ctx.start_finalizer(taken);
        return Ok(true);
    }
    let exit = ExitInfo { exit_code: None, reason: Some(format!("exit=lost: {why}")), verdict: None, usage: None };
    match ctx.store.record_finished(taken.id, taken.epoch, exit, ctx.now()).await {
        Ok(()) => {}
        Err(orch_store::Error::FencedOut { .. }) => return Ok(false),
        Err(e) => return Err(e.into()),
    }
    reaped_event(ctx, &taken, 1, &why).await?;
    let result = StageResult::Errored { reason: format!("exit=lost: {why}") };
    finalize::commit(ctx, &taken, result, false, None).await?;
    Ok(true)
}

async fn tier3(ctx: &Arc<Ctx>, job: &Job) -> Result<bool, Error> {
    let why =
        format!("timeout: not ended {}s after it started (reaper.max_running_s)", ctx.config.reaper.max_running_s);
    let Some(taken) = take_over(ctx, job, TakeOver::Force, &why).await? else { return Ok(false) };
    ctx.metrics.reaped(Tier::Three);
    kill_if_local(ctx, job);
    reaped_event(ctx, &taken, 3, &why).await?;
    finalize::commit(ctx, &taken, StageResult::Errored { reason: why }, false, None).await?;
    Ok(true)
}

/// Takes `job` over for this node at its observed epoch; `None` if another node
/// or the owner moved first.
async fn take_over(ctx: &Ctx, job: &Job, when: TakeOver, why: &str) -> Result<Option<Job>, Error> {
    let taken = ctx
        .store
        .take_over(job.id, job.epoch, &ctx.opts.node_id, ctx.now(), ctx.config.reaper.lease_ttl(), when, why)
        .await?;
    if let Some(t) = &taken {
        ctx.owned.lose(t.id, Some(t.epoch));
        info!(item = %t.item, job = %t.id, epoch = t.epoch, previous_owner = ?job.owner, reason = why, "reaper.took_over");
    }
    Ok(taken)
}

/// If this node ran the job's agent, kill its process group now. (Its task was
/// already told to stop by `take_over`, which marks every older local epoch lost.)
fn kill_if_local(ctx: &Ctx, job: &Job) {
    if job.owner.as_deref() != Some(ctx.opts.node_id.as_str()) {
        return; // the remote owner kills its own group when its lease renewal fails
    }
    if let (Some(pid), Some(pgid)) = (job.pid, job.pgid) {
        process::kill_if_same_leader(pid, pgid, job.proc_start);
    }
}

async fn reaped_event(ctx: &Ctx, job: &Job, tier: u8, why: &str) -> Result<(), Error> {
    let mut e = event(job, EventKind::ReaperReaped, why);
    e.epoch = Some(job.epoch);
    e.data = json!({ "tier": tier, "node": ctx.opts.node_id });
    ctx.store.append_events(&[e], ctx.now()).await?;
    Ok(())
}

fn event(job: &Job, kind: EventKind, reason: &str) -> NewEvent {
    let mut e = NewEvent::new(job.item.clone(), kind);
    e.job = Some(job.id);
    e.epoch = Some(job.epoch);
    e.reason = Some(reason.to_owned());
    e
}
