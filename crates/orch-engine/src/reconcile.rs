//! Start-up reconcile: before claiming anything, a node settles the jobs its
//! previous incarnation owned. Surviving agent groups are killed first (matched by
//! pid and start time so a recycled pid is never hit, then the incarnation's
//! cgroups are emptied); a running job's run died with the node and is failed as
//! an attempt (so a job that kills its node ends blocked); finishing jobs are taken
//! over (epoch + 1) and finalized again.

use std::sync::Arc;

use orch_core::{JobStatus, StageResult};
use orch_store::ExitInfo;
use tracing::info;

use crate::ctx::Ctx;
use crate::{Error, finalize, process, registry};

pub(crate) async fn run(ctx: &Arc<Ctx>) -> Result<usize, Error> {
    // Every group the previous incarnation started and did not see die, agents and
    // gates alike, whatever the store now says about their jobs; then whatever is
    // left in its cgroups (daemons that left their process group).
    let killed = registry::kill_recorded(&ctx.layout.run_dir(&ctx.opts.node_id));
    let swept = ctx.containment.sweep();
    if killed + swept > 0 {
        info!(killed, swept, "killed process trees left by the previous incarnation");
    }
    let jobs = ctx.store.jobs_owned_by(&ctx.opts.node_id).await?;
    let n = jobs.len();
    for job in jobs {
        if ctx.owned.contains_job(job.id) {
            continue; // already owned by this incarnation (e.g. taken over just now)
        }
        if let (Some(pid), Some(pgid)) = (job.pid, job.pgid)
            && process::kill_if_same_leader(pid, pgid, job.proc_start)
        {
            info!(item = %job.item, job = %job.id, pgid, "killed orphaned agent group of previous incarnation");
        }
        let why = match job.status {
            JobStatus::Running => "node died during the run",
            JobStatus::Finishing => "node restarted during finalization",
            _ => continue,
        };
        let taken = ctx
            .store
            .take_over(
                job.id,
                job.epoch,
                &ctx.opts.node_id,
                ctx.now(),
                ctx.config.reaper.lease_ttl(),
                orch_store::TakeOver::Force,
                why,
            )
            .await?;
        let Some(taken) = taken else { continue };
        if taken.status == JobStatus::Finishing {
            info!(item = %taken.item, job = %taken.id, epoch = taken.epoch, "reconcile: re-finalize");
            ctx.start_finalizer(taken);
            continue;
        }
        // A run cut short by its node's death is an attempt like any other lost run
        // (DESIGN §7, "Crash loops end"): otherwise an agent that kills its node
        // would be restarted for ever. The job keeps its first `started_at`, so
        // Tier-3 bounds it too.
        info!(item = %taken.item, job = %taken.id, epoch = taken.epoch, "reconcile: the run died with its node");
        let reason = format!("exit=lost: {why}");
        let exit = ExitInfo { exit_code: None, reason: Some(reason.clone()), verdict: None, usage: None };
        match ctx.store.record_finished(taken.id, taken.epoch, exit, ctx.now()).await {
            Ok(()) => {}
            Err(orch_store::Error::FencedOut { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
        finalize::commit(ctx, &taken, StageResult::Errored { reason }, false, None).await?;
    }
    Ok(n)
}
