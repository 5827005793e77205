//! Running the `git` CLI: one typed entry point with a timeout, a quiet and
//! predictable environment, and errors that name the command and carry git's own
//! words.
//!
//! git through its CLI rather than a library: worktrees, merges and
//! `--force-with-lease` pushes are safest done by git itself (DESIGN §11). Every
//! call is bounded: a remote that hangs (a dead network, a credential prompt)
//! must not hang the node, so prompts are off and the child is killed at the
//! timeout.

use std::ffi::OsStr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

use crate::Error;

/// How long one git command may run. Generous: a first clone of a large
/// repository takes a while; anything slower is a hung remote.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// Overrides for every git call: configuration an agent could plant in the
/// repository (it shares the mirror's config) that would make git run a program.
const HARDENING: &[&str] = &[
    "-c",
    "core.hooksPath=/dev/null",
    "-c",
    "core.fsmonitor=false",
    "-c",
    "commit.gpgSign=false",
    "-c",
    "tag.gpgSign=false",
    "-c",
    "core.sshCommand=ssh",
    "-c",
    "protocol.ext.allow=never",
    "-c",
    "core.editor=true",
    "-c",
    "sequence.editor=true",
];

/// The git CLI, with the settings every call shares.
#[derive(Clone, Debug)]
pub struct Git {
    program: String,
    timeout: Duration,
}

impl Default for Git {
    fn default() -> Self {
        Self { program: "git".to_owned(), timeout: DEFAULT_TIMEOUT }
    }
}

/// What a git command printed, for callers that judge the exit code themselves.
#[derive(Debug)]
pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Git {
    /// git with a different timeout per call.
    pub fn with_timeout(timeout: Duration) -> Self {
        Self { timeout, ..Self::default() }
    }

    /// Runs `git ARGS` in `dir` and returns its exit code and output, whatever
    /// the code.
    ///
    /// # Errors
    /// `Error::Spawn` when git cannot be started, `Error::Timeout` when it ran too long.
    pub async fn output<S: AsRef<OsStr>>(&self, dir: &Path, args: &[S], env: &[(&str, &str)]) -> Result<Output, Error> {
        let mut cmd = Command::new(&self.program);
        // An agent works inside a worktree of the node's mirror and can write the
        // mirror's config and hooks. Nothing it puts there may run as the node:
        // no hooks, no fsmonitor, no signing programs, no custom ssh command.
        cmd.args(HARDENING)
            .args(args)
            .current_dir(dir)
            // No prompt can ever wait for a human, no pager, English messages
            // (callers look for a few of git's words), and no hooks or templates
            // from the machine's own git configuration of the system scope.
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_ASKPASS", "true")
            .env("SSH_ASKPASS", "true")
            .env("GIT_PAGER", "cat")
            .env("LC_ALL", "C")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            // `refs/replace/*` an agent adds to the shared mirror would make git
            // show other content under a commit's id (checkouts, merges, logs).
            .env("GIT_NO_REPLACE_OBJECTS", "1")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let shown = || {
            let words: Vec<String> = args.iter().map(|a| a.as_ref().to_string_lossy().into_owned()).collect();
            format!("git {}", words.join(" "))
        };
        let child = cmd.spawn().map_err(|source| Error::Spawn { command: shown(), source })?;
        let out = match tokio::time::timeout(self.timeout, child.wait_with_output()).await {
            Ok(Ok(out)) => out,
            Ok(Err(source)) => return Err(Error::Spawn { command: shown(), source }),
            Err(_) => return Err(Error::Timeout { command: shown(), after: self.timeout }),
        };
        Ok(Output {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    /// Runs `git ARGS` in `dir`; its trimmed stdout on success.
    ///
    /// # Errors
    /// `Error::Failed` naming the command, its exit code and git's message.
    pub async fn run<S: AsRef<OsStr>>(&self, dir: &Path, args: &[S]) -> Result<String, Error> {
        self.run_env(dir, args, &[]).await
    }

    /// [`Git::run`] with extra environment.
    ///
    /// # Errors
    /// As [`Git::run`].
    pub async fn run_env<S: AsRef<OsStr>>(
        &self,
        dir: &Path,
        args: &[S],
        env: &[(&str, &str)],
    ) -> Result<String, Error> {
        let out = self.output(dir, args, env).await?;
        if out.code == 0 {
            return Ok(out.stdout.trim_end().to_owned());
        }
        let words: Vec<String> = args.iter().map(|a| a.as_ref().to_string_lossy().into_owned()).collect();
        Err(Error::Failed {
            command: format!("git {}", words.join(" ")),
            code: out.code,
            stderr: out.stderr.trim().to_owned(),
        })
    }
}
