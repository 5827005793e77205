//! The gate runner: the outgoing edge's gates, in order, in the item's directory,
//! each with its own timeout and its own log; pass by exit code, or by a metric
//! read from the output against the configured minimum. Each result is recorded
//! (fenced by epoch) before the next gate runs.

use std::time::Instant;

use orch_core::GateName;
use orch_store::{GateResult, Job};
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::node::Ctx;
use crate::process::{self, Ended};
use crate::{Error, registry};

/// What the gates of an edge concluded.
pub(crate) enum GatesOutcome {
    Passed,
    Failed(String),
    /// The lease was lost or the node is shutting down.
    Stopped,
}

pub(crate) async fn run_edge_gates(ctx: &Ctx, job: &Job, lost: &CancellationToken) -> Result<GatesOutcome, Error> {
    let Some(item) = ctx.store.get_item(&job.item).await? else { return Err(Error::Vanished(job.id)) };
    let Some(exit) = ctx.config.exit(&item.track, &job.stage) else { return Ok(GatesOutcome::Passed) };
    let Some(edge) = exit.edge else { return Ok(GatesOutcome::Passed) };
    let workdir = ctx.layout.workdir(&job.item);
    for name in &edge.gates {
        if lost.is_cancelled() {
            return Ok(GatesOutcome::Stopped);
        }
        let result = run_gate(ctx, job, name, &workdir, lost).await;
        let Some(result) = result else { return Ok(GatesOutcome::Stopped) };
        info!(item = %job.item, job = %job.id, epoch = job.epoch, gate = %name, passed = result.passed, "gate");
        let passed = result.passed;
        let reason = result.reason.clone();
        match ctx.store.record_gate_result(job.id, job.epoch, result, ctx.now()).await {
            Ok(()) => {}
            Err(orch_store::Error::FencedOut { .. }) => return Ok(GatesOutcome::Stopped),
            Err(e) => return Err(e.into()),
        }
        if !passed {
            return Ok(GatesOutcome::Failed(reason.unwrap_or_else(|| format!("gate {name} failed"))));
        }
    }
    Ok(GatesOutcome::Passed)
}

/// Runs one gate; `None` if it was stopped (lease lost or shutdown).
async fn run_gate(
    ctx: &Ctx,
    job: &Job,
    name: &GateName,
    workdir: &std::path::Path,
    lost: &CancellationToken,
) -> Option<GateResult> {
    let started = Instant::now();
    let fail = |reason: String, exit_code: Option<i32>, metric: Option<f64>| GateResult {
        gate: name.to_string(),
        passed: false,
        exit_code,
        metric,
        duration_ms: i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX),
        reason: Some(reason),
    };
    let Some(gate) = ctx.config.gates.get(name) else {
        return Some(fail(format!("gate {name} is not in the config"), None, None));
    };
    let log = ctx.layout.gate_log(job.id, job.epoch, name.as_str());
    let _ = std::fs::remove_file(&log);
    let env = vec![
        ("ORCH_ITEM".to_owned(), job.item.to_string()),
        ("ORCH_STAGE".to_owned(), job.stage.to_string()),
        ("ORCH_JOB_ID".to_owned(), job.id.to_string()),
        ("ORCH_WORKTREE".to_owned(), workdir.display().to_string()),
        ("ORCH_GATE".to_owned(), name.to_string()),
    ];
    let command = ctx.config.resolve_argv(&gate.command);
    let mut spawned = match process::spawn(&command, workdir, &env, &log) {
        Ok(s) => s,
        Err(e) => return Some(fail(format!("gate {name} could not start: {e}"), None, None)),
    };
    let run_dir = ctx.layout.run_dir(&ctx.opts.node_id);
    let record = registry::record(
        &run_dir,
        &format!("job-{}-e{}-gate-{name}", job.id, job.epoch),
        spawned.pid,
        spawned.proc_start,
    );
    let ended = process::supervise(&mut spawned.child, spawned.pid, gate.timeout(), lost.cancelled()).await;
    registry::forget(record);
    let tail = || process::read_tail(&log, 64 * 1024);
    let last_line = |t: &str| t.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim().to_owned();
    let code = match ended {
        Ended::Stopped => return None,
        Ended::TimedOut => return Some(fail(format!("gate {name} timed out after {}s", gate.timeout_s), None, None)),
        Ended::Signalled(sig) => return Some(fail(format!("gate {name} was killed by signal {sig}"), None, None)),
        Ended::Exited(code) => code,
    };
    if code != 0 {
        let t = tail();
        return Some(fail(format!("gate {name} failed with exit code {code}: {}", last_line(&t)), Some(code), None));
    }
    let mut metric = None;
    if let Some(spec) = &gate.metric {
        let t = tail();
        match spec.read(&t) {
            None => {
                let msg = format!("gate {name}: no match for metric regex {:?} in its output", spec.regex.as_str());
                return Some(fail(msg, Some(code), None));
            }
            Some(v) if v < spec.min => {
                return Some(fail(
                    format!("gate {name}: metric {v} is below the minimum {}", spec.min),
                    Some(code),
                    Some(v),
                ));
            }
            Some(v) => metric = Some(v),
        }
    }
    Some(GateResult {
        gate: name.to_string(),
        passed: true,
        exit_code: Some(code),
        metric,
        duration_ms: i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX),
        reason: None,
    })
}
