//! Containment of a job's processes (DESIGN §7, "Containment").
//!
//! A process group is not enough: an agent that runs `setsid sleep 600 &` starts a
//! new session and group, and killing the job's group leaves it alive. Where the
//! host lets orch make cgroups, every agent and gate runs in a cgroup of its own,
//! and ending the job kills the whole cgroup: cgroup v2's `cgroup.kill` (one write,
//! the kernel kills every member, including ones that double-forked), or on a host
//! with only the v1 hierarchy the `freezer` controller (freeze so nothing can fork,
//! SIGKILL every member, thaw). The cgroups of one node live under one folder named
//! after the node id and its data directory, so start-up reconcile can kill what a
//! crashed incarnation left there and nothing else.
//!
//! Without cgroups (`isolation = "process-group"`, or `auto` on a host that refuses
//! them) the node is the child subreaper: a daemonized descendant is re-parented
//! to the node instead of init, and after a job's group is killed the node kills
//! the adopted processes whose environment names that job. A process that also
//! clears its environment escapes that mode; the cgroup mode has no such gap.
//!
//! A child is put in its cgroup before it can fork: it is started as a small
//! `/bin/sh` that writes its own pid to `cgroup.procs` and then `exec`s the real
//! command, so there is no window in which a descendant is outside the cgroup.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use orch_core::config::Isolation;
use tracing::{info, warn};

/// The name of the folder under the node's own cgroup that holds job cgroups.
const ROOT_NAME: &str = "orch-jobs";

/// How a node contains the processes of its jobs.
#[derive(Clone, Debug)]
pub enum Containment {
    /// A cgroup per process tree, under this node's folder.
    Cgroup(CgroupBase),
    /// Process groups, with the node as child subreaper.
    ProcessGroup,
}

/// The folder that holds this node's job cgroups.
#[derive(Clone, Debug)]
pub struct CgroupBase {
    dir: PathBuf,
    v2: bool,
}

/// One cgroup holding one agent or gate and all its descendants.
#[derive(Clone, Debug)]
pub struct JobCgroup {
    dir: PathBuf,
    v2: bool,
}

/// Why the requested containment is not available.
#[derive(Debug, thiserror::Error)]
#[error("node.isolation = \"cgroup\" but no cgroup can be made here: {0}")]
pub struct Unavailable(String);

impl Containment {
    /// Picks the containment for `mode`. `key` names this node's folder of cgroups
    /// (node id plus data directory), so two nodes on one host never touch each
    /// other's.
    ///
    /// # Errors
    /// [`Unavailable`] when `mode` is `Cgroup` and neither cgroup v2 nor the v1
    /// freezer can be used.
    pub fn detect(mode: Isolation, key: &str) -> Result<Self, Unavailable> {
        if mode == Isolation::ProcessGroup {
            return Ok(Containment::ProcessGroup);
        }
        let tried = CgroupBase::v2(key).or_else(|e2| CgroupBase::v1_freezer(key).map_err(|e1| format!("{e2}; {e1}")));
        match (tried, mode) {
            (Ok(base), _) => Ok(Containment::Cgroup(base)),
            (Err(why), Isolation::Cgroup) => Err(Unavailable(why)),
            (Err(why), _) => {
                info!(reason = %why, "no cgroups for job containment: using process groups and the child subreaper");
                Ok(Containment::ProcessGroup)
            }
        }
    }

    /// A human-readable name for logs and `orch queue`.
    pub fn describe(&self) -> String {
        match self {
            Containment::Cgroup(b) => {
                format!("cgroup {} at {}", if b.v2 { "v2" } else { "v1 freezer" }, b.dir.display())
            }
            Containment::ProcessGroup => "process groups with the node as child subreaper".to_owned(),
        }
    }

    /// A fresh cgroup for one process tree, or `None` in process-group mode.
    ///
    /// # Errors
    /// The I/O error of making the cgroup.
    pub fn job_cgroup(&self, name: &str) -> io::Result<Option<JobCgroup>> {
        match self {
            Containment::Cgroup(base) => base.create(name).map(Some),
            Containment::ProcessGroup => Ok(None),
        }
    }

    /// Kills every process left in this node's cgroups by an earlier incarnation
    /// and removes the cgroups. Returns how many cgroups still had processes.
    pub fn sweep(&self) -> usize {
        match self {
            Containment::Cgroup(base) => base.sweep(),
            Containment::ProcessGroup => 0,
        }
    }
}

/// Makes a cgroup folder name out of a node key: only `[A-Za-z0-9._-]`.
fn folder_name(key: &str) -> String {
    key.chars().map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '_' }).collect()
}

/// The mount point of the first mount of `fstype` whose super options contain
/// `option` (any, if `option` is empty), from /proc/self/mountinfo.
fn mount_point(fstype: &str, option: &str) -> Option<PathBuf> {
    let info = fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let mut r = right.split_whitespace();
        let (ty, _src, opts) = (r.next()?, r.next()?, r.next().unwrap_or(""));
        let ok = ty == fstype && (option.is_empty() || opts.split(',').any(|o| o == option));
        ok.then(|| left.split_whitespace().nth(4).map(PathBuf::from)).flatten()
    })
}

/// This process's cgroup path in the hierarchy whose /proc/self/cgroup line has
/// `controllers` (empty for v2's `0::` line).
fn own_cgroup(controllers: &str) -> Option<String> {
    let text = fs::read_to_string("/proc/self/cgroup").ok()?;
    text.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (_, ctl, path) = (parts.next()?, parts.next()?, parts.next()?);
        let matches = if controllers.is_empty() { ctl.is_empty() } else { ctl.split(',').any(|c| c == controllers) };
        matches.then(|| path.to_owned())
    })
}

impl CgroupBase {
    fn under(mount: &Path, own: &str, key: &str) -> PathBuf {
        mount.join(own.trim_start_matches('/')).join(ROOT_NAME).join(folder_name(key))
    }

    fn v2(key: &str) -> Result<Self, String> {
        let mount = mount_point("cgroup2", "").ok_or("no cgroup2 mount")?;
        let own = own_cgroup("").ok_or("no cgroup v2 line in /proc/self/cgroup")?;
        let dir = Self::under(&mount, &own, key);
        fs::create_dir_all(&dir).map_err(|e| format!("cannot make {}: {e}", dir.display()))?;
        if !dir.join("cgroup.kill").exists() {
            return Err(format!("{} has no cgroup.kill (kernel older than 5.14)", dir.display()));
        }
        Ok(Self { dir, v2: true })
    }

    fn v1_freezer(key: &str) -> Result<Self, String> {
        let mount = mount_point("cgroup", "freezer").ok_or("no cgroup v1 freezer mount")?;
        let own = own_cgroup("freezer").ok_or("no freezer line in /proc/self/cgroup")?;
        let dir = Self::under(&mount, &own, key);
        fs::create_dir_all(&dir).map_err(|e| format!("cannot make {}: {e}", dir.display()))?;
        if !dir.join("freezer.state").exists() {
            return Err(format!("{} has no freezer.state", dir.display()));
        }
        Ok(Self { dir, v2: false })
    }

    fn create(&self, name: &str) -> io::Result<JobCgroup> {
        let cg = JobCgroup { dir: self.dir.join(folder_name(name)), v2: self.v2 };
        match fs::create_dir(&cg.dir) {
            Ok(()) => {}
            // Left by a run that did not clean up (a crash): empty it and reuse it.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => cg.kill(),
            Err(e) => return Err(e),
        }
        Ok(cg)
    }

    fn sweep(&self) -> usize {
        let Ok(entries) = fs::read_dir(&self.dir) else { return 0 };
        let mut killed = 0;
        for entry in entries.flatten() {
            if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let cg = JobCgroup { dir: entry.path(), v2: self.v2 };
            if !cg.pids().is_empty() {
                killed += 1;
                warn!(cgroup = %cg.dir.display(), "killing processes a previous incarnation left in its cgroup");
            }
            cg.remove();
        }
        killed
    }
}

impl JobCgroup {
    /// The file a process writes its pid to in order to join.
    pub fn procs_file(&self) -> PathBuf {
        self.dir.join("cgroup.procs")
    }

    /// The pids in the cgroup now.
    pub fn pids(&self) -> Vec<i32> {
        fs::read_to_string(self.procs_file())
            .map(|t| t.lines().filter_map(|l| l.trim().parse().ok()).collect())
            .unwrap_or_default()
    }

    /// Kills every process in the cgroup, descendants that left the process group
    /// included.
    pub fn kill(&self) {
        if self.v2 {
            if let Err(e) = fs::write(self.dir.join("cgroup.kill"), "1") {
                warn!(cgroup = %self.dir.display(), error = %e, "cgroup.kill failed; killing members one by one");
                self.kill_each();
            }
            return;
        }
        // v1: freeze first so no member can fork while we kill, then thaw so the
        // kills are delivered.
        let state = self.dir.join("freezer.state");
        let _ = fs::write(&state, "FROZEN");
        self.kill_each();
        let _ = fs::write(&state, "THAWED");
    }

    fn kill_each(&self) {
        for pid in self.pids() {
            if pid > 1 {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            }
        }
    }

    /// Kills what is left, reaps what the node adopted, and removes the cgroup once
    /// it is empty (bounded: a cgroup that will not empty is left for the next
    /// sweep and logged).
    pub fn remove(self) {
        // The usual case: every process of the run ended with the agent. An empty
        // cgroup has nothing to kill, and whatever it re-parented to the node and
        // left a zombie is reaped by the heartbeat (a scan of /proc, too slow for
        // the hand-off between two stages).
        if self.pids().is_empty() && fs::remove_dir(&self.dir).is_ok() {
            return;
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            self.kill();
            crate::process::reap_adopted();
            if self.pids().is_empty() && fs::remove_dir(&self.dir).is_ok() {
                return;
            }
            if Instant::now() > deadline {
                warn!(cgroup = %self.dir.display(), "cgroup did not empty; the next sweep retries");
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Starts a shell in `cg` that leaves a `setsid` daemon behind, kills the
    /// cgroup, and checks both are dead and the cgroup is gone.
    async fn kills_a_daemonized_descendant(base: CgroupBase) {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("daemon");
        let cg = base.create("job-1-e1-agent").unwrap();
        let cg_dir = cg.dir.clone();
        let script =
            format!("setsid sleep 600 </dev/null >/dev/null 2>&1 & echo $! > {}; sleep 600", pidfile.display());
        let argv = vec!["/bin/sh".to_owned(), "-c".to_owned(), script];
        let log = dir.path().join("log");
        let file = crate::untrusted::create_fresh(&log).unwrap();
        let mut spawned = crate::process::spawn(&argv, dir.path(), &[], (&log, file), Some(cg), false).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::fs::read_to_string(&pidfile).map_or(true, |s| s.trim().is_empty()) {
            assert!(Instant::now() < deadline, "the daemon never started");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let daemon: i32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
        assert!(std::path::Path::new(&format!("/proc/{daemon}")).exists());
        let stop = async {};
        let ended = crate::process::supervise(&mut spawned, Duration::from_secs(60), stop).await;
        assert_eq!(ended, crate::process::Ended::Stopped);
        let gone = |pid: i32| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map_or(true, |s| s.rsplit_once(')').is_some_and(|(_, r)| r.trim_start().starts_with('Z')))
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !gone(daemon) {
            assert!(Instant::now() < deadline, "the setsid daemon outlived its cgroup");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(!cg_dir.exists(), "the job's cgroup was removed");
        let _ = std::fs::remove_dir(&base.dir);
    }

    fn key(tag: &str) -> String {
        format!("unit-{tag}-{}", std::process::id())
    }

    #[tokio::test]
    async fn cgroup_v2_kills_a_daemonized_descendant() {
        let base = CgroupBase::v2(&key("v2")).expect("this machine offers cgroup v2 (see docs/RELIABILITY.md)");
        kills_a_daemonized_descendant(base).await;
    }

    #[tokio::test]
    async fn cgroup_v1_freezer_kills_a_daemonized_descendant() {
        let base = CgroupBase::v1_freezer(&key("v1")).expect("this machine offers the cgroup v1 freezer");
        kills_a_daemonized_descendant(base).await;
    }

    #[test]
    fn folder_names_are_safe() {
        assert_eq!(folder_name("node a/../x"), "node_a_.._x");
        assert_eq!(folder_name("job-1-e2-gate-retest"), "job-1-e2-gate-retest");
    }
}
