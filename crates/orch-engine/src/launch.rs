//! Starting and waiting for one process tree of a job (its agent or a gate): the
//! cgroup or process group that contains it, the node-local record that lets a
//! restart kill it, the owned-jobs entry the self-fence kills through, and the
//! retries of a start that failed for reasons of the machine rather than the work.
//!
//! A process that could not *start* (a missing folder, a spawn error, a log that
//! cannot be opened) says nothing about the item's work. It is retried in place
//! with backoff; if it still cannot start, the caller reports an infrastructure
//! error (reason prefixed [`INFRA`]) that retries the stage and never rolls the
//! item back along `on_fail` (DESIGN §7, "Work failed vs. infrastructure failed").

use std::path::{Path, PathBuf};
use std::time::Duration;

use orch_store::Job;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::ctx::{Ctx, RunningProc};
use crate::process::{self, Ended, SpawnError, Spawned};
use crate::{registry, untrusted};

/// The prefix of every reason that blames the machine, not the work. The audit
/// flags a rollback with such a reason.
pub(crate) const INFRA: &str = "infrastructure: ";

/// Waits between attempts to start a process: short, since a start failure that
/// outlasts a few seconds will not heal by itself within the stage either.
const START_BACKOFF: [Duration; 3] = [Duration::from_millis(200), Duration::from_millis(800), Duration::from_secs(2)];

/// How to open the process's log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LogMode {
    /// Append to the job's log (all of a job's runs share it).
    Append,
    /// A fresh file for this run alone.
    Fresh,
}

/// What to start.
pub(crate) struct ProcSpec<'a> {
    /// Names the cgroup and the node-local record, e.g. `job-7-e2-agent`.
    pub(crate) name: String,
    pub(crate) argv: &'a [String],
    pub(crate) cwd: &'a Path,
    pub(crate) env: &'a [(String, String)],
    pub(crate) log: PathBuf,
    pub(crate) log_mode: LogMode,
    /// Stdout into a pipe (a coding agent's event stream, read by `agent_stream`)
    /// instead of the log; stderr still goes to the log.
    pub(crate) pipe_stdout: bool,
}

/// A started process tree of a job.
pub(crate) struct Started {
    pub(crate) spawned: Spawned,
    record: Option<PathBuf>,
}

fn try_start(ctx: &Ctx, spec: &ProcSpec<'_>) -> Result<Spawned, SpawnError> {
    if let Some(dir) = spec.log.parent() {
        std::fs::create_dir_all(dir).map_err(|source| SpawnError::Log { path: dir.display().to_string(), source })?;
    }
    let log = match spec.log_mode {
        LogMode::Append => untrusted::open_append(&spec.log),
        LogMode::Fresh => untrusted::create_fresh(&spec.log),
    }
    .map_err(|source| SpawnError::Log { path: spec.log.display().to_string(), source })?;
    let cgroup = ctx.containment.job_cgroup(&spec.name).map_err(SpawnError::Cgroup)?;
    process::spawn(spec.argv, spec.cwd, spec.env, (&spec.log, log), cgroup, spec.pipe_stdout)
}

/// Starts `spec` for `job` (held at `job.epoch`), retrying a failed start with
/// backoff. Stops retrying when `lost` fires.
///
/// # Errors
/// The last start error, once the retries are spent.
pub(crate) async fn start(
    ctx: &Ctx,
    job: &Job,
    spec: &ProcSpec<'_>,
    lost: &CancellationToken,
) -> Result<Started, SpawnError> {
    let mut attempt = 0;
    let spawned = loop {
        match try_start(ctx, spec) {
            Ok(s) => break s,
            Err(e) if attempt < START_BACKOFF.len() && !lost.is_cancelled() => {
                warn!(item = %job.item, job = %job.id, epoch = job.epoch, process = %spec.name, error = %e,
                      retry_in_ms = START_BACKOFF[attempt].as_millis() as u64, "process could not start; retrying");
                ctx.metrics.start_retried();
                tokio::select! {
                    () = tokio::time::sleep(START_BACKOFF[attempt]) => {}
                    () = lost.cancelled() => return Err(e),
                }
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    };
    ctx.owned.set_proc(job.id, job.epoch, Some(RunningProc { pgid: spawned.pid, cgroup: spawned.cgroup.clone() }));
    let run_dir = ctx.layout.run_dir(&ctx.opts.node_id);
    let record = registry::record(&run_dir, &spec.name, spawned.pid, spawned.proc_start);
    Ok(Started { spawned, record })
}

/// Waits for a started tree until it exits, times out, or `lost` fires; whatever
/// happens, every process of the tree is dead when this returns.
pub(crate) async fn wait(
    ctx: &Ctx,
    job: &Job,
    mut started: Started,
    timeout: Duration,
    lost: &CancellationToken,
) -> Ended {
    let ended = process::supervise(&mut started.spawned, timeout, lost.cancelled()).await;
    ctx.owned.set_proc(job.id, job.epoch, None);
    registry::forget(started.record.take());
    ended
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_infrastructure_prefix_is_the_one_the_audit_looks_for() {
        assert!(super::INFRA.starts_with(crate::audit::INFRASTRUCTURE_REASON_PREFIX));
    }
}
