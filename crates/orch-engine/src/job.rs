//! Running one claimed job: prepare the item's directory and the prompt, start the
//! stage role's agent as a child in its own process group with the agent contract's
//! environment (DESIGN §6), supervise it (timeout, lost lease, shutdown), stamp how
//! it ended, then hand over to the finalizer while still holding the lease.

use std::path::Path;
use std::sync::Arc;

use orch_core::config::{AdapterKind, VerdictSource};
use orch_core::{Verdict, VerdictError};
use orch_store::{ExitInfo, Job, RunInfo};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::ctx::Ctx;
use crate::launch::{self, INFRA, LogMode, ProcSpec};
use crate::process::Ended;
use crate::vcs::{self, AfterRun};
use crate::{Error, finalize, prompt, untrusted};

/// Runs `job` (claimed by this node at `job.epoch`) to its transition.
/// The caller's guard releases the job from the owned map when this returns.
pub(crate) async fn run(ctx: &Arc<Ctx>, job: &Job, lost: &CancellationToken) -> Result<(), Error> {
    let (id, epoch) = (job.id, job.epoch);
    let Some((role, agent)) = ctx.config.agent_for(&job.stage) else {
        // Validation guarantees every stage has an agent; a store row from an older
        // config may not. Fail the job with the reason rather than crash.
        let reason = format!("stage {} has no agent in the config", job.stage);
        return finish(ctx, job, lost, ExitInfo { exit_code: None, reason: Some(reason), verdict: None }).await;
    };
    let log_path = ctx.layout.job_log(id);
    let infra = |reason: String| ExitInfo { exit_code: None, reason: Some(reason), verdict: None };
    if let Err(e) = ctx.layout.prepare() {
        let reason = format!("{INFRA}cannot prepare the data folder {}: {e}", ctx.layout.root().display());
        return finish(ctx, job, lost, infra(reason)).await;
    }
    let item = ctx.within_lease(ctx.store.get_item(&job.item)).await?.ok_or(Error::Vanished(id))?;
    // The item's worktree at the SHA the store records, on whichever node this is.
    let tree = match vcs::prepare(ctx, job, &item).await {
        Ok(tree) => tree,
        Err(vcs::PrepareError::Fenced) => return finalize::fenced_out(ctx, job, "prepare", None).await,
        Err(vcs::PrepareError::Infra(reason)) => {
            warn!(item = %job.item, job = %id, reason = %reason, "cannot prepare the item's worktree");
            return finish(ctx, job, lost, infra(reason)).await;
        }
    };
    let workdir = tree.wt.path.clone();

    let exit = if agent.adapter == AdapterKind::None {
        // A stage that is all checks: no process, straight to its gates.
        let run = RunInfo { pid: 0, pgid: 0, proc_start: None, log_path: log_path.display().to_string() };
        owner_write(ctx, job, "record_started", ctx.store.record_started(id, epoch, run, ctx.now())).await?;
        ExitInfo { exit_code: Some(0), reason: None, verdict: None }
    } else {
        let verdict_path = ctx.layout.verdict_file(id);
        let prompt_path = ctx.layout.prompt_file(id);
        let prepared = async {
            // Whatever an earlier run left at the verdict path (a file, a FIFO, a
            // link) must not be read as this run's verdict.
            untrusted::clear(&verdict_path)
                .map_err(|source| Error::Io { path: verdict_path.display().to_string(), source })?;
            prompt::write(ctx, job, role, &prompt_path).await
        };
        if let Err(e) = prepared.await {
            let reason = format!("{INFRA}cannot write the agent's prompt or clear its verdict file: {e}");
            return finish(ctx, job, lost, ExitInfo { exit_code: None, reason: Some(reason), verdict: None }).await;
        }
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
        let spec = ProcSpec {
            name: format!("job-{id}-e{epoch}-agent"),
            argv: &command,
            cwd: &workdir,
            env: &env,
            log: log_path.clone(),
            log_mode: LogMode::Append,
        };
        match launch::start(ctx, job, &spec, lost).await {
            Err(e) => {
                if lost.is_cancelled() {
                    return stopped(ctx, job, None).await;
                }
                warn!(item = %job.item, job = %id, epoch, error = %e, "agent could not start");
                ExitInfo {
                    exit_code: None,
                    reason: Some(format!("{INFRA}agent for role {role} could not start: {e}")),
                    verdict: None,
                }
            }
            Ok(started) => {
                let pid = started.spawned.pid;
                let run = RunInfo {
                    pid,
                    pgid: pid,
                    proc_start: started.spawned.proc_start,
                    log_path: log_path.display().to_string(),
                };
                if let Err(e) = ctx.within_lease(ctx.store.record_started(id, epoch, run, ctx.now())).await {
                    // Nothing may run that the store does not know of: kill it.
                    let kill = CancellationToken::new();
                    kill.cancel();
                    launch::wait(ctx, job, started, agent.timeout(), &kill).await;
                    return match e {
                        Error::Store(orch_store::Error::FencedOut { .. }) => {
                            finalize::fenced_out(ctx, job, "record_started", Some(ctx.now())).await
                        }
                        other => Err(other),
                    };
                }
                info!(item = %job.item, job = %id, epoch, pid, stage = %job.stage, "job.started");
                let ran = std::time::Instant::now();
                let ended = launch::wait(ctx, job, started, agent.timeout(), lost).await;
                ctx.metrics.agent_ran(job.stage.as_str(), ran.elapsed());
                if lost.is_cancelled() {
                    // However the process ended (the self-fence SIGKILLs it before
                    // telling the task), this owner lost the job: its run's result is
                    // not ours to record. Every process of the run is dead by now.
                    return stopped(ctx, job, Some(ctx.now())).await;
                }
                match ended {
                    Ended::Exited(code) => match vcs::after_run(ctx, job, &item, &tree, role.as_str()).await {
                        Ok(_) => exit_with_verdict(code, agent.verdict, &verdict_path).await,
                        Err(AfterRun::Fenced) => {
                            return finalize::fenced_out(ctx, job, "push", Some(ctx.now())).await;
                        }
                        Err(AfterRun::Contained(why)) => ExitInfo {
                            exit_code: None,
                            reason: Some(format!("agent left its branch: {why}")),
                            verdict: None,
                        },
                        Err(AfterRun::Infra(reason)) => infra(reason),
                    },
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
                    // Every process of the run is dead by now.
                    Ended::Stopped => return stopped(ctx, job, Some(ctx.now())).await,
                }
            }
        }
    };
    finish(ctx, job, lost, exit).await
}

/// Records how the run ended and hands over to the finalizer, still holding the lease.
async fn finish(ctx: &Arc<Ctx>, job: &Job, lost: &CancellationToken, exit: ExitInfo) -> Result<(), Error> {
    info!(item = %job.item, job = %job.id, epoch = job.epoch, exit = ?exit.exit_code, reason = ?exit.reason, "job.finished");
    let call = ctx.store.record_finished(job.id, job.epoch, exit, ctx.now());
    if !owner_write(ctx, job, "record_finished", call).await? {
        return Ok(());
    }
    finalize::finalize(ctx, &refetch(ctx, job).await?, lost).await
}

/// Runs an owner's write bounded by its lease. `Ok(false)` if the owner turned
/// out to be fenced (recorded as `job.fenced_out`), so the caller stops.
async fn owner_write(
    ctx: &Ctx,
    job: &Job,
    step: &str,
    call: impl std::future::Future<Output = Result<(), orch_store::Error>>,
) -> Result<bool, Error> {
    match ctx.within_lease(call).await {
        Ok(()) => Ok(true),
        Err(Error::Store(orch_store::Error::FencedOut { .. })) => {
            finalize::fenced_out(ctx, job, step, None).await?;
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

/// The agent was stopped from outside its own life: at shutdown the job goes back
/// to the queue; otherwise our lease was lost and another owner has it.
async fn stopped(ctx: &Ctx, job: &Job, killed_at: Option<orch_core::Timestamp>) -> Result<(), Error> {
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
    finalize::fenced_out(ctx, job, "agent", killed_at).await
}

/// The job as the store has it now (exit code, reason, finished_at).
async fn refetch(ctx: &Ctx, job: &Job) -> Result<Job, Error> {
    let mut fresh = ctx.within_lease(ctx.store.get_job(job.id)).await?.ok_or(Error::Vanished(job.id))?;
    // Keep the epoch we hold: if the row moved on, our writes will be fenced.
    fresh.epoch = job.epoch;
    Ok(fresh)
}

/// How an agent that exited by itself ended. With `verdict = "file"` and exit 0 the
/// verdict is read and validated here, on the node whose disk holds it, and stored
/// in the job row (or the reason it was refused), so whichever node finalizes the
/// job judges the same verdict. The file is the agent's: read as hostile input.
async fn exit_with_verdict(code: i32, source: VerdictSource, path: &Path) -> ExitInfo {
    let mut exit = ExitInfo { exit_code: Some(code), ..ExitInfo::default() };
    if code == 0 && source == VerdictSource::File {
        let limit = orch_core::verdict::MAX_VERDICT_BYTES as u64;
        let parsed = match untrusted::read(path, limit).await {
            Ok(bytes) => Verdict::parse(&bytes).map_err(|e| e.to_string()),
            Err(untrusted::ReadError::Missing { .. }) => Err(VerdictError::Missing.to_string()),
            Err(untrusted::ReadError::TooLarge { size, .. }) => {
                Err(VerdictError::TooLarge { size: usize::try_from(size).unwrap_or(usize::MAX) }.to_string())
            }
            Err(e) => Err(format!("verdict file refused: {e}")),
        };
        match parsed {
            Ok(v) => exit.verdict = serde_json::to_value(&v).ok(),
            Err(e) => exit.reason = Some(format!("bad verdict: {e}")),
        }
    }
    exit
}
