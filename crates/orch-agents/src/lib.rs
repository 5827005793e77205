//! Agent adapters: how orch runs a coding agent's CLI and reads what it says.
//!
//! An adapter is pure: from an `[agents.<role>]` table and the paths of one run
//! it builds the argv, the environment and the config files to write
//! ([`launch`]), and it turns the agent's line-delimited event stream into
//! readable progress lines, usage (turns, tokens, cost) and a final outcome
//! ([`StreamParser`]). Starting, containing, supervising and killing the process
//! stays the engine's, as do the reads of agent-writable files; so do the
//! verdict and the transition. Keeping this crate free of I/O lets every parser
//! be tested on hostile input without a process.
//!
//! Architecture invariant: no I/O, no async; the stream parsers treat every line
//! as hostile (any byte sequence is accepted; malformed lines are reported and
//! skipped, never a panic) and keep bounded state whatever the stream's length.

pub mod claude;
pub mod codex;
pub mod prompt;
mod stream;
mod text;

use std::path::{Path, PathBuf};

use orch_core::config::{AdapterKind, AgentConfig};

pub use stream::{Fed, Outcome, StreamParser};

/// The paths and facts of one run an adapter needs to build its command line.
#[derive(Clone, Debug)]
pub struct RunPaths<'a> {
    /// The rendered role prompt (also at `prompt_file`).
    pub prompt: &'a str,
    pub prompt_file: &'a Path,
    pub verdict_file: &'a Path,
    pub worktree: &'a Path,
    /// A folder orch owns for this run (Codex's `CODEX_HOME` goes there).
    pub scratch: &'a Path,
    /// Whether the node runs as root (Claude Code then needs `IS_SANDBOX=1` to
    /// skip its permission prompts).
    pub as_root: bool,
}

/// What to start: argv, environment added to the node's, and files to write first.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Launch {
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    /// `(path, contents)`: written (fresh, not through links) before the start.
    pub files: Vec<(PathBuf, String)>,
}

/// Prompts longer than this go by file: one argv string may not exceed the
/// kernel's `MAX_ARG_STRLEN` (128 KiB), and a long prompt is best read anyway.
pub const MAX_PROMPT_ARG_BYTES: usize = 96 * 1024;

/// The argv, environment and files that run `agent` for one job, or `None` for
/// an adapter that is not a coding agent's CLI (`command`, `script`, `none`).
pub fn launch(agent: &AgentConfig, run: &RunPaths<'_>) -> Option<Launch> {
    match agent.adapter {
        AdapterKind::ClaudeCode => Some(claude::launch(agent, run)),
        AdapterKind::Codex => Some(codex::launch(agent, run)),
        AdapterKind::Command | AdapterKind::Script | AdapterKind::None => None,
    }
}

/// The parser of the adapter's event stream, for the adapters that have one.
pub fn parser(adapter: AdapterKind) -> Option<StreamParser> {
    match adapter {
        AdapterKind::ClaudeCode => Some(StreamParser::Claude(claude::Parser::default())),
        AdapterKind::Codex => Some(StreamParser::Codex(codex::Parser::default())),
        AdapterKind::Command | AdapterKind::Script | AdapterKind::None => None,
    }
}

/// The prompt as the CLI's argument: the text itself, or, when too long for one
/// argv string, an instruction to read it from its file.
fn prompt_arg(run: &RunPaths<'_>) -> String {
    if run.prompt.len() <= MAX_PROMPT_ARG_BYTES {
        run.prompt.to_owned()
    } else {
        format!(
            "Your instructions are in the file {} (too long to pass here). Read it first and follow it.",
            run.prompt_file.display()
        )
    }
}

/// The folders the agent must be able to write besides its worktree: the
/// verdict file's (and the prompt's, to read it).
fn extra_dirs(run: &RunPaths<'_>) -> Vec<String> {
    let mut dirs: Vec<String> = [run.verdict_file.parent(), run.prompt_file.parent()]
        .into_iter()
        .flatten()
        .map(|d| d.display().to_string())
        .collect();
    dirs.dedup();
    dirs
}
