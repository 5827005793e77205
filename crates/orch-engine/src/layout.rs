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

    /// The item's working directory (a plain folder until worktrees arrive).
    pub fn workdir(&self, item: &ItemKey) -> PathBuf {
        self.root.join("work").join(item.to_string())
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

    /// Where node `node` records the process groups it has started.
    pub fn run_dir(&self, node: &str) -> PathBuf {
        self.root.join("run").join(node)
    }

    /// Creates the folders a job needs.
    ///
    /// # Errors
    /// The I/O error of the folder that could not be made.
    pub fn prepare(&self, item: &ItemKey) -> std::io::Result<PathBuf> {
        for sub in ["logs", "verdicts", "prompts"] {
            std::fs::create_dir_all(self.root.join(sub))?;
        }
        let work = self.workdir(item);
        std::fs::create_dir_all(&work)?;
        Ok(work)
    }
}
