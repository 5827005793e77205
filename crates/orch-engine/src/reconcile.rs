//! Start-up reconcile: before claiming anything, a node settles the jobs its
//! previous incarnation owned. Surviving agent groups are killed first (matched by
//! pid and start time so a recycled pid is never hit); running jobs go back to the
//! queue; finishing jobs are taken over (epoch + 1) and finalized again.

use std::sync::Arc;

use orch_core::JobStatus;
use tracing::info;

use crate::node::Ctx;
use crate::{Error, process, registry};

pub(crate) async fn run(ctx: &Arc<Ctx>) -> Result<usize, Error> {
    // Every group the previous incarnation started and did not see die, agents and
    // gates alike, whatever the store now says about their jobs.
    let killed = registry::kill_recorded(&ctx.layout.run_dir(&ctx.opts.node_id));
    if killed > 0 {
        info!(killed, "killed process groups left by the previous incarnation");
    }
    let jobs = ctx.store.jobs_owned_by(&ctx.opts.node_id).await?;
    let n = jobs.len();
    let current: Vec<_> = ctx.owned_keys().into_iter().map(|(id, _)| id).collect();
    for job in jobs {
        if current.contains(&job.id) {
            continue; // already owned by this incarnation (e.g. taken over just now)
        }
        if let (Some(pid), Some(pgid)) = (job.pid, job.pgid)
            && process::kill_if_same_leader(pid, pgid, job.proc_start)
        {
            info!(item = %job.item, job = %job.id, pgid, "killed orphaned agent group of previous incarnation");
        }
        match job.status {
            JobStatus::Running => {
                info!(item = %job.item, job = %job.id, epoch = job.epoch, "reconcile: requeue running job");
                match ctx.store.release_job(job.id, job.epoch, "node restarted while the agent ran", ctx.now()).await {
                    Ok(()) | Err(orch_store::Error::FencedOut { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            JobStatus::Finishing => {
                let taken = ctx
                    .store
                    .take_over(
                        job.id,
                        job.epoch,
                        &ctx.opts.node_id,
                        ctx.now(),
                        ctx.config.reaper.lease_ttl(),
                        orch_store::TakeOver::Force,
                        "node restarted during finalization",
                    )
                    .await?;
                if let Some(taken) = taken {
                    info!(item = %taken.item, job = %taken.id, epoch = taken.epoch, "reconcile: re-finalize");
                    ctx.start_finalizer(taken);
                }
            }
            _ => {}
        }
    }
    Ok(n)
}
