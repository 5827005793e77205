//! A deployment in a temporary folder for black-box tests of the real binary: an
//! `orch.toml`, agent scripts, a git remote the folder is a clone of, and helpers
//! to run `orch` and `orch serve` against it.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::{ORCH, Serve, orch_output};

/// A pass verdict.
pub const PASS: &str = r#"printf '{"verdict":"pass","summary":"ok"}' > "$ORCH_VERDICT_FILE""#;

pub fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.rsplit_once(')').is_some_and(|(_, r)| !r.trim_start().starts_with('Z')))
        .unwrap_or(false)
}

pub fn write_script(path: &Path, body: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Kills the pids listed in files of a folder when the test ends, pass or fail:
/// processes a test deliberately leaves behind (a killed node's agents) must not
/// outlive it.
pub struct KillListed(PathBuf);

impl Drop for KillListed {
    fn drop(&mut self) {
        for entry in std::fs::read_dir(&self.0).into_iter().flatten().flatten() {
            for pid in std::fs::read_to_string(entry.path()).unwrap_or_default().split_whitespace() {
                if let Ok(pid) = pid.parse::<i32>()
                    && pid > 1
                {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
            }
        }
    }
}

/// A deployment in a temporary folder: `orch.toml`, agent scripts, a `pids/`
/// folder scripts write to, and helpers to run `orch` against it.
pub struct Deployment {
    dir: tempfile::TempDir,
    /// The bare remote the deployment's folder is a clone of.
    pub remote: PathBuf,
    _cleanup: KillListed,
}

impl Deployment {
    /// `store` is the store URL; `reaper` the `[reaper]` body; `extra` is appended
    /// (edges, gates). Every role runs `agents/<role>.sh`, which passes unless the
    /// test writes its own.
    pub fn new(store: &str, reaper: &str, extra: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("pids")).unwrap();
        let mut text = format!(
            "[store]\nurl = \"{store}\"\n[node]\nid = \"node-a\"\nmax_concurrent_jobs = 4\ndata_dir = \"data-a\"\n\
             [reaper]\n{reaper}\n[[repos]]\nname = \"shop\"\nkey = \"SHOP\"\npath = \".\"\n"
        );
        for role in ["analyst", "architect", "developer", "tester", "deployer"] {
            text.push_str(&format!("[agents.{role}]\ncommand = [\"./agents/{role}.sh\"]\ntimeout_s = 30\n"));
            write_script(&d.join(format!("agents/{role}.sh")), PASS);
        }
        text.push_str(extra);
        std::fs::write(d.join("orch.toml"), text).unwrap();
        let cleanup = KillListed(d.join("pids"));
        let remote = orch_test_support::origin_for(d);
        Self { dir, remote, _cleanup: cleanup }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn script(&self, rel: &str, body: &str) {
        write_script(&self.path().join(rel), body);
    }

    pub fn orch(&self, args: &[&str]) -> std::process::Output {
        orch_output(self.path(), args)
    }

    pub fn add_item(&self, title: &str) -> String {
        let out = self.orch(&["item", "add", "--repo", "shop", "--kind", "bug", "--title", title, "--json"]);
        assert!(out.status.success(), "item add: {}", String::from_utf8_lossy(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["key"].as_str().unwrap().to_owned()
    }

    pub fn item(&self, key: &str) -> serde_json::Value {
        let out = self.orch(&["item", "show", key, "--json"]);
        assert!(out.status.success(), "item show: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    pub fn status(&self, key: &str) -> String {
        self.item(key)["status"].as_str().unwrap_or_default().to_owned()
    }

    pub fn events(&self, key: &str) -> Vec<serde_json::Value> {
        let out = self.orch(&["item", "events", key, "--json"]);
        assert!(out.status.success());
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap().as_array().unwrap().clone()
    }

    /// `orch serve` as node `id` with data in `data_dir`, extra environment `env`.
    pub fn serve(&self, id: &str, data_dir: &str, env: &[(&str, &str)], log: &str) -> Serve {
        self.serve_with(Command::new(ORCH), id, data_dir, env, log)
    }

    pub fn serve_with(&self, cmd: Command, id: &str, data_dir: &str, env: &[(&str, &str)], log: &str) -> Serve {
        self.serve_flags(cmd, &[], id, data_dir, env, log)
    }

    /// `serve_with`, with extra `orch serve` flags.
    pub fn serve_flags(
        &self,
        mut cmd: Command,
        flags: &[&str],
        id: &str,
        data_dir: &str,
        env: &[(&str, &str)],
        log: &str,
    ) -> Serve {
        let log = std::fs::File::create(self.path().join(log)).unwrap();
        cmd.args(["serve", "--poll-s", "0.05", "--drain-s", "2"])
            .args(flags)
            .current_dir(self.path())
            .env_remove("ORCH_CONFIG")
            .env("ORCH_NODE_ID", id)
            .env("ORCH_NODE_DATA_DIR", data_dir)
            // Any free port: tests run nodes side by side, and a test that calls
            // the API sets its own address in `env`.
            .env("ORCH_SERVER_LISTEN", "127.0.0.1:0")
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::null())
            .stderr(log);
        Serve(cmd.spawn().unwrap())
    }

    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.path().join(name)).unwrap_or_default()
    }

    pub fn pid_file(&self, name: &str) -> i32 {
        std::fs::read_to_string(self.path().join("pids").join(name)).unwrap().trim().parse().unwrap()
    }

    pub fn assert_audit_clean(&self) {
        let audit = self.orch(&["audit"]);
        assert!(
            audit.status.success(),
            "audit: {}{}",
            String::from_utf8_lossy(&audit.stdout),
            String::from_utf8_lossy(&audit.stderr)
        );
    }
}

pub fn terminate(serve: &mut Serve) -> std::process::ExitStatus {
    kill(Pid::from_raw(serve.0.id() as i32), Signal::SIGTERM).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = serve.0.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "orch serve did not stop within 30 s of SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn kill9(serve: &mut Serve) {
    kill(Pid::from_raw(serve.0.id() as i32), Signal::SIGKILL).unwrap();
    serve.0.wait().unwrap();
}

pub const FAST: &str =
    "interval_s = 0.2\nfinalize_grace_s = 1\nmax_running_s = 120\nlease_ttl_s = 1\nheartbeat_s = 0.1\n";

pub fn sqlite() -> &'static str {
    "sqlite://state/orch.db"
}
