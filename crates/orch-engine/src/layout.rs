//! Where a node keeps each item's working directory and each job's log, prompt and
//! verdict under `data_dir`. One place decides the paths so the launcher, the
//! finalizer, `orch logs` and the reaper agree on them.

use std::path::{Path, PathBuf};

use orch_core::ItemKey;
use orch_store::JobId;

/// The files of a node's data directory.
#[derive(Clone, Debug)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The item's worktree (a git worktree of its branch).
    pub fn workdir(&self, item: &ItemKey) -> PathBuf {
        self.root.join("work").join(item.to_string())
    }

    /// The node's bare mirror of a repository, shared by its items' worktrees.
    pub fn mirror(&self, repo: &str) -> PathBuf {
        self.root.join("repos").join(format!("{repo}.git"))
    }

    /// Where the merge into main is made (a temporary worktree).
    pub fn merge_scratch(&self, item: &ItemKey) -> PathBuf {
        self.root.join("merge").join(item.to_string())
    }

    /// Where a merge-preview gate's tree is checked out.
    pub fn preview(&self, job: JobId, epoch: i64, gate: &str) -> PathBuf {
        self.root.join("preview").join(format!("job-{job}-e{epoch}-{gate}"))
    }

    /// The agent's combined stdout and stderr.
    pub fn job_log(&self, job: JobId) -> PathBuf {
        self.root.join("logs").join(format!("job-{job}.log"))
    }

    /// One gate's output for one job at one epoch (read for metrics and failure
    /// reasons; the epoch keeps a stale owner's run from mixing with a takeover's).
    pub fn gate_log(&self, job: JobId, epoch: i64, gate: &str) -> PathBuf {
        self.root.join("logs").join(format!("job-{job}.e{epoch}.gate-{gate}.log"))
    }

    pub fn verdict_file(&self, job: JobId) -> PathBuf {
        self.root.join("verdicts").join(format!("job-{job}.json"))
    }

    pub fn prompt_file(&self, job: JobId) -> PathBuf {
        self.root.join("prompts").join(format!("job-{job}.md"))
    }

    /// A folder orch owns for one job's agent run: Codex's `CODEX_HOME` and other
    /// files an adapter writes before the start. Made afresh for every run.
    pub fn agent_scratch(&self, job: JobId) -> PathBuf {
        self.root.join("agents").join(format!("job-{job}"))
    }

    /// Where node `node` records the process groups it has started.
    pub fn run_dir(&self, node: &str) -> PathBuf {
        self.root.join("run").join(node)
    }

    /// Creates the folders a job's files go in (logs, verdicts, prompts, and the
    /// parents of worktrees, mirrors and scratch trees).
    ///
    /// # Errors
    /// The I/O error of the folder that could not be made.
    pub fn prepare(&self) -> std::io::Result<()> {
        for sub in ["logs", "verdicts", "prompts", "agents", "work", "repos", "merge", "preview"] {
            std::fs::create_dir_all(self.root.join(sub))?;
        }
        Ok(())
    }
}
