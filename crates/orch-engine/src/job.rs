//! Running one claimed job: prepare the item's directory and the prompt, start the
//! stage role's agent as a child in its own process group with the agent contract's
//! environment (DESIGN §6), supervise it (timeout, lost lease, shutdown), stamp how
//! it ended, then hand over to the finalizer while still holding the lease.

use std::sync::Arc;

use std::path::Path;

use orch_core::config::{AdapterKind, VerdictSource};
use orch_core::{Verdict, VerdictError};
use orch_store::{ExitInfo, Job, RunInfo};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::node::Ctx;
use crate::process::{self, Ended};
use crate::{Error, finalize, prompt, registry};

/// Runs `job` (claimed by this node at `job.epoch`) to its transition.
/// The caller's guard releases the job from the owned map when this returns.
pub(crate) async fn run(ctx: &Arc<Ctx>, job: &Job, lost: &CancellationToken) -> Result<(), Error> {
    let store = &ctx.store;
    let (id, epoch) = (job.id, job.epoch);
    let Some((role, agent)) = ctx.config.agent_for(&job.stage) else {
        // Validation guarantees every stage has an agent; a store row from an older
        // config may not. Fail the job with the reason rather than crash.
        let exit = ExitInfo {
            exit_code: None,
            reason: Some(format!("stage {} has no agent in the config", job.stage)),
            verdict: None,
        };
        store.record_finished(id, epoch, exit, ctx.now()).await?;
        return finalize::finalize(ctx, &refetch(ctx, job).await?, lost).await;
    };
    let log_path = ctx.layout.job_log(id);
    let prepared = ctx.layout.prepare(&job.item);
    let workdir = match prepared {
        Ok(dir) => dir,
        Err(e) => {
            let reason = format!("cannot prepare working directory under {}: {e}", ctx.layout.root().display());
            store
                .record_finished(
                    id,
                    epoch,
                    ExitInfo { exit_code: None, reason: Some(reason), verdict: None },
                    ctx.now(),
                )
                .await?;
            return finalize::finalize(ctx, &refetch(ctx, job).await?, lost).await;
        }
    };

    let exit = if agent.adapter == AdapterKind::None {
        // A stage that is all checks: no process, straight to its gates.
        let run = RunInfo { pid: 0, pgid: 0, proc_start: None, log_path: log_path.display().to_string() };
        store.record_started(id, epoch, run, ctx.now()).await?;
        ExitInfo { exit_code: Some(0), reason: None, verdict: None }
    } else {
        let verdict_path = ctx.layout.verdict_file(id);
        let _ = std::fs::remove_file(&verdict_path);
        let prompt_path = ctx.layout.prompt_file(id);
        prompt::write(ctx, job, role, &prompt_path).await?;
        let env = vec![
            ("ORCH_ITEM".to_owned(), job.item.to_string()),
            ("ORCH_STAGE".to_owned(), job.stage.to_string()),
            ("ORCH_ROLE".to_owned(), role.to_string()),
            ("ORCH_ATTEMPT".to_owned(), job.attempt.to_string()),
            ("ORCH_JOB_ID".to_owned(), id.to_string()),
            ("ORCH_WORKTREE".to_owned(), workdir.display().to_string()),
            ("ORCH_PROMPT_FILE".to_owned(), prompt_path.display().to_string()),
            ("ORCH_VERDICT_FILE".to_owned(), verdict_path.display().to_string()),
        ];
        let command = ctx.config.resolve_argv(&agent.command);
        match process::spawn(&command, &workdir, &env, &log_path) {
            Err(e) => {
                warn!(item = %job.item, job = %id, epoch, error = %e, "agent could not start");
                ExitInfo {
                    exit_code: None,
                    reason: Some(format!("agent for role {role} could not start: {e}")),
                    verdict: None,
                }
            }
            Ok(mut spawned) => {
                let pid = spawned.pid;
                ctx.set_pgid(id, epoch, pid);
                let run_dir = ctx.layout.run_dir(&ctx.opts.node_id);
                let record = registry::record(&run_dir, &format!("job-{id}-e{epoch}-agent"), pid, spawned.proc_start);
                let run = RunInfo {
                    pid,
                    pgid: pid,
                    proc_start: spawned.proc_start,
                    log_path: log_path.display().to_string(),
                };
                if let Err(e) = store.record_started(id, epoch, run, ctx.now()).await {
                    process::kill_group(pid, nix::sys::signal::Signal::SIGKILL);
                    let _ = spawned.child.wait().await;
                    registry::forget(record);
                    return Err(e.into());
                }
                info!(item = %job.item, job = %id, epoch, pid, stage = %job.stage, "job.started");
                let ended = process::supervise(&mut spawned.child, pid, agent.timeout(), lost.cancelled()).await;
                registry::forget(record);
                match ended {
                    Ended::Exited(code) => exit_with_verdict(code, agent.verdict, &verdict_path),
                    Ended::Signalled(sig) => ExitInfo {
                        exit_code: None,
                        reason: Some(format!("exit=lost: agent was killed by signal {sig}")),
                        verdict: None,
                    },
                    Ended::TimedOut => ExitInfo {
                        exit_code: None,
                        reason: Some(format!("timeout: agent ran past its timeout_s of {}s", agent.timeout_s)),
                        verdict: None,
                    },
                    Ended::Stopped => return stopped(ctx, job).await,
                }
            }
        }
    };
    info!(item = %job.item, job = %id, epoch, exit = ?exit.exit_code, reason = ?exit.reason, "job.finished");
    match store.record_finished(id, epoch, exit, ctx.now()).await {
        Ok(()) => {}
        Err(orch_store::Error::FencedOut { .. }) => return finalize::fenced_out(ctx, job, "record_finished").await,
        Err(e) => return Err(e.into()),
    }
    finalize::finalize(ctx, &refetch(ctx, job).await?, lost).await
}

/// The agent was stopped from outside its own life: at shutdown the job goes back
/// to the queue; otherwise our lease was lost and another owner has it.
async fn stopped(ctx: &Ctx, job: &Job) -> Result<(), Error> {
    if ctx.kill_all.is_cancelled() {
        info!(item = %job.item, job = %job.id, epoch = job.epoch, "job.released: node shutting down");
        return match ctx
            .store
            .release_job(job.id, job.epoch, "node shut down before the agent finished", ctx.now())
            .await
        {
            Ok(()) | Err(orch_store::Error::FencedOut { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        };
    }
    finalize::fenced_out(ctx, job, "agent").await
}

/// The job as the store has it now (exit code, reason, finished_at).
async fn refetch(ctx: &Ctx, job: &Job) -> Result<Job, Error> {
    let mut fresh = ctx.store.get_job(job.id).await?.ok_or(Error::Vanished(job.id))?;
    // Keep the epoch we hold: if the row moved on, our writes will be fenced.
    fresh.epoch = job.epoch;
    Ok(fresh)
}

/// How an agent that exited by itself ended. With `verdict = "file"` and exit 0 the
/// verdict is read and validated here, on the node whose disk holds it, and stored
/// in the job row (or the reason it was refused), so whichever node finalizes the
/// job judges the same verdict.
fn exit_with_verdict(code: i32, source: VerdictSource, path: &Path) -> ExitInfo {
    let mut exit = ExitInfo { exit_code: Some(code), ..ExitInfo::default() };
    if code == 0 && source == VerdictSource::File {
        match read_verdict(path) {
            Ok(v) => exit.verdict = serde_json::to_value(&v).ok(),
            Err(e) => exit.reason = Some(format!("bad verdict: {e}")),
        }
    }
    exit
}

fn read_verdict(path: &Path) -> Result<Verdict, VerdictError> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|_| VerdictError::Missing)?;
    // Read one byte past the limit so an oversized file is refused without loading it.
    let mut buf = Vec::new();
    let limit = orch_core::verdict::MAX_VERDICT_BYTES as u64 + 1;
    file.take(limit).read_to_end(&mut buf).map_err(|_| VerdictError::Missing)?;
    if buf.len() as u64 == limit {
        let size = std::fs::metadata(path).map(|m| m.len() as usize).unwrap_or(buf.len());
        return Err(VerdictError::TooLarge { size });
    }
    Verdict::parse(&buf)
}
