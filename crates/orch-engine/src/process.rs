//! Child processes in their own process groups: spawning agents and gates with
//! their output going straight to a log file (the kernel writes it, so orch's
//! memory stays flat whatever the agent prints), bounded waits, and killing whole
//! groups so no grandchild outlives its job (I6).

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

/// How long a group gets between SIGTERM and SIGKILL.
pub const KILL_GRACE: Duration = Duration::from_secs(2);

/// Why a process could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("empty command")]
    Empty,
    #[error("command not found: {0}")]
    NotFound(String),
    #[error("command is not executable (permission denied): {0}")]
    NotExecutable(String),
    #[error("cannot open log file {path}: {source}")]
    Log { path: String, source: std::io::Error },
    #[error("cannot start {program}: {source}")]
    Other { program: String, source: std::io::Error },
}

/// A started child, leader of its own process group.
#[derive(Debug)]
pub struct Spawned {
    pub child: Child,
    pub pid: i32,
    /// Start time in clock ticks since boot (/proc), to recognise the process later.
    pub proc_start: Option<i64>,
}

/// How a waited-for process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    /// Exited by itself with this code.
    Exited(i32),
    /// Killed by a signal we did not send.
    Signalled(i32),
    /// Ran past its timeout; its group was terminated.
    TimedOut,
    /// We were told to stop it (lease lost, cancel, shutdown); its group was killed.
    Stopped,
}

/// Spawns `argv` in `cwd` with `env` added, as the leader of a new process group,
/// with stdin closed and stdout and stderr appended to `log`.
///
/// # Errors
/// `SpawnError` naming the command, distinguishing "not found" and "not executable".
pub fn spawn(argv: &[String], cwd: &Path, env: &[(String, String)], log: &Path) -> Result<Spawned, SpawnError> {
    let (program, args) = argv.split_first().ok_or(SpawnError::Empty)?;
    let log_err = |source| SpawnError::Log { path: log.display().to_string(), source };
    let out = std::fs::OpenOptions::new().create(true).append(true).open(log).map_err(log_err)?;
    let err = out.try_clone().map_err(log_err)?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .current_dir(cwd)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .process_group(0)
        .kill_on_drop(false);
    let child = cmd.spawn().map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => SpawnError::NotFound(program.clone()),
        std::io::ErrorKind::PermissionDenied => SpawnError::NotExecutable(program.clone()),
        _ => SpawnError::Other { program: program.clone(), source },
    })?;
    let pid = child.id().and_then(|p| i32::try_from(p).ok()).unwrap_or(0);
    Ok(Spawned { child, pid, proc_start: proc_start_time(pid) })
}

/// Waits for `child` (leader of group `pgid`) until it exits, `timeout` passes, or
/// `stop` resolves. On timeout or stop the group is terminated (TERM, then KILL
/// after [`KILL_GRACE`]). Whatever happens, the group is killed at the end so no
/// grandchild survives.
pub async fn supervise(
    child: &mut Child,
    pgid: i32,
    timeout: Duration,
    stop: impl std::future::Future<Output = ()>,
) -> Ended {
    let ended = tokio::select! {
        status = child.wait() => from_status(status),
        () = tokio::time::sleep(timeout) => { terminate(child, pgid).await; Ended::TimedOut }
        () = stop => { terminate(child, pgid).await; Ended::Stopped }
    };
    kill_group(pgid, Signal::SIGKILL);
    ended
}

fn from_status(status: std::io::Result<ExitStatus>) -> Ended {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Ok(s) => match (s.code(), s.signal()) {
            (Some(code), _) => Ended::Exited(code),
            (None, Some(sig)) => Ended::Signalled(sig),
            (None, None) => Ended::Signalled(0),
        },
        Err(_) => Ended::Signalled(0),
    }
}

/// TERM the group, give it [`KILL_GRACE`], then KILL it and reap the leader.
async fn terminate(child: &mut Child, pgid: i32) {
    kill_group(pgid, Signal::SIGTERM);
    if tokio::time::timeout(KILL_GRACE, child.wait()).await.is_err() {
        kill_group(pgid, Signal::SIGKILL);
        let _ = child.wait().await;
    }
}

/// Sends `sig` to process group `pgid`. Refuses pgid 0 and 1 (our own group and
/// init): a zero left in a record must never turn into "signal everything".
pub fn kill_group(pgid: i32, sig: Signal) -> bool {
    if pgid <= 1 {
        return false;
    }
    killpg(Pid::from_raw(pgid), sig).is_ok()
}

/// Kills a recorded process group only if its leader is still the process we
/// started (same start time), so a recycled pid is never hit.
pub fn kill_recorded_group(pid: i32, pgid: i32, proc_start: Option<i64>) -> bool {
    match (proc_start_time(pid), proc_start) {
        (Some(now), Some(then)) if now == then => kill_group(pgid, Signal::SIGKILL),
        // Leader gone: members may survive it; the group id cannot have been reused
        // while any member lives, so killing the group is still safe.
        (None, _) if group_alive(pgid) => kill_group(pgid, Signal::SIGKILL),
        _ => false,
    }
}

/// Kills a group from a store record only while its leader is provably the process
/// we started (same pid and start time). The store keeps no boot id, so a
/// leaderless group is left to the node-local registry, which does.
pub fn kill_if_same_leader(pid: i32, pgid: i32, proc_start: Option<i64>) -> bool {
    match (proc_start_time(pid), proc_start) {
        (Some(now), Some(then)) if now == then => kill_group(pgid, Signal::SIGKILL),
        _ => false,
    }
}

/// Whether any process is in group `pgid`.
pub fn group_alive(pgid: i32) -> bool {
    pgid > 1 && killpg(Pid::from_raw(pgid), None).is_ok()
}

/// A process's start time in clock ticks since boot (field 22 of /proc/PID/stat).
pub fn proc_start_time(pid: i32) -> Option<i64> {
    if pid <= 0 {
        return None;
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses: skip past the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// The last `max` bytes of a file, lossily decoded: enough to read a gate's metric
/// or show a failure's tail without loading a huge log.
pub fn read_tail(path: &Path, max: u64) -> String {
    let Ok(mut f) = std::fs::File::open(path) else { return String::new() };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    if f.seek(SeekFrom::Start(len.saturating_sub(max))).is_err() {
        return String::new();
    }
    let mut buf = Vec::new();
    let _ = f.take(max).read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}
