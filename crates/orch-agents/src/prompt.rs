//! Role prompt templates: the text an agent reads from `ORCH_PROMPT_FILE` (and,
//! for Claude Code and Codex, gets as its prompt). One built-in template per role
//! (analyst, architect, developer, tester, deployer) inside a common frame: the
//! item, the stage and attempt, the artifacts of earlier stages, the previous
//! attempt's failure, and the verdict contract with the exact path to write.
//!
//! A repo overrides them with a folder of its own (`prompts = "…"` on the repo):
//! `common.md` replaces the frame, `<role>.md` a role's brief. Placeholders are
//! `{{name}}`; rendering is one pass, so text that came from an item or an agent
//! (a body containing `{{verdict_file}}`) is never expanded.

/// The frame every role's prompt is rendered in.
pub const COMMON: &str = include_str!("prompts/common.md");

/// The built-in brief of `role`, or a generic one for a role orch does not know.
pub fn role_brief(role: &str) -> &'static str {
    match role {
        "analyst" => include_str!("prompts/analyst.md"),
        "architect" => include_str!("prompts/architect.md"),
        "developer" => include_str!("prompts/developer.md"),
        "tester" => include_str!("prompts/tester.md"),
        "deployer" => include_str!("prompts/deployer.md"),
        _ => "Your job: do this stage's part of the item, as its name says.\n",
    }
}

/// The placeholders a template may use, in the order the docs list them.
pub const PLACEHOLDERS: &[&str] = &[
    "key",
    "kind",
    "title",
    "body",
    "stage",
    "role",
    "attempt",
    "worktree",
    "role_brief",
    "artifacts",
    "last_failure",
    "verdict_file",
];

/// What a prompt is rendered from.
#[derive(Clone, Debug, Default)]
pub struct PromptInput {
    pub key: String,
    pub kind: String,
    pub title: String,
    pub body: String,
    pub stage: String,
    pub role: String,
    pub attempt: u32,
    pub worktree: String,
    /// Earlier stages' artifacts, already shortened: `(path, text or None)`.
    pub artifacts: Vec<(String, Option<String>)>,
    /// Why the previous attempt failed (the red gate and its output's tail, or
    /// the verdict's summary), if one did.
    pub last_failure: Option<String>,
    pub verdict_file: String,
}

/// Renders `frame` with `brief` as `{{role_brief}}` (itself rendered) for `input`.
pub fn render(frame: &str, brief: &str, input: &PromptInput) -> String {
    let brief = substitute(brief, input, "");
    substitute(frame, input, brief.trim_end())
}

fn substitute(template: &str, input: &PromptInput, brief: &str) -> String {
    let mut out = String::with_capacity(template.len() + input.body.len() + 256);
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        match after.find("}}").map(|end| (&after[..end], &after[end + 2..])) {
            Some((name, tail)) if PLACEHOLDERS.contains(&name.trim()) => {
                out.push_str(&value(name.trim(), input, brief));
                rest = tail;
            }
            _ => {
                // Not a placeholder of ours: keep the braces as written.
                out.push_str("{{");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

fn value(name: &str, i: &PromptInput, brief: &str) -> String {
    match name {
        "key" => i.key.clone(),
        "kind" => i.kind.clone(),
        "title" => i.title.clone(),
        "body" if i.body.trim().is_empty() => "(no description)".into(),
        "body" => i.body.trim_end().to_owned(),
        "stage" => i.stage.clone(),
        "role" => i.role.clone(),
        "attempt" => i.attempt.to_string(),
        "worktree" => i.worktree.clone(),
        "role_brief" => brief.to_owned(),
        "artifacts" if i.artifacts.is_empty() => "None yet.".into(),
        "artifacts" => i
            .artifacts
            .iter()
            .map(|(path, text)| match text {
                Some(t) => format!("### {path}\n\n{}\n", t.trim_end()),
                None => format!("- {path}\n"),
            })
            .collect::<Vec<_>>()
            .join("\n")
            .trim_end()
            .to_owned(),
        "last_failure" => i.last_failure.clone().unwrap_or_else(|| "This is the first attempt.".into()),
        "verdict_file" => i.verdict_file.clone(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input() -> PromptInput {
        PromptInput {
            key: "SHOP-1".into(),
            kind: "bug".into(),
            title: "Fix the checkout".into(),
            body: "It breaks on empty carts. {{verdict_file}} {{nope}}".into(),
            stage: "development".into(),
            role: "developer".into(),
            attempt: 2,
            worktree: "/w".into(),
            artifacts: vec![("docs/work-items/SHOP-1/adr.md".into(), Some("Use a guard.".into()))],
            last_failure: Some("gate retest failed: 2 tests failed".into()),
            verdict_file: "/d/verdicts/job-3.json".into(),
        }
    }

    #[test]
    fn the_builtin_developer_prompt_carries_everything_an_agent_needs() {
        let text = render(COMMON, role_brief("developer"), &input());
        for part in [
            "# SHOP-1 — Fix the checkout",
            "**developer** for stage **development** (attempt 2)",
            "Your job: make the change.",
            "### docs/work-items/SHOP-1/adr.md\n\nUse a guard.",
            "gate retest failed: 2 tests failed",
            "`/d/verdicts/job-3.json`",
        ] {
            assert!(text.contains(part), "missing {part:?} in\n{text}");
        }
    }

    #[test]
    fn text_from_the_item_is_never_expanded() {
        let text = render(COMMON, role_brief("developer"), &input());
        assert!(text.contains("It breaks on empty carts. {{verdict_file}} {{nope}}"), "{text}");
    }

    #[test]
    fn an_override_uses_the_same_placeholders_and_keeps_unknown_braces() {
        let text = render("{{role_brief}} | {{ key }} | {{unknown}} | {{", "brief for {{stage}}", &input());
        assert_eq!(text, "brief for development | SHOP-1 | {{unknown}} | {{");
    }
}
