//! The gate runner: the outgoing edge's gates, in order, in the item's directory,
//! each with its own timeout and its own log; pass by exit code, or by a metric
//! read from the output against the configured minimum. Each result is recorded
//! (fenced by epoch) before the next gate runs.

use std::time::Instant;

use orch_core::GateName;
use orch_store::{GateResult, Job};
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::ctx::Ctx;
use crate::launch::{self, INFRA, LogMode, ProcSpec};
use crate::process::Ended;
use crate::{Error, untrusted, vcs};
use orch_core::config::GateTree;
use orch_vcs::Preview;

/// What the gates of an edge concluded.
pub(crate) enum GatesOutcome {
    Passed,
    /// A gate ran and judged the work inadequate.
    Failed(String),
    /// A gate could not run at all (reason prefixed `infrastructure: `).
    Infra(String),
    /// The lease was lost or the node is shutting down.
    Stopped,
}

/// The gates of the edge `job`'s stage leaves by on a pass, for `item` on its
/// track; empty when the edge has none (or there is no edge).
pub(crate) fn edge_gates<'c>(ctx: &'c Ctx, job: &Job, item: &orch_store::Item) -> &'c [GateName] {
    ctx.config.exit(&item.track, &job.stage).and_then(|exit| exit.edge).map_or(&[], |edge| edge.gates.as_slice())
}

pub(crate) async fn run_edge_gates(ctx: &Ctx, job: &Job, lost: &CancellationToken) -> Result<GatesOutcome, Error> {
    let Some(item) = ctx.within_lease(ctx.store.get_item(&job.item)).await? else {
        return Err(Error::Vanished(job.id));
    };
    let gates = edge_gates(ctx, job, &item);
    if gates.is_empty() {
        return Ok(GatesOutcome::Passed);
    }
    // A node that took this job over may never have run anything for the item:
    // make every folder the gates need, and the worktree at the SHA the store
    // records, here, rather than fail to start them.
    if let Err(e) = ctx.layout.prepare() {
        let why = format!("{INFRA}cannot prepare the data folder {}: {e}", ctx.layout.root().display());
        return Ok(GatesOutcome::Infra(why));
    }
    let tree = match vcs::prepare(ctx, job, &item, None).await {
        Ok(tree) => tree,
        Err(vcs::PrepareError::Fenced) => return Ok(GatesOutcome::Stopped),
        Err(vcs::PrepareError::Infra(reason)) => return Ok(GatesOutcome::Infra(reason)),
    };
    let sha = tree.base.clone();
    for name in gates {
        if lost.is_cancelled() {
            return Ok(GatesOutcome::Stopped);
        }
        let on = ctx.config.gates.get(name).map(|g| g.on).unwrap_or_default();
        let run = match on {
            GateTree::Branch => run_gate(ctx, job, name, &tree.wt.path, lost).await,
            GateTree::MergePreview => {
                let path = ctx.layout.preview(job.id, job.epoch, name.as_str());
                match tree.handle.repo.merge_preview(&sha, &path, &tree.handle.author).await {
                    Ok(Preview::Ready(p)) => {
                        let run = run_gate(ctx, job, name, &p, lost).await;
                        let _ = tree.handle.repo.remove_worktree(&p).await;
                        run
                    }
                    Ok(Preview::Conflict(paths)) => GateRun::Ran(GateResult {
                        gate: name.to_string(),
                        passed: false,
                        exit_code: None,
                        metric: None,
                        duration_ms: 0,
                        reason: Some(format!("gate {name}: the branch conflicts with main in: {}", paths.join(", "))),
                        sha: None,
                    }),
                    Err(e) => GateRun::CouldNotStart(GateResult {
                        gate: name.to_string(),
                        passed: false,
                        exit_code: None,
                        metric: None,
                        duration_ms: 0,
                        reason: Some(format!("{INFRA}gate {name}: cannot make the merge preview: {e}")),
                        sha: None,
                    }),
                }
            }
        };
        let (mut result, infra) = match run {
            GateRun::Stopped => return Ok(GatesOutcome::Stopped),
            GateRun::Ran(r) => (r, false),
            GateRun::CouldNotStart(r) => (r, true),
        };
        result.sha = Some(sha.clone());
        ctx.metrics
            .gate_ran(name.as_str(), std::time::Duration::from_millis(u64::try_from(result.duration_ms).unwrap_or(0)));
        report_check(&item, &tree, &result).await;
        info!(item = %job.item, job = %job.id, epoch = job.epoch, gate = %name, passed = result.passed, infra, "gate");
        let passed = result.passed;
        let reason = result.reason.clone();
        match ctx.within_lease(ctx.store.record_gate_result(job.id, job.epoch, result, ctx.now())).await {
            Ok(()) => {}
            Err(Error::Store(orch_store::Error::FencedOut { .. })) => return Ok(GatesOutcome::Stopped),
            Err(e) => return Err(e),
        }
        if !passed {
            let reason = reason.unwrap_or_else(|| format!("gate {name} failed"));
            return Ok(if infra { GatesOutcome::Infra(reason) } else { GatesOutcome::Failed(reason) });
        }
    }
    Ok(GatesOutcome::Passed)
}

/// Shows the gate's result on the item's pull request, for the SHA it ran on.
async fn report_check(item: &orch_store::Item, tree: &vcs::Tree, result: &GateResult) {
    if item.pr.is_none() {
        return;
    }
    let check = orch_vcs::CheckStatus {
        gate: result.gate.clone(),
        sha: result.sha.clone().unwrap_or_default(),
        passed: result.passed,
        reason: result.reason.clone(),
    };
    if let Err(e) = tree.handle.forge.set_status(&item.key.to_string(), &check).await {
        tracing::warn!(item = %item.key, error = %e, "cannot report a check on the pull request");
    }
}

/// How one gate's run went.
enum GateRun {
    /// It ran; the result says whether the work passed.
    Ran(GateResult),
    /// It could not be started (recorded as a failed result with the reason).
    CouldNotStart(GateResult),
    /// The lease was lost or the node is shutting down.
    Stopped,
}

/// Runs one gate.
async fn run_gate(
    ctx: &Ctx,
    job: &Job,
    name: &GateName,
    workdir: &std::path::Path,
    lost: &CancellationToken,
) -> GateRun {
    let started = Instant::now();
    let fail = |reason: String, exit_code: Option<i32>, metric: Option<f64>| GateResult {
        gate: name.to_string(),
        passed: false,
        exit_code,
        metric,
        duration_ms: i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX),
        reason: Some(reason),
        sha: None,
    };
    let Some(gate) = ctx.config.gates.get(name) else {
        return GateRun::CouldNotStart(fail(format!("{INFRA}gate {name} is not in the config"), None, None));
    };
    let log = ctx.layout.gate_log(job.id, job.epoch, name.as_str());
    let env = vec![
        ("ORCH_ITEM".to_owned(), job.item.to_string()),
        ("ORCH_STAGE".to_owned(), job.stage.to_string()),
        ("ORCH_JOB_ID".to_owned(), job.id.to_string()),
        ("ORCH_WORKTREE".to_owned(), workdir.display().to_string()),
        ("ORCH_GATE".to_owned(), name.to_string()),
    ];
    let command = ctx.config.resolve_argv(&gate.command);
    let spec = ProcSpec {
        name: format!("job-{}-e{}-gate-{name}", job.id, job.epoch),
        argv: &command,
        cwd: workdir,
        env: &env,
        log: log.clone(),
        log_mode: LogMode::Fresh,
        pipe_stdout: false,
    };
    let proc_ = match launch::start(ctx, job, &spec, lost).await {
        Ok(s) => s,
        Err(_) if lost.is_cancelled() => return GateRun::Stopped,
        Err(e) => return GateRun::CouldNotStart(fail(format!("{INFRA}gate {name} could not start: {e}"), None, None)),
    };
    let ended = launch::wait(ctx, job, proc_, gate.timeout(), lost).await;
    if lost.is_cancelled() {
        // Killed because this owner lost the job (the self-fence kills before it
        // tells the task): not a verdict on the work.
        return GateRun::Stopped;
    }
    let tail = || untrusted::tail(&log, 64 * 1024);
    let last_line = |t: &str| t.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim().to_owned();
    let code = match ended {
        Ended::Stopped => return GateRun::Stopped,
        Ended::TimedOut => {
            return GateRun::Ran(fail(format!("gate {name} timed out after {}s", gate.timeout_s), None, None));
        }
        Ended::Signalled(sig) => {
            return GateRun::Ran(fail(format!("gate {name} was killed by signal {sig}"), None, None));
        }
        Ended::Exited(code) => code,
    };
    if code != 0 {
        let t = tail().await;
        return GateRun::Ran(fail(
            format!("gate {name} failed with exit code {code}: {}", last_line(&t)),
            Some(code),
            None,
        ));
    }
    let mut metric = None;
    if let Some(metric_spec) = &gate.metric {
        let t = tail().await;
        match metric_spec.read(&t) {
            None => {
                let msg =
                    format!("gate {name}: no match for metric regex {:?} in its output", metric_spec.regex.as_str());
                return GateRun::Ran(fail(msg, Some(code), None));
            }
            Some(v) if v < metric_spec.min => {
                return GateRun::Ran(fail(
                    format!("gate {name}: metric {v} is below the minimum {}", metric_spec.min),
                    Some(code),
                    Some(v),
                ));
            }
            Some(v) => metric = Some(v),
        }
    }
    GateRun::Ran(GateResult {
        gate: name.to_string(),
        passed: true,
        exit_code: Some(code),
        metric,
        duration_ms: i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX),
        reason: None,
        sha: None,
    })
}
