//! The `codex` adapter: runs `codex exec --json --skip-git-repo-check` with a
//! `CODEX_HOME` orch writes for the run (the model provider with
//! `wire_api = "responses"`, no update checks, analytics off), and reads its
//! JSONL events — `thread.started`, `item.started`/`item.completed`
//! (`command_execution`, `file_change`, `agent_message`, `error`),
//! `turn.completed` (usage) and `turn.failed`.
//!
//! Codex retries an unreachable server without end; its retry notices are
//! reported as lines that are not progress, so the engine's stall detection
//! (`stall_s`) ends such a run.

use orch_core::Usage;
use orch_core::config::AgentConfig;
use serde_json::Value;

use crate::stream::{Fed, Outcome};
use crate::text::one_line;
use crate::{Launch, RunPaths, extra_dirs, prompt_arg};

/// Codex's default sandbox under orch: it may write its worktree (and the
/// verdict folder), nothing else.
pub const DEFAULT_SANDBOX: &str = "workspace-write";

/// The command line and `CODEX_HOME/config.toml` for one run.
pub fn launch(agent: &AgentConfig, run: &RunPaths<'_>) -> Launch {
    let cli = &agent.cli;
    let home = run.scratch.join("codex-home");
    let mut argv = vec![cli.binary.clone().unwrap_or_else(|| "codex".to_owned())];
    argv.extend(["exec", "--json", "--skip-git-repo-check"].map(str::to_owned));
    argv.extend(["--sandbox".to_owned(), cli.sandbox.clone().unwrap_or_else(|| DEFAULT_SANDBOX.to_owned())]);
    argv.extend(["--cd".to_owned(), run.worktree.display().to_string()]);
    if let Some(m) = &cli.model {
        argv.extend(["--model".to_owned(), m.clone()]);
    }
    for dir in extra_dirs(run) {
        argv.extend(["--add-dir".to_owned(), dir]);
    }
    argv.push(prompt_arg(run));
    let mut env = vec![("CODEX_HOME".to_owned(), home.display().to_string())];
    env.extend(cli.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    Launch { argv, env, files: vec![(home.join("config.toml"), config_toml(agent))] }
}

/// `CODEX_HOME/config.toml`: quiet, and the configured provider if any.
pub fn config_toml(agent: &AgentConfig) -> String {
    let mut text = String::from(
        "# Written by orch for one run; see docs/AGENTS.md.\n\
         check_for_update_on_startup = false\n",
    );
    if let Some(m) = &agent.cli.model {
        text.push_str(&format!("model = {}\n", toml_str(m)));
    }
    if let Some(p) = &agent.cli.provider {
        text.push_str(&format!("model_provider = {}\n", toml_str(&p.name)));
    }
    text.push_str("\n[analytics]\nenabled = false\n");
    if let Some(p) = &agent.cli.provider {
        text.push_str(&format!(
            "\n[model_providers.{}]\nname = {}\nbase_url = {}\nenv_key = {}\nwire_api = \"responses\"\n",
            toml_str(&p.name),
            toml_str(&p.name),
            toml_str(&p.base_url),
            toml_str(&p.env_key)
        ));
    }
    text
}

/// A TOML basic string (JSON's escaping is a subset TOML accepts).
fn toml_str(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

/// The parser of `codex exec --json`.
#[derive(Debug, Default)]
pub struct Parser {
    usage: Usage,
    completed: bool,
    failed: Option<String>,
    last_message: Option<String>,
    last_error: Option<String>,
}

impl Parser {
    pub(crate) fn feed(&mut self, kind: &str, v: &Value) -> Fed {
        let mut fed = Fed { lines: Vec::new(), progress: true };
        let item = v.get("item");
        let item_type = item.and_then(|i| i.get("type")).and_then(Value::as_str);
        let field = |k: &str| item.and_then(|i| i.get(k)).and_then(Value::as_str);
        match (kind, item_type) {
            ("thread.started", _) => fed.lines.push("codex thread started".to_owned()),
            ("item.started", Some("command_execution")) => {
                fed.lines.push(format!("run: {}", one_line(field("command").unwrap_or("?"), 200)));
            }
            ("item.completed", Some("command_execution")) => {
                let code = item.and_then(|i| i.get("exit_code")).map_or_else(|| "?".to_owned(), ToString::to_string);
                fed.lines.push(format!(
                    "ran (exit {}): {}",
                    one_line(&code, 10),
                    one_line(field("command").unwrap_or("?"), 200)
                ));
            }
            ("item.completed", Some("file_change")) => {
                let changes = item.and_then(|i| i.get("changes")).and_then(Value::as_array);
                for c in changes.into_iter().flatten().take(50) {
                    let path = c.get("path").and_then(Value::as_str).unwrap_or("?");
                    let how = c.get("kind").and_then(Value::as_str).unwrap_or("changed");
                    fed.lines.push(format!("{} {}", one_line(how, 20), one_line(path, 200)));
                }
            }
            ("item.completed", Some("agent_message")) => {
                let text = field("text").unwrap_or("");
                fed.lines.push(format!("says: {}", one_line(text, 200)));
                self.last_message = Some(one_line(text, 500));
            }
            ("item.completed", Some("error")) => {
                fed.lines.push(format!("codex warning: {}", one_line(field("message").unwrap_or("?"), 200)));
            }
            ("turn.completed", _) => {
                let u = v.get("usage");
                let n = |k: &str| u.and_then(|u| u.get(k)).and_then(Value::as_u64).unwrap_or(0);
                let cached = n("cached_input_tokens");
                let turn = Usage {
                    turns: 1,
                    // OpenAI counts cached tokens inside input_tokens.
                    input_tokens: n("input_tokens").saturating_sub(cached),
                    output_tokens: n("output_tokens"),
                    cache_read_tokens: cached,
                    cache_write_tokens: n("cache_write_input_tokens"),
                    cost_usd: None,
                };
                self.usage = self.usage.plus(&turn);
                self.completed = true;
                fed.lines.push(format!(
                    "turn completed: {} input + {} output tokens",
                    turn.input_tokens + turn.cache_read_tokens,
                    turn.output_tokens
                ));
            }
            ("turn.failed", _) => {
                let msg = v.get("error").and_then(|e| e.get("message")).and_then(Value::as_str);
                let reason = one_line(msg.or(self.last_error.as_deref()).unwrap_or("no detail"), 300);
                fed.lines.push(format!("turn failed: {reason}"));
                self.failed = Some(format!("codex turn failed: {reason}"));
            }
            ("error", _) => {
                // Retry notices ("Reconnecting… 2/5") and stream errors: not progress.
                fed.progress = false;
                let msg = one_line(v.get("message").and_then(Value::as_str).unwrap_or("?"), 300);
                fed.lines.push(format!("codex error: {msg}"));
                self.last_error = Some(msg);
            }
            _ => {}
        }
        fed
    }

    pub(crate) fn usage(&self) -> Usage {
        self.usage
    }

    pub(crate) fn outcome(&self) -> Outcome {
        match (&self.failed, self.completed) {
            (Some(reason), _) => Outcome::Failed { reason: reason.clone() },
            (None, true) => Outcome::Success { summary: self.last_message.clone().unwrap_or_default() },
            (None, false) => Outcome::Unfinished,
        }
    }
}

#[cfg(test)]
mod tests;
