//! Helpers shared by the CLI's black-box tests: run the real `orch` binary, keep
//! an `orch serve` child that is killed if a test fails, and wait on a condition
//! with a deadline.

#![allow(dead_code, unreachable_pub)]

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub mod deployment;
pub mod proxy;

pub const ORCH: &str = env!("CARGO_BIN_EXE_orch");

/// Runs `orch ARGS` in `dir` (ignoring any `ORCH_CONFIG` of the test's environment).
pub fn orch_output(dir: &Path, args: &[&str]) -> Output {
    Command::new(ORCH).args(args).current_dir(dir).env_remove("ORCH_CONFIG").output().unwrap()
}

/// Runs `orch ARGS` in `dir`: (succeeded, stdout, stderr).
pub fn orch(dir: &Path, args: &[&str]) -> (bool, String, String) {
    let out = orch_output(dir, args);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// An `orch serve` child that is SIGKILLed if the test fails before it stops it,
/// so a failing run leaves no node behind.
pub struct Serve(pub Child);

impl Drop for Serve {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Starts `orch serve EXTRA…` in `dir` with its diagnostics in `dir/log`.
pub fn serve(dir: &Path, extra: &[&str], log: &str) -> Serve {
    let log = std::fs::File::create(dir.join(log)).unwrap();
    Serve(
        Command::new(ORCH)
            .arg("serve")
            .args(extra)
            .current_dir(dir)
            .env_remove("ORCH_CONFIG")
            // Any free port: tests run nodes side by side.
            .env("ORCH_SERVER_LISTEN", "127.0.0.1:0")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    )
}

/// Polls `f` until it holds, failing the test after 60 s.
pub fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
