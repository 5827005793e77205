//! Child processes in their own process groups: spawning agents and gates with
//! their output going straight to a log file (the kernel writes it, so orch's
//! memory stays flat whatever the agent prints), bounded waits, and killing whole
//! groups so no grandchild outlives its job (I6).

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

use crate::contain::JobCgroup;

/// How long a group gets between SIGTERM and SIGKILL.
pub const KILL_GRACE: Duration = Duration::from_secs(2);

/// Why a process could not be started. Every variant is an infrastructure failure
/// in the sense of DESIGN §7: nothing of the work was judged.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("empty command")]
    Empty,
    #[error("command not found: {0}")]
    NotFound(String),
    #[error("command is not executable (permission denied): {0}")]
    NotExecutable(String),
    #[error("working directory {0} does not exist")]
    NoWorkdir(String),
    #[error("cannot open log file {path}: {source}")]
    Log { path: String, source: std::io::Error },
    #[error("cannot make a cgroup for the process: {0}")]
    Cgroup(std::io::Error),
    #[error("cannot start {program}: {source}")]
    Other { program: String, source: std::io::Error },
}

/// Pids of the children this process spawned and has not reaped yet. The sweep
/// that reaps adopted orphans (we are the child subreaper) must never reap one of
/// these: tokio waits for them itself, and `waitpid(-1)` would steal their status.
static SPAWNED: Mutex<BTreeSet<i32>> = Mutex::new(BTreeSet::new());

fn spawned_set() -> std::sync::MutexGuard<'static, BTreeSet<i32>> {
    SPAWNED.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A started child, leader of its own process group (and alone in its cgroup).
#[derive(Debug)]
pub struct Spawned {
    pub child: Child,
    pub pid: i32,
    /// Start time in clock ticks since boot (/proc), to recognise the process later.
    pub proc_start: Option<i64>,
    /// The cgroup holding the child and every descendant, if the node uses them.
    pub cgroup: Option<JobCgroup>,
    /// `ORCH_JOB_ID` of the child, to find its adopted daemons in process-group mode.
    job_tag: Option<String>,
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

/// Finds `program` the way `execvp` would (relative to `cwd` when it has a slash,
/// else on `PATH`), so "not found" and "not executable" are told apart before the
/// process starts rather than guessed from an `ENOENT` that may be the folder's.
fn resolve(program: &str, cwd: &Path, path_var: Option<&str>) -> Result<std::path::PathBuf, SpawnError> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| p.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
    if program.contains('/') {
        let p = cwd.join(program);
        return match p.metadata() {
            Err(_) => Err(SpawnError::NotFound(program.to_owned())),
            Ok(_) if executable(&p) => Ok(p),
            Ok(_) => Err(SpawnError::NotExecutable(program.to_owned())),
        };
    }
    let path_var = path_var.map(str::to_owned).or_else(|| std::env::var("PATH").ok()).unwrap_or_default();
    let mut denied = false;
    for dir in path_var.split(':').filter(|d| !d.is_empty()) {
        let p = cwd.join(dir).join(program);
        if executable(&p) {
            return Ok(p);
        }
        denied |= p.is_file();
    }
    Err(if denied { SpawnError::NotExecutable(program.to_owned()) } else { SpawnError::NotFound(program.to_owned()) })
}

/// Spawns `argv` in `cwd` with `env` added, as the leader of a new process group,
/// with stdin closed and stdout and stderr going to `log` — or, with
/// `pipe_stdout`, stdout into a pipe the caller reads (a coding agent's event
/// stream) and stderr to `log`. With a `cgroup` the child joins it before it
/// runs anything of the command's (see `contain`).
///
/// # Errors
/// `SpawnError` naming what could not be started and why.
pub fn spawn(
    argv: &[String],
    cwd: &Path,
    env: &[(String, String)],
    log: (&Path, std::fs::File),
    cgroup: Option<JobCgroup>,
    pipe_stdout: bool,
) -> Result<Spawned, SpawnError> {
    let (program, args) = argv.split_first().ok_or(SpawnError::Empty)?;
    if !cwd.is_dir() {
        return Err(SpawnError::NoWorkdir(cwd.display().to_string()));
    }
    let path_var = env.iter().find(|(k, _)| k == "PATH").map(|(_, v)| v.as_str());
    let resolved = resolve(program, cwd, path_var)?;
    let (log_path, out) = log;
    let err = out.try_clone().map_err(|source| SpawnError::Log { path: log_path.display().to_string(), source })?;
    let mut cmd = match &cgroup {
        Some(cg) => {
            // `echo` is a shell builtin: the shell moves itself, then becomes the command.
            let mut c = Command::new("/bin/sh");
            c.arg("-c").arg("echo 0 > \"$0\" || exit 125; exec \"$@\"").arg(cg.procs_file()).arg(&resolved).args(args);
            c
        }
        None => {
            let mut c = Command::new(&resolved);
            c.args(args);
            c
        }
    };
    cmd.current_dir(cwd)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(if pipe_stdout { Stdio::piped() } else { Stdio::from(out) })
        .stderr(Stdio::from(err))
        .process_group(0)
        .kill_on_drop(false);
    let child = {
        // Held across the fork so the orphan sweep never sees this child unlisted.
        let mut set = spawned_set();
        let child = cmd.spawn().map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => SpawnError::NotFound(program.clone()),
            std::io::ErrorKind::PermissionDenied => SpawnError::NotExecutable(program.clone()),
            _ => SpawnError::Other { program: program.clone(), source },
        })?;
        if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
            set.insert(pid);
        }
        child
    };
    let pid = child.id().and_then(|p| i32::try_from(p).ok()).unwrap_or(0);
    let job_tag = env.iter().find(|(k, _)| k == "ORCH_JOB_ID").map(|(_, v)| v.clone());
    Ok(Spawned { child, pid, proc_start: proc_start_time(pid), cgroup, job_tag })
}

/// Waits for the child until it exits, `timeout` passes, or `stop` resolves. On
/// timeout or stop the group is terminated (TERM, then KILL after [`KILL_GRACE`]).
/// Whatever happens, everything the child started is killed at the end (its group,
/// its cgroup, and in process-group mode the daemons the node adopted from it), so
/// nothing outlives it (I6).
pub async fn supervise(spawned: &mut Spawned, timeout: Duration, stop: impl std::future::Future<Output = ()>) -> Ended {
    let pgid = spawned.pid;
    let child = &mut spawned.child;
    let ended = tokio::select! {
        status = child.wait() => from_status(status),
        () = tokio::time::sleep(timeout) => { terminate(child, pgid).await; Ended::TimedOut }
        () = stop => { terminate(child, pgid).await; Ended::Stopped }
    };
    spawned_set().remove(&pgid);
    kill_group(pgid, Signal::SIGKILL);
    let cgroup = spawned.cgroup.take();
    let tag = spawned.job_tag.clone();
    // Blocking /proc and cgroupfs work, bounded inside: off the runtime's threads.
    let _ = tokio::task::spawn_blocking(move || match cgroup {
        Some(cg) => cg.remove(),
        None => {
            if let Some(tag) = tag {
                kill_adopted(&tag);
            }
        }
    })
    .await;
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

/// Children the node adopted as child subreaper: every process whose parent is
/// this process, that is not in `spawned` (the job leaders it started itself),
/// and that is not in the node's own process group. That last test keeps the
/// sweep off the node's other children (git, started through tokio, inherit the
/// node's group): reaping one of those would steal its exit status from tokio,
/// which then fails the command with ECHILD. An adopted orphan always comes from
/// a job's own process group or from a session it made itself.
fn adopted(spawned: &BTreeSet<i32>) -> Vec<i32> {
    let me = std::process::id();
    let own_group = nix::unistd::getpgrp().as_raw();
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| !spawned.contains(pid))
        .filter(|pid| parent_and_group(*pid).is_some_and(|(ppid, pgrp)| ppid == me && pgrp != own_group))
        .collect()
}

/// The parent pid and process group of `pid` (fields 4 and 5 of /proc/PID/stat).
fn parent_and_group(pid: i32) -> Option<(u32, i32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace().skip(1);
    Some((fields.next()?.parse().ok()?, fields.next()?.parse().ok()?))
}

/// Reaps adopted children that have died (zombies re-parented to the node as child
/// subreaper). Never touches a child the node spawned itself: those are tokio's to
/// wait for.
pub fn reap_adopted() {
    use nix::sys::wait::{WaitPidFlag, waitpid};
    // Held while reaping so no child is spawned (and listed) in between.
    let spawned = spawned_set();
    for pid in adopted(&spawned) {
        let _ = waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG));
    }
}

/// Process-group mode: kills the daemons the node adopted whose environment says
/// they belong to job `tag` (`ORCH_JOB_ID`), then reaps them. A descendant still
/// being re-parented is caught by a second look a moment later.
fn kill_adopted(tag: &str) {
    let needle = format!("ORCH_JOB_ID={tag}");
    for round in 0..3 {
        if round > 0 {
            std::thread::sleep(Duration::from_millis(20));
        }
        let pids = adopted(&spawned_set());
        for pid in pids {
            let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
            if env.split(|b| *b == 0).any(|kv| kv == needle.as_bytes()) {
                let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
        reap_adopted();
    }
}

/// Makes this process the child subreaper, so a descendant that daemonizes is
/// re-parented to the node (which can still find and kill it) instead of init.
pub fn become_subreaper() {
    if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        tracing::warn!(error = %e, "cannot become child subreaper; daemonized agents re-parent to init");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sweep that reaps adopted orphans must never reap one of the node's own
    /// children (git, started through tokio): tokio would then fail to wait for it
    /// with ECHILD ("No child processes"), as it once did under load.
    #[tokio::test]
    async fn reaping_adopted_orphans_leaves_the_nodes_own_children_alone() {
        let mut child = tokio::process::Command::new("true").spawn().unwrap();
        let pid = i32::try_from(child.id().unwrap()).unwrap();
        let zombie = || {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|s| s.rsplit_once(')').is_some_and(|(_, r)| r.trim_start().starts_with('Z')))
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !zombie() {
            assert!(std::time::Instant::now() < deadline, "the child never exited");
            std::thread::sleep(Duration::from_millis(5));
        }
        reap_adopted();
        let status = child.wait().await.expect("tokio still waits for its own child");
        assert!(status.success());
    }
}
