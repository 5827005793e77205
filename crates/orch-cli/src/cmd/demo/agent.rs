//! `orch demo --agent claude-code|codex`: which agent runs the AI roles, and what a
//! real one needs on this machine (its CLI on `PATH`, its vendor's API key). The
//! check runs before anything is written, and names every missing piece at once.

use std::ffi::OsString;
use std::path::Path;

/// Who runs the analyst, architect, developer and tester.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum AgentChoice {
    /// The demo's own scripts: outcomes are scripted, so the demo checks them.
    #[default]
    Script,
    /// Claude Code (`claude`, with ANTHROPIC_API_KEY).
    ClaudeCode,
    /// Codex CLI (`codex`, with OPENAI_API_KEY).
    Codex,
}

impl AgentChoice {
    /// `(adapter, binary)` for a real agent; `None` for the scripts.
    pub(crate) fn adapter(self) -> Option<(&'static str, &'static str)> {
        match self {
            AgentChoice::Script => None,
            AgentChoice::ClaudeCode => Some(("claude-code", "claude")),
            AgentChoice::Codex => Some(("codex", "codex")),
        }
    }

    /// Whether outcomes are scripted (and so checked stage by stage).
    pub(crate) fn is_scripted(self) -> bool {
        self == AgentChoice::Script
    }

    fn requirement(self) -> Option<Requirement> {
        match self {
            AgentChoice::Script => None,
            AgentChoice::ClaudeCode => Some(Requirement {
                flag: "claude-code",
                binary: "claude",
                install: "npm install -g @anthropic-ai/claude-code",
                key_var: "ANTHROPIC_API_KEY",
                key_what: "an Anthropic API key",
            }),
            AgentChoice::Codex => Some(Requirement {
                flag: "codex",
                binary: "codex",
                install: "npm install -g @openai/codex",
                key_var: "OPENAI_API_KEY",
                key_what: "an OpenAI API key",
            }),
        }
    }
}

struct Requirement {
    flag: &'static str,
    binary: &'static str,
    install: &'static str,
    key_var: &'static str,
    key_what: &'static str,
}

/// What `agent` lacks given `path` (the `PATH` value) and `var` (reads an
/// environment variable); empty when it can run.
pub(crate) fn missing(agent: AgentChoice, path: Option<OsString>, var: impl Fn(&str) -> Option<String>) -> Vec<String> {
    let Some(req) = agent.requirement() else { return Vec::new() };
    let mut out = Vec::new();
    if find_on_path(req.binary, path).is_none() {
        out.push(format!("`{}` is not on PATH (install it: {})", req.binary, req.install));
    }
    if var(req.key_var).is_none_or(|v| v.trim().is_empty()) {
        out.push(format!("{} is not set ({} for `{}`)", req.key_var, req.key_what, req.binary));
    }
    if !out.is_empty() {
        out.insert(0, format!("`orch demo --agent {}` cannot run here:", req.flag));
    }
    out
}

/// The first executable file called `name` in the folders of `path`.
fn find_on_path(name: &str, path: Option<OsString>) -> Option<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    let path = path?;
    std::env::split_paths(&path).map(|dir| dir.join(name)).find(|candidate| {
        Path::new(candidate).metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_need_nothing() {
        assert!(missing(AgentChoice::Script, None, |_| None).is_empty());
    }

    #[test]
    fn a_missing_binary_and_key_are_both_named() {
        let dir = tempfile::tempdir().unwrap();
        let lines = missing(AgentChoice::ClaudeCode, Some(dir.path().as_os_str().to_owned()), |_| None);
        let text = lines.join("\n");
        assert!(text.contains("`claude` is not on PATH"), "{text}");
        assert!(text.contains("ANTHROPIC_API_KEY is not set"), "{text}");
    }

    #[test]
    fn an_installed_codex_with_a_key_is_ready() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("codex");
        std::fs::write(&bin, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = Some(dir.path().as_os_str().to_owned());
        assert!(missing(AgentChoice::Codex, path.clone(), |k| (k == "OPENAI_API_KEY").then(|| "k".into())).is_empty());
        // A file that is not executable is not the CLI.
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o644)).unwrap();
        let text = missing(AgentChoice::Codex, path, |_| Some("k".into())).join("\n");
        assert!(text.contains("`codex` is not on PATH") && !text.contains("OPENAI_API_KEY"), "{text}");
    }
}
