//! Preparing a coding agent's run (adapters `claude-code` and `codex`): the
//! command line and environment orch-agents builds, the files it asks for
//! (Codex's `CODEX_HOME/config.toml`) written into a scratch folder made afresh
//! for the run, and the parser of the agent's event stream. The process itself
//! is started, contained and supervised by the launcher like any agent's.

use std::path::Path;
use std::sync::Arc;

use orch_agents::{RunPaths, StreamParser};
use orch_core::config::AgentConfig;
use orch_store::JobId;

use crate::ctx::Ctx;
use crate::untrusted;

/// A prepared run of a coding agent.
pub(crate) struct Prepared {
    pub(crate) argv: Vec<String>,
    pub(crate) env: Vec<(String, String)>,
    pub(crate) parser: StreamParser,
}

/// The paths of one run, as `job` knows them.
pub(crate) struct Paths<'a> {
    pub(crate) prompt_file: &'a Path,
    pub(crate) verdict_file: &'a Path,
    pub(crate) worktree: &'a Path,
}

/// `Ok(None)` for adapters that run their configured command.
///
/// # Errors
/// A reason naming the file that could not be written.
pub(crate) async fn prepare(
    ctx: &Arc<Ctx>,
    agent: &AgentConfig,
    job: JobId,
    prompt: &str,
    paths: &Paths<'_>,
) -> Result<Option<Prepared>, String> {
    let Some(parser) = orch_agents::parser(agent.adapter) else { return Ok(None) };
    let scratch = ctx.layout.agent_scratch(job);
    let run = RunPaths {
        prompt,
        prompt_file: paths.prompt_file,
        verdict_file: paths.verdict_file,
        worktree: paths.worktree,
        scratch: &scratch,
        as_root: nix::unistd::geteuid().is_root(),
    };
    let Some(launch) = orch_agents::launch(agent, &run) else { return Ok(None) };
    let files = launch.files.clone();
    // Blocking file work, off the runtime's threads. The scratch folder is ours,
    // but an earlier agent may have planted links in it: it is removed first and
    // every file is created fresh, never written through a link.
    let written = tokio::task::spawn_blocking(move || -> Result<(), String> {
        untrusted::clear(&scratch).map_err(|e| format!("cannot clear {}: {e}", scratch.display()))?;
        for (path, text) in files {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            }
            use std::io::Write as _;
            untrusted::create_fresh(&path)
                .and_then(|mut f| f.write_all(text.as_bytes()))
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        }
        Ok(())
    })
    .await
    .map_err(|e| format!("writing the agent's files: {e}"))?;
    written?;
    Ok(Some(Prepared { argv: ctx.config.resolve_argv(&launch.argv), env: launch.env, parser }))
}
