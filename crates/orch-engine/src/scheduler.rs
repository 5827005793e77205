//! The scheduler: claims queued jobs in batches up to `node.max_concurrent_jobs`,
//! woken at once by the store's work signal (in-process writes, PostgreSQL NOTIFY)
//! or a freed slot, and polling as the fallback for writers it cannot hear (the
//! CLI writing to a shared SQLite file).

use std::sync::Arc;

use tracing::{info, warn};

use crate::ctx::Ctx;

pub(crate) async fn run(ctx: Arc<Ctx>) {
    let signal = ctx.store.work_signal();
    let max = ctx.config.node.max_concurrent_jobs.get() as usize;
    loop {
        if ctx.stopping.is_cancelled() {
            return;
        }
        // Register interest before claiming so a wake-up during the claim is not lost.
        let notified = signal.notified();
        let freed = ctx.slot_freed.notified();
        tokio::pin!(notified, freed);
        notified.as_mut().enable();
        freed.as_mut().enable();

        let free = max.saturating_sub(ctx.owned.len());
        let mut claimed_full_batch = false;
        if free > 0 {
            let limit = u32::try_from(free).unwrap_or(u32::MAX);
            let now = ctx.now();
            let sent = tokio::time::Instant::now();
            match ctx.store.claim_jobs(&ctx.opts.node_id, limit, now, ctx.config.reaper.lease_ttl()).await {
                Ok(jobs) => {
                    if !jobs.is_empty() {
                        ctx.lease.claimed(sent);
                    }
                    claimed_full_batch = jobs.len() == free;
                    for job in jobs {
                        info!(item = %job.item, job = %job.id, epoch = job.epoch, stage = %job.stage, "job.claimed");
                        ctx.start_job(job, None);
                    }
                }
                Err(err) => warn!(error = %err, "claim failed"),
            }
        }
        if claimed_full_batch {
            continue; // there may be more queued work: claim again as slots free
        }
        tokio::select! {
            () = ctx.stopping.cancelled() => return,
            () = &mut notified => {}
            () = &mut freed => {}
            () = tokio::time::sleep(ctx.opts.poll_interval) => {}
        }
    }
}
