//! Finalization: after the agent exits, while holding the job's lease, judge the
//! run (exit code, verdict), run the outgoing edge's gates in order, call the core's
//! `decide`, and commit the transition fenced by epoch and version. A finalizer that
//! learns it is fenced out stops at once, records `job.fenced_out`, and does nothing more.

use orch_core::config::VerdictSource;
use orch_core::{EventKind, JobOutcome, JobStatus, Outcome, StageResult, Verdict, VerdictValue, decide};
use orch_store::{
    ClaimNext, CommitOutcome, ExitInfo, Item, Job, JobFinal, NewEvent, RunEnd, RunInfo, TransitionCommit,
};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::ctx::Ctx;
use crate::vcs::{self, AfterRun};
use crate::{Error, events, gates};

/// The judgement of a finished run before any gate runs.
struct Judged {
    result: StageResult,
    escalate: bool,
    verdict: Option<serde_json::Value>,
}

/// Finalizes `job`, which this node holds at `job.epoch` and whose run has ended.
///
/// # Errors
/// Store errors other than fencing (which is an expected, recorded outcome).
pub(crate) async fn finalize(ctx: &Ctx, job: &Job, lost: &CancellationToken) -> Result<(), Error> {
    ctx.metrics.finalizer_started();
    let r = finalize_inner(ctx, job, lost).await;
    ctx.metrics.finalizer_ended();
    r
}

async fn finalize_inner(ctx: &Ctx, job: &Job, lost: &CancellationToken) -> Result<(), Error> {
    let mut judged = judge(ctx, job);
    // A finalization taken over after the merge landed (the owner died between
    // the merge and the commit): the work is in main; record done, judge nothing.
    if judged.result == StageResult::Passed
        && let Some(item) = ctx.within_lease(ctx.store.get_item(&job.item)).await?
        && finishes_item(ctx, job, &item, judged.escalate)
        && vcs::already_merged(ctx, &item).await
    {
        info!(item = %job.item, job = %job.id, "the item's head is already in main: finishing without re-running gates");
        return commit(ctx, job, judged.result, judged.escalate, judged.verdict).await;
    }
    if judged.result == StageResult::Passed {
        match gates::run_edge_gates(ctx, job, lost).await? {
            gates::GatesOutcome::Passed => {}
            gates::GatesOutcome::Failed(reason) => judged.result = StageResult::Rejected { reason },
            // The check could not run: nothing was judged, so the stage is retried
            // in place, never rolled back along `on_fail`.
            gates::GatesOutcome::Infra(reason) => judged.result = StageResult::Errored { reason },
            gates::GatesOutcome::Stopped => return stopped(ctx, job).await,
        }
    }
    if lost.is_cancelled() {
        return stopped(ctx, job).await;
    }
    commit(ctx, job, judged.result, judged.escalate, judged.verdict).await
}

async fn stopped(ctx: &Ctx, job: &Job) -> Result<(), Error> {
    if ctx.kill_all.is_cancelled() {
        // Shutdown cut the finalization short; reconcile or Tier-2 picks it up.
        info!(item = %job.item, job = %job.id, epoch = job.epoch, "finalization interrupted by shutdown");
        return Ok(());
    }
    // Any gate of ours has been waited for and killed by now.
    fenced_out(ctx, job, "finalizer", Some(ctx.now())).await
}

/// Commits the transition for `result` with the job ending accordingly.
pub(crate) async fn commit(
    ctx: &Ctx,
    job: &Job,
    result: StageResult,
    escalate: bool,
    verdict: Option<serde_json::Value>,
) -> Result<(), Error> {
    let Some(item) = ctx.within_lease(ctx.store.get_item(&job.item)).await? else {
        return Err(Error::Vanished(job.id));
    };
    let mut result = result;
    // The last stage passed: the pull request merges into main now, before the
    // item is recorded done, and only here (DESIGN §6: main changes only by this).
    if result == StageResult::Passed && finishes_item(ctx, job, &item, escalate) {
        match vcs::merge(ctx, job, &item).await {
            Ok(None) => {}
            Ok(Some(conflict)) => result = StageResult::Conflict { reason: conflict },
            Err(AfterRun::Fenced) => return fenced_out(ctx, job, "merge", None).await,
            Err(AfterRun::Infra(reason) | AfterRun::Contained(reason)) => result = StageResult::Errored { reason },
        }
    }
    let commit = transition(ctx, job, &item, result, escalate, verdict);
    apply(ctx, job, commit, ctx.now()).await.map(|_| ())
}

/// Ends a run whose stage has nothing to do between the agent's exit and the
/// transition (its result needs no gate and no merge) in one store write: the
/// transition also records the run (`record_started` for a stage that runs no
/// process, `record_finished`) and, unless the node is stopping, claims the
/// item's next job for this node, which starts at once in the slot this one
/// frees, in the worktree `settled` (see `vcs::prepare`). `item` is the row
/// read when the job started; a stale one is a version
/// conflict, as in `commit`. Returns the exit and run back, untouched, when the
/// stage does need the separate writes (gates, a merge), so the caller records
/// them and finalizes as usual.
pub(crate) async fn direct(
    ctx: &std::sync::Arc<Ctx>,
    job: &Job,
    item: &Item,
    exit: ExitInfo,
    started: Option<RunInfo>,
    settled: Option<crate::vcs::Tree>,
) -> Result<Option<(ExitInfo, Option<RunInfo>)>, Error> {
    // The job as `record_finished` would have left it, for judging.
    let mut ended = job.clone();
    ended.exit_code = exit.exit_code;
    ended.reason.clone_from(&exit.reason);
    ended.verdict = exit.verdict.clone().or(ended.verdict);
    let judged = judge(ctx, &ended);
    if judged.result == StageResult::Passed
        && (!gates::edge_gates(ctx, job, item).is_empty() || finishes_item(ctx, job, item, judged.escalate))
    {
        return Ok(Some((exit, started)));
    }
    ctx.metrics.finalizer_started();
    let r = direct_commit(ctx, job, item, judged, exit, started, settled).await;
    ctx.metrics.finalizer_ended();
    r.map(|()| None)
}

async fn direct_commit(
    ctx: &std::sync::Arc<Ctx>,
    job: &Job,
    item: &Item,
    judged: Judged,
    exit: ExitInfo,
    started: Option<RunInfo>,
    settled: Option<crate::vcs::Tree>,
) -> Result<(), Error> {
    // A run that errored (lost, timed out, could not start) is retried where the
    // scheduler puts it, not pinned to the node it just failed on.
    let errored = matches!(judged.result, StageResult::Errored { .. });
    let mut commit = transition(ctx, job, item, judged.result, judged.escalate, judged.verdict);
    let mut run_events = Vec::with_capacity(2);
    if let Some(run) = &started {
        run_events.push(NewEvent::job_started(job.item.clone(), job.id, job.epoch, run));
    }
    run_events.push(NewEvent::job_finished(job.item.clone(), job.id, job.epoch, &exit));
    commit.events.splice(0..0, run_events);
    if let Some(end) = commit.job.as_mut() {
        // What the row would hold after `record_finished` and then the commit.
        end.reason = end.reason.take().or(exit.reason);
        end.verdict = end.verdict.take().or(exit.verdict);
        end.run_end = Some(RunEnd { run: started, exit_code: exit.exit_code, usage: exit.usage });
    }
    let claim = match (&commit.enqueue, errored || ctx.stopping.is_cancelled()) {
        (Some(next), false) => {
            Some((ClaimNext { node: ctx.opts.node_id.clone(), lease_ttl: ctx.config.reaper.lease_ttl() }, next.clone()))
        }
        _ => None,
    };
    commit.claim_next = claim.as_ref().map(|(c, _)| c.clone());
    let sent = tokio::time::Instant::now();
    let now = ctx.now();
    if let (Some(id), Some((claim, (stage, attempt)))) = (apply(ctx, job, commit, now).await?, claim) {
        // The lease of the job just claimed runs from the moment the request left.
        ctx.lease.claimed(sent);
        ctx.metrics.handoff_claimed();
        let next = claim.claimed_job(id, &job.item, &stage, attempt, now);
        if ctx.stopping.is_cancelled() {
            // Shutdown began while the write was in flight: the job goes back to
            // the queue rather than start work the drain would cut short.
            let why = "node shutting down: the job its transition claimed goes back to the queue";
            match ctx.store.release_job(next.id, next.epoch, why, ctx.now()).await {
                Ok(()) | Err(orch_store::Error::FencedOut { .. }) => {}
                Err(e) => warn!(job = %next.id, error = %e, "cannot release the claimed job; Tier-1 will"),
            }
            return Ok(());
        }
        info!(item = %next.item, job = %next.id, epoch = next.epoch, stage = %next.stage, "job.claimed with the transition");
        // A job at epoch 1 never had another owner. One taken over (epoch > 1)
        // may have a stale owner whose late push lands on the branch after this
        // owner's fetch: its next stage prepares in full, fetching again.
        ctx.start_job(next, settled.filter(|_| job.epoch == 1));
    }
    Ok(())
}

/// The store commit for `result`: `decide` on the item as read, the job ending
/// accordingly; an outcome that no longer applies ends the job only.
fn transition(
    ctx: &Ctx,
    job: &Job,
    item: &Item,
    result: StageResult,
    escalate: bool,
    verdict: Option<serde_json::Value>,
) -> TransitionCommit {
    let (status, reason) = match &result {
        StageResult::Passed => (JobStatus::Done, None),
        StageResult::Rejected { reason }
        | StageResult::Errored { reason }
        | StageResult::NeedsHuman { reason }
        | StageResult::Conflict { reason } => (JobStatus::Failed, Some(reason.clone())),
    };
    let final_ = JobFinal { id: job.id, epoch: job.epoch, status, reason: reason.clone(), verdict, run_end: None };
    let outcome = Outcome::Job(JobOutcome { stage: job.stage.clone(), result, escalate });
    match decide(&item.state(), &ctx.config, &outcome) {
        Ok(t) => {
            info!(item = %job.item, job = %job.id, epoch = job.epoch, decision = ?t.decision, "transition");
            events::job_commit(&job.item, &item.stage, item.version, &t, final_)
        }
        Err(err) => {
            // The item moved in a way this job cannot apply to (e.g. an operator
            // acted). End the job so it never lingers, without moving the item.
            warn!(item = %job.item, job = %job.id, error = %err, "outcome does not apply; ending job only");
            let mut next = item.state();
            next.version += 1;
            let reason = format!("outcome not applied: {err}");
            let mut e = NewEvent::new(job.item.clone(), EventKind::JobFailed);
            e.job = Some(job.id);
            e.epoch = Some(job.epoch);
            e.reason = Some(reason.clone());
            let mut events = vec![e];
            if !next.status.is_terminal() {
                // Nothing else will move the item: stop it for a human, who can
                // retry, escalate or cancel it.
                next.status = orch_core::ItemStatus::Blocked;
                let mut b = NewEvent::new(job.item.clone(), EventKind::ItemBlocked);
                b.job = Some(job.id);
                b.epoch = Some(job.epoch);
                b.from = Some(item.stage.to_string());
                b.to = Some(item.stage.to_string());
                b.reason = Some(reason);
                b.data = json!({ "track": item.track.as_str(), "status": "blocked" });
                events.push(b);
            }
            TransitionCommit {
                item: job.item.clone(),
                expected_version: item.version,
                job: Some(JobFinal { status: JobStatus::Failed, reason: events[0].reason.clone(), ..final_ }),
                next,
                cancel_active_jobs: false,
                events,
                enqueue: None,
                claim_next: None,
            }
        }
    }
}

/// Sends `commit` at `now` under the lease; the id of the job it enqueued when
/// applied. Fenced out is recorded and ends the caller's work (`Ok(None)`); a
/// version conflict under a live epoch is an integrity breach.
async fn apply(
    ctx: &Ctx,
    job: &Job,
    commit: TransitionCommit,
    now: orch_core::Timestamp,
) -> Result<Option<orch_store::JobId>, Error> {
    let kind = commit
        .events
        .iter()
        .find(|e| e.kind.is_transition() || e.kind == EventKind::JobFailed)
        .map_or("none", |e| e.kind.as_str());
    match ctx.within_lease(ctx.store.commit_transition(commit, now)).await? {
        CommitOutcome::Applied { enqueued } => {
            ctx.metrics.transitioned(kind);
            Ok(enqueued)
        }
        CommitOutcome::FencedOut => fenced_out(ctx, job, "commit", None).await.map(|()| None),
        CommitOutcome::Conflict => {
            // Same epoch, different version: someone changed the item without
            // fencing this job. That breaks I2's premise; stop loudly.
            error!(item = %job.item, job = %job.id, epoch = job.epoch, "version conflict while holding a live epoch");
            Err(Error::Conflict(job.item.to_string()))
        }
    }
}

/// Whether a passing `job` would finish its item (its stage's exit is `done`).
fn finishes_item(ctx: &Ctx, job: &Job, item: &Item, escalate: bool) -> bool {
    let outcome = Outcome::Job(JobOutcome { stage: job.stage.clone(), result: StageResult::Passed, escalate });
    matches!(decide(&item.state(), &ctx.config, &outcome), Ok(t) if matches!(t.decision, orch_core::Decision::Done { .. }))
}

/// Records that this owner was fenced out at `step` and stops. `killed_at` is when
/// this owner's processes for the job were last known alive at the latest (they
/// were dead by then); a self-fence's own time wins, being earlier. The store may
/// be unreachable (that is often why the owner was fenced): the event is retried
/// with backoff for a bounded time, then given up with a log line.
pub(crate) async fn fenced_out(
    ctx: &Ctx,
    job: &Job,
    step: &str,
    killed_at: Option<orch_core::Timestamp>,
) -> Result<(), Error> {
    ctx.metrics.fenced_out();
    let killed_at = ctx.owned.fenced_at(job.id, job.epoch).or(killed_at);
    warn!(item = %job.item, job = %job.id, epoch = job.epoch, step, killed_at = ?killed_at, "job.fenced_out");
    let mut e = NewEvent::new(job.item.clone(), EventKind::JobFencedOut);
    e.job = Some(job.id);
    e.epoch = Some(job.epoch);
    e.reason = Some(format!("epoch {} is stale at {step}; another owner holds the job", job.epoch));
    e.data = json!({ "node": ctx.opts.node_id, "step": step, "killed_at": killed_at });
    let mut delay = std::time::Duration::from_millis(250);
    for _ in 0..FENCED_EVENT_TRIES {
        let call = ctx.store.append_events(std::slice::from_ref(&e), ctx.now());
        match tokio::time::timeout(std::time::Duration::from_secs(5), call).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(err)) => warn!(job = %job.id, error = %err, "cannot record job.fenced_out yet"),
            Err(_) => warn!(job = %job.id, "cannot record job.fenced_out yet: the store did not answer"),
        }
        if ctx.kill_all.is_cancelled() {
            break;
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(std::time::Duration::from_secs(8));
    }
    error!(item = %job.item, job = %job.id, epoch = job.epoch, "gave up recording job.fenced_out");
    Ok(())
}

/// How often a fenced-out owner tries to record the fact (about a minute in all).
const FENCED_EVENT_TRIES: u32 = 12;

/// Exit code and verdict → the stage's result (before gates).
fn judge(ctx: &Ctx, job: &Job) -> Judged {
    let errored = |reason: String| Judged { result: StageResult::Errored { reason }, escalate: false, verdict: None };
    if let Some(reason) = job.reason.as_ref().filter(|r| r.starts_with(crate::budget::BUDGET)) {
        // Retrying would spend more of what is already spent: a human decides.
        return Judged { result: StageResult::NeedsHuman { reason: reason.clone() }, escalate: false, verdict: None };
    }
    let Some(code) = job.exit_code else {
        return errored(
            job.reason.clone().unwrap_or_else(|| "exit=lost: the agent ended without an exit status".into()),
        );
    };
    let source = ctx.config.agent_for(&job.stage).map_or(VerdictSource::ExitCode, |(_, a)| {
        if a.adapter == orch_core::config::AdapterKind::None { VerdictSource::ExitCode } else { a.verdict }
    });
    match source {
        VerdictSource::ExitCode if code == 0 => Judged { result: StageResult::Passed, escalate: false, verdict: None },
        VerdictSource::ExitCode => Judged {
            result: StageResult::Rejected { reason: format!("agent exited with code {code}") },
            escalate: false,
            verdict: None,
        },
        VerdictSource::File | VerdictSource::Result if code != 0 => {
            // A coding agent's adapter records why its run failed (max turns, an API error).
            errored(job.reason.clone().unwrap_or_else(|| format!("agent exited with code {code}")))
        }
        VerdictSource::File | VerdictSource::Result => {
            let Some(raw) = job.verdict.clone() else {
                return errored(job.reason.clone().unwrap_or_else(|| "bad verdict: none was recorded".into()));
            };
            match serde_json::from_value::<Verdict>(raw.clone()) {
                Err(e) => errored(format!("bad verdict: {e}")),
                Ok(v) => {
                    let summary = if v.summary.is_empty() { "no summary".to_owned() } else { v.summary.clone() };
                    let result = match v.verdict {
                        VerdictValue::Pass => StageResult::Passed,
                        VerdictValue::Fail => StageResult::Rejected { reason: format!("verdict fail: {summary}") },
                        VerdictValue::Blocked => {
                            StageResult::NeedsHuman { reason: format!("verdict blocked: {summary}") }
                        }
                    };
                    Judged { result, escalate: v.escalate, verdict: Some(raw) }
                }
            }
        }
    }
}
