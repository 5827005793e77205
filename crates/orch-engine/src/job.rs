//! Running one claimed job: prepare the item's directory and the prompt, start the
//! stage role's agent as a child in its own process group with the agent contract's
//! environment (DESIGN §6), supervise it (timeout, lost lease, shutdown), stamp how
//! it ended, then hand over to the finalizer while still holding the lease.

use std::path::Path;
use std::sync::Arc;

use orch_agents::Outcome;
use orch_core::config::{AdapterKind, VerdictSource};
use orch_core::{Verdict, VerdictError};
use orch_store::{ExitInfo, Job, RunInfo};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::ctx::Ctx;
use crate::launch::{self, INFRA, LogMode, ProcSpec};
use crate::process::Ended;
use crate::vcs::{self, AfterRun};
use crate::{Error, adapter, agent_stream, budget, finalize, prompt, untrusted};

/// Runs `job` (claimed by this node at `job.epoch`) to its transition, in
/// `settled` when the previous stage left the worktree ready (`vcs::prepare`).
/// The caller's guard releases the job from the owned map when this returns.
pub(crate) async fn run(
    ctx: &Arc<Ctx>,
    job: &Job,
    lost: &CancellationToken,
    settled: Option<vcs::Tree>,
) -> Result<(), Error> {
    let (id, epoch) = (job.id, job.epoch);
    let Some((role, agent)) = ctx.config.agent_for(&job.stage) else {
        // Validation guarantees every stage has an agent; a store row from an older
        // config may not. Fail the job with the reason rather than crash.
        let reason = format!("stage {} has no agent in the config", job.stage);
        return finish(ctx, job, lost, ExitInfo { exit_code: None, reason: Some(reason), verdict: None, usage: None })
            .await;
    };
    let log_path = ctx.layout.job_log(id);
    let infra = |reason: String| ExitInfo { exit_code: None, reason: Some(reason), verdict: None, usage: None };
    if let Err(e) = ctx.layout.prepare() {
        let reason = format!("{INFRA}cannot prepare the data folder {}: {e}", ctx.layout.root().display());
        return finish(ctx, job, lost, infra(reason)).await;
    }
    let item = ctx.within_lease(ctx.store.get_item(&job.item)).await?.ok_or(Error::Vanished(id))?;
    // The item's worktree at the SHA the store records, on whichever node this is.
    let tree = match vcs::prepare(ctx, job, &item, settled).await {
        Ok(tree) => tree,
        Err(vcs::PrepareError::Fenced) => return finalize::fenced_out(ctx, job, "prepare", None).await,
        Err(vcs::PrepareError::Infra(reason)) => {
            warn!(item = %job.item, job = %id, reason = %reason, "cannot prepare the item's worktree");
            return finish(ctx, job, lost, infra(reason)).await;
        }
    };
    let workdir = tree.wt.path.clone();

    // The worktree as the run leaves it, when the next stage can start there.
    let mut settled = None;
    let exit = if agent.adapter == AdapterKind::None {
        // A stage that is all checks: no process, straight to its gates, or with
        // none, to its transition, which records the start too.
        let run = RunInfo { pid: 0, pgid: 0, proc_start: None, log_path: log_path.display().to_string() };
        let exit = ExitInfo { exit_code: Some(0), reason: None, verdict: None, usage: None };
        return end_run(ctx, job, lost, &item, exit, Some(run), Some(tree)).await;
    } else {
        let verdict_path = ctx.layout.verdict_file(id);
        let prompt_path = ctx.layout.prompt_file(id);
        let prepared = async {
            // Whatever an earlier run left at the verdict path (a file, a FIFO, a
            // link) must not be read as this run's verdict.
            untrusted::clear(&verdict_path)
                .map_err(|source| Error::Io { path: verdict_path.display().to_string(), source })?;
            prompt::write(ctx, job, &item, role, &prompt_path).await
        };
        let prompt_text = match prepared.await {
            Ok(text) => text,
            Err(e) => {
                let reason = format!("{INFRA}cannot write the agent's prompt or clear its verdict file: {e}");
                return finish(ctx, job, lost, infra(reason)).await;
            }
        };
        let mut env = vec![
            ("ORCH_ITEM".to_owned(), job.item.to_string()),
            ("ORCH_STAGE".to_owned(), job.stage.to_string()),
            ("ORCH_ROLE".to_owned(), role.to_string()),
            ("ORCH_ATTEMPT".to_owned(), job.attempt.to_string()),
            ("ORCH_JOB_ID".to_owned(), id.to_string()),
            ("ORCH_WORKTREE".to_owned(), workdir.display().to_string()),
            ("ORCH_PROMPT_FILE".to_owned(), prompt_path.display().to_string()),
            ("ORCH_VERDICT_FILE".to_owned(), verdict_path.display().to_string()),
        ];
        let paths = adapter::Paths { prompt_file: &prompt_path, verdict_file: &verdict_path, worktree: &workdir };
        let (command, parser) = match adapter::prepare(ctx, agent, id, &prompt_text, &paths).await {
            Ok(Some(p)) => {
                // The contract's variables come last, so an adapter's env cannot shadow them.
                env.splice(0..0, p.env);
                (p.argv, Some(p.parser))
            }
            Ok(None) => (ctx.config.resolve_argv(&agent.command), None),
            Err(why) => {
                return finish(ctx, job, lost, infra(format!("{INFRA}cannot prepare the agent's run: {why}"))).await;
            }
        };
        let spec = ProcSpec {
            name: format!("job-{id}-e{epoch}-agent"),
            argv: &command,
            cwd: &workdir,
            env: &env,
            log: log_path.clone(),
            log_mode: LogMode::Append,
            pipe_stdout: parser.is_some(),
        };
        match launch::start(ctx, job, &spec, lost).await {
            Err(e) => {
                if lost.is_cancelled() {
                    return stopped(ctx, job, None).await;
                }
                warn!(item = %job.item, job = %id, epoch, error = %e, "agent could not start");
                ExitInfo {
                    reason: Some(format!("{INFRA}agent for role {role} could not start: {e}")),
                    ..ExitInfo::default()
                }
            }
            Ok(mut started) => {
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
                // A stop of this run alone (stall, budget) or of everything the
                // owner holds (`lost`, which cancels this child token too).
                let run_stop = lost.child_token();
                let ran = std::time::Instant::now();
                let stdout = started.spawned.child.stdout.take();
                let budget = budget::check(ctx, job).await;
                let (ended, streamed) =
                    tokio::join!(launch::wait(ctx, job, started, agent.timeout(), &run_stop), async {
                        match (stdout, parser) {
                            (Some(out), Some(p)) => {
                                Some(agent_stream::pump(out, p, &log_path, agent.cli.stall(), &run_stop, budget).await)
                            }
                            _ => None,
                        }
                    });
                ctx.metrics.agent_ran(job.stage.as_str(), ran.elapsed());
                if lost.is_cancelled() {
                    // However the process ended (the self-fence SIGKILLs it before
                    // telling the task), this owner lost the job: its run's result is
                    // not ours to record. Every process of the run is dead by now.
                    return stopped(ctx, job, Some(ctx.now())).await;
                }
                let usage = streamed.as_ref().map(|s| s.parser.usage()).filter(|u| !u.is_empty());
                let outcome = streamed.as_ref().map(|s| s.parser.outcome());
                let mut exit = match ended {
                    Ended::Exited(code) => match vcs::after_run(ctx, job, &item, &tree, role.as_str()).await {
                        Ok(left) => {
                            settled = left;
                            exit_with_verdict(code, agent.verdict, &verdict_path, outcome.as_ref()).await
                        }
                        Err(AfterRun::Fenced) => {
                            return finalize::fenced_out(ctx, job, "push", Some(ctx.now())).await;
                        }
                        Err(AfterRun::Contained(why)) => {
                            ExitInfo { reason: Some(format!("agent left its branch: {why}")), ..ExitInfo::default() }
                        }
                        Err(AfterRun::Infra(reason)) => infra(reason),
                    },
                    Ended::Signalled(sig) => ExitInfo {
                        reason: Some(format!("exit=lost: agent was killed by signal {sig}")),
                        ..ExitInfo::default()
                    },
                    Ended::TimedOut => ExitInfo {
                        reason: Some(format!("timeout: agent ran past its timeout_s of {}s", agent.timeout_s)),
                        ..ExitInfo::default()
                    },
                    Ended::Stopped => match &streamed {
                        Some(s) if s.over_budget.is_some() => ExitInfo {
                            reason: s.over_budget.as_ref().map(|r| format!("{}{r}", budget::BUDGET)),
                            ..ExitInfo::default()
                        },
                        Some(s) if s.stalled => ExitInfo {
                            reason: Some(format!(
                                "stalled: the agent's event stream showed no progress for {}s; the run was stopped",
                                agent.cli.stall_s
                            )),
                            ..ExitInfo::default()
                        },
                        // Every process of the run is dead by now.
                        _ => return stopped(ctx, job, Some(ctx.now())).await,
                    },
                };
                if let Some(u) = &usage {
                    ctx.metrics.agent_used(job.stage.as_str(), u);
                }
                exit.usage = usage;
                exit
            }
        }
    };
    end_run(ctx, job, lost, &item, exit, None, settled).await
}

/// Ends the run: in one write with its transition when the stage allows it
/// (`finalize::direct`), else by recording it and finalizing. `started` is the
/// run `record_started` has not recorded yet (a stage that runs no process);
/// `settled` the worktree the next stage can start in (`vcs::after_run`).
async fn end_run(
    ctx: &Arc<Ctx>,
    job: &Job,
    lost: &CancellationToken,
    item: &orch_store::Item,
    exit: ExitInfo,
    started: Option<RunInfo>,
    settled: Option<vcs::Tree>,
) -> Result<(), Error> {
    info!(item = %job.item, job = %job.id, epoch = job.epoch, exit = ?exit.exit_code, reason = ?exit.reason, "job.finished");
    // A lost lease or a shutdown is the finalizer's to handle, on the usual path.
    let (exit, started) = if lost.is_cancelled() {
        (exit, started)
    } else {
        match finalize::direct(ctx, job, item, exit, started, settled).await? {
            Some(back) => back,
            None => return Ok(()),
        }
    };
    if let Some(run) = started {
        let call = ctx.store.record_started(job.id, job.epoch, run, ctx.now());
        if !owner_write(ctx, job, "record_started", call).await? {
            return Ok(());
        }
    }
    record_and_finalize(ctx, job, lost, exit).await
}

/// Records how the run ended and hands over to the finalizer, still holding the
/// lease (a run that ended before its worktree or item could be had).
async fn finish(ctx: &Arc<Ctx>, job: &Job, lost: &CancellationToken, exit: ExitInfo) -> Result<(), Error> {
    info!(item = %job.item, job = %job.id, epoch = job.epoch, exit = ?exit.exit_code, reason = ?exit.reason, "job.finished");
    record_and_finalize(ctx, job, lost, exit).await
}

/// `record_finished`, then the finalizer on the job as the store has it.
async fn record_and_finalize(ctx: &Arc<Ctx>, job: &Job, lost: &CancellationToken, exit: ExitInfo) -> Result<(), Error> {
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
///
/// A coding agent's `outcome` (from its event stream) comes first: a run that
/// reported failure (max turns, an API error) fails with that reason whatever it
/// wrote; with `verdict = "result"`, a run that succeeded without writing a
/// verdict file stands as a pass.
async fn exit_with_verdict(code: i32, source: VerdictSource, path: &Path, outcome: Option<&Outcome>) -> ExitInfo {
    let mut exit = ExitInfo { exit_code: Some(code), ..ExitInfo::default() };
    match outcome {
        Some(Outcome::Failed { reason }) => {
            exit.reason = Some(reason.clone());
            return exit;
        }
        Some(Outcome::Unfinished) if code != 0 => {
            exit.reason = Some(format!("the agent exited with code {code} before reporting a result"));
            return exit;
        }
        _ => {}
    }
    if code == 0 && matches!(source, VerdictSource::File | VerdictSource::Result) {
        let limit = orch_core::verdict::MAX_VERDICT_BYTES as u64;
        let parsed = match untrusted::read(path, limit).await {
            Ok(bytes) => Verdict::parse(&bytes).map_err(|e| e.to_string()),
            Err(untrusted::ReadError::Missing { .. }) if source == VerdictSource::Result => match outcome {
                Some(Outcome::Success { summary }) => {
                    let summary = if summary.is_empty() { "the agent finished without error" } else { summary };
                    Ok(Verdict {
                        verdict: orch_core::VerdictValue::Pass,
                        summary: summary.to_owned(),
                        escalate: false,
                        artifacts: Vec::new(),
                        metrics: Default::default(),
                    })
                }
                _ => Err("the agent wrote no verdict file and reported no result".to_owned()),
            },
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
