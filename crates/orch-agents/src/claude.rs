//! The `claude-code` adapter: runs `claude -p <prompt> --output-format
//! stream-json --verbose` and reads its line-delimited stream — `system` (`init`,
//! `api_retry`), `assistant` and `user` messages (tool uses and their results
//! become progress lines) and the final `result` (`subtype`, `is_error`,
//! `result`, `num_turns`, `usage`, `total_cost_usd`).

use std::collections::BTreeMap;

use orch_core::Usage;
use orch_core::config::AgentConfig;
use serde_json::Value;

use crate::stream::{Fed, Outcome};
use crate::text::one_line;
use crate::{Launch, RunPaths, extra_dirs, prompt_arg};

/// Claude Code's default permission mode under orch: edits in the worktree are
/// accepted, anything else the mode refuses.
pub const DEFAULT_PERMISSION_MODE: &str = "acceptEdits";

/// The environment that keeps the CLI from calling home (telemetry, update
/// checks, error reports, side requests): a run talks to its model API only.
pub const QUIET_ENV: &[(&str, &str)] = &[
    ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1"),
    ("DISABLE_TELEMETRY", "1"),
    ("DISABLE_AUTOUPDATER", "1"),
    ("DISABLE_ERROR_REPORTING", "1"),
];

/// How many distinct assistant messages the live usage estimate remembers; the
/// final `result` replaces the estimate anyway, so older ones are folded in.
const MAX_TRACKED_MESSAGES: usize = 64;

/// The command line for one run.
pub fn launch(agent: &AgentConfig, run: &RunPaths<'_>) -> Launch {
    let cli = &agent.cli;
    let mut argv = vec![cli.binary.clone().unwrap_or_else(|| "claude".to_owned())];
    argv.extend(["-p".to_owned(), prompt_arg(run), "--output-format".into(), "stream-json".into(), "--verbose".into()]);
    if let Some(m) = &cli.model {
        argv.extend(["--model".to_owned(), m.clone()]);
    }
    if let Some(n) = cli.max_turns {
        argv.extend(["--max-turns".to_owned(), n.to_string()]);
    }
    let mode = cli.permission_mode.as_deref().unwrap_or(DEFAULT_PERMISSION_MODE);
    let mut env: Vec<(String, String)> = QUIET_ENV.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    if mode == "bypassPermissions" {
        argv.push("--dangerously-skip-permissions".to_owned());
        if run.as_root {
            // Claude Code refuses to skip permissions as root unless told it is sandboxed.
            env.push(("IS_SANDBOX".to_owned(), "1".to_owned()));
        }
    } else {
        argv.extend(["--permission-mode".to_owned(), mode.to_owned()]);
    }
    if !cli.allowed_tools.is_empty() {
        argv.extend(["--allowedTools".to_owned(), cli.allowed_tools.join(",")]);
    }
    // The verdict file lives outside the worktree; the agent must be allowed to write it.
    for dir in extra_dirs(run) {
        argv.extend(["--add-dir".to_owned(), dir]);
    }
    env.extend(cli.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    Launch { argv, env, files: Vec::new() }
}

/// The parser of Claude Code's `stream-json`.
#[derive(Debug, Default)]
pub struct Parser {
    /// Usage per assistant message id seen so far (the live estimate).
    live: BTreeMap<String, Usage>,
    /// Usage of messages folded out of `live`.
    folded: Usage,
    /// The final `result`'s usage and outcome, once it came.
    result: Option<(Usage, Outcome)>,
    last_text: Option<String>,
}

impl Parser {
    pub(crate) fn feed(&mut self, kind: &str, v: &Value) -> Fed {
        let mut fed = Fed { lines: Vec::new(), progress: true };
        match kind {
            "system" => match v.get("subtype").and_then(Value::as_str) {
                Some("init") => {
                    let model = v.get("model").and_then(Value::as_str).unwrap_or("?");
                    let version = v.get("claude_code_version").and_then(Value::as_str).unwrap_or("?");
                    fed.lines.push(format!(
                        "claude-code {} started, model {}",
                        one_line(version, 40),
                        one_line(model, 80)
                    ));
                }
                Some("api_retry") => {
                    // Waiting on the API is not progress: a run that only retries stalls.
                    fed.progress = false;
                    let attempt = v.get("attempt").and_then(Value::as_u64).unwrap_or(0);
                    let status = v.get("error_status").map_or_else(|| "?".to_owned(), ToString::to_string);
                    fed.lines.push(format!("API call failed (status {}), retry {attempt}", one_line(&status, 20)));
                }
                _ => {}
            },
            "assistant" => self.assistant(v, &mut fed),
            "user" => user(v, &mut fed),
            "result" => self.result(v, &mut fed),
            _ => {}
        }
        fed
    }

    fn assistant(&mut self, v: &Value, fed: &mut Fed) {
        let Some(msg) = v.get("message") else { return };
        if let (Some(id), Some(u)) = (msg.get("id").and_then(Value::as_str), msg.get("usage")) {
            if self.live.len() >= MAX_TRACKED_MESSAGES && !self.live.contains_key(id) {
                let all = std::mem::take(&mut self.live);
                self.folded = all.values().fold(self.folded, |acc, u| acc.plus(u));
            }
            let mut usage = tokens(u);
            usage.turns = 1;
            self.live.insert(one_line(id, 100), usage);
        }
        for block in msg.get("content").and_then(Value::as_array).into_iter().flatten() {
            match block.get("type").and_then(Value::as_str) {
                Some("tool_use") => {
                    let name = block.get("name").and_then(Value::as_str).unwrap_or("?");
                    fed.lines.push(format!("tool {}", describe_tool(name, block.get("input"))));
                }
                Some("text") => {
                    if let Some(t) = block.get("text").and_then(Value::as_str).filter(|t| !t.trim().is_empty()) {
                        fed.lines.push(format!("says: {}", one_line(t, 200)));
                        self.last_text = Some(one_line(t, 500));
                    }
                }
                _ => {}
            }
        }
    }

    fn result(&mut self, v: &Value, fed: &mut Fed) {
        let subtype = v.get("subtype").and_then(Value::as_str).unwrap_or("?");
        let is_error = v.get("is_error").and_then(Value::as_bool).unwrap_or(true);
        let text = v.get("result").and_then(Value::as_str).map(|t| one_line(t, 500));
        let mut usage = v.get("usage").map(tokens).unwrap_or_default();
        usage.turns = v.get("num_turns").and_then(Value::as_u64).unwrap_or(0);
        usage.cost_usd = v.get("total_cost_usd").and_then(Value::as_f64).filter(|c| c.is_finite() && *c >= 0.0);
        let outcome = if !is_error && subtype == "success" {
            Outcome::Success { summary: text.clone().or_else(|| self.last_text.clone()).unwrap_or_default() }
        } else {
            let detail = match subtype {
                "error_max_turns" => format!("max turns reached after {} turns", usage.turns),
                _ => {
                    let api = v.get("api_error_status").filter(|s| !s.is_null()).map(|s| format!("API status {s}: "));
                    let errors =
                        v.get("errors").and_then(Value::as_array).and_then(|e| e.first()).and_then(Value::as_str);
                    format!(
                        "{}{}",
                        api.unwrap_or_default(),
                        text.clone().or_else(|| errors.map(|e| one_line(e, 300))).unwrap_or_else(|| "no detail".into())
                    )
                }
            };
            // An API error ends with subtype `success` and `is_error`; its
            // `terminal_reason` (`api_error`) says more.
            let label = match (subtype, v.get("terminal_reason").and_then(Value::as_str)) {
                ("success", Some(t)) => t,
                ("success", None) => "error",
                (s, _) => s,
            };
            Outcome::Failed { reason: format!("claude-code {}: {detail}", one_line(label, 40)) }
        };
        fed.lines.push(format!(
            "result: {} after {} turns, {} input + {} output tokens{}{}",
            one_line(subtype, 40),
            usage.turns,
            usage.input_tokens,
            usage.output_tokens,
            usage.cost_usd.map(|c| format!(", ${c:.4}")).unwrap_or_default(),
            text.map(|t| format!(": {}", one_line(&t, 200))).unwrap_or_default(),
        ));
        self.result = Some((usage, outcome));
    }

    pub(crate) fn usage(&self) -> Usage {
        match &self.result {
            Some((u, _)) => *u,
            None => self.live.values().fold(self.folded, |acc, u| acc.plus(u)),
        }
    }

    pub(crate) fn outcome(&self) -> Outcome {
        self.result.as_ref().map_or(Outcome::Unfinished, |(_, o)| o.clone())
    }
}

/// Token counts of an Anthropic `usage` object.
fn tokens(u: &Value) -> Usage {
    let n = |k: &str| u.get(k).and_then(Value::as_u64).unwrap_or(0);
    Usage {
        input_tokens: n("input_tokens"),
        output_tokens: n("output_tokens"),
        cache_read_tokens: n("cache_read_input_tokens"),
        cache_write_tokens: n("cache_creation_input_tokens"),
        ..Usage::default()
    }
}

/// `Bash: cargo test`, `Write: src/lib.rs`, or the tool's name.
fn describe_tool(name: &str, input: Option<&Value>) -> String {
    let field = |k: &str| input.and_then(|i| i.get(k)).and_then(Value::as_str);
    let what = match name {
        "Bash" => field("command"),
        "Write" | "Edit" | "MultiEdit" | "Read" | "NotebookEdit" => field("file_path").or(field("notebook_path")),
        "Glob" | "Grep" => field("pattern"),
        _ => None,
    };
    match what {
        Some(w) => format!("{}: {}", one_line(name, 40), one_line(w, 200)),
        None => one_line(name, 40),
    }
}

/// Tool results: files the agent changed, and failed tool calls.
fn user(v: &Value, fed: &mut Fed) {
    if let Some(path) = v.get("tool_use_result").and_then(|r| r.get("filePath")).and_then(Value::as_str) {
        fed.lines.push(format!("changed {}", one_line(path, 200)));
    }
    let content = v.get("message").and_then(|m| m.get("content")).and_then(Value::as_array);
    for block in content.into_iter().flatten() {
        if block.get("type").and_then(Value::as_str) == Some("tool_result")
            && block.get("is_error").and_then(Value::as_bool) == Some(true)
        {
            let text = block.get("content").and_then(Value::as_str).unwrap_or("");
            fed.lines.push(format!("tool failed: {}", one_line(text, 200)));
        }
    }
}

#[cfg(test)]
mod tests;
