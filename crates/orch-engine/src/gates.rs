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
use crate::{Error, untrusted};

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

pub(crate) async fn run_edge_gates(ctx: &Ctx, job: &Job, lost: &CancellationToken) -> Result<GatesOutcome, Error> {
    let Some(item) = ctx.within_lease(ctx.store.get_item(&job.item)).await? else {
        return Err(Error::Vanished(job.id));
    };
    let Some(exit) = ctx.config.exit(&item.track, &job.stage) else { return Ok(GatesOutcome::Passed) };
    let Some(edge) = exit.edge else { return Ok(GatesOutcome::Passed) };
    if edge.gates.is_empty() {
        return Ok(GatesOutcome::Passed);
    }
    // A node that took this job over may never have run anything for the item:
    // make every folder the gates need, here, rather than fail to start them.
    let workdir = match ctx.layout.prepare(&job.item) {
        Ok(dir) => dir,
        Err(e) => {
            return Ok(GatesOutcome::Infra(format!(
                "{INFRA}cannot prepare the working directory under {}: {e}",
                ctx.layout.root().display()
            )));
        }
    };
    for name in &edge.gates {
        if lost.is_cancelled() {
            return Ok(GatesOutcome::Stopped);
        }
        let (result, infra) = match run_gate(ctx, job, name, &workdir, lost).await {
            GateRun::Stopped => return Ok(GatesOutcome::Stopped),
            GateRun::Ran(r) => (r, false),
            GateRun::CouldNotStart(r) => (r, true),
        };
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
    };
    let proc_ = match launch::start(ctx, job, &spec, lost).await {
        Ok(s) => s,
        Err(_) if lost.is_cancelled() => return GateRun::Stopped,
        Err(e) => return GateRun::CouldNotStart(fail(format!("{INFRA}gate {name} could not start: {e}"), None, None)),
    };
    let ended = launch::wait(ctx, job, proc_, gate.timeout(), lost).await;
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
