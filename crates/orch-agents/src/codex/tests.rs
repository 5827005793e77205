//! The Codex parser on lines as `codex exec --json` 0.171 writes them, and the
//! command line and `CODEX_HOME` config it builds.

use std::path::Path;

use orch_core::config::{AdapterKind, AgentConfig, CliAgent, ProviderConfig, VerdictSource};

use crate::{Outcome, RunPaths, StreamParser, launch, parser};

fn codex() -> StreamParser {
    parser(AdapterKind::Codex).unwrap()
}

#[test]
fn a_successful_run_gives_progress_lines_and_usage() {
    let mut p = codex();
    let lines: Vec<String> = [
        r#"{"type":"thread.started","thread_id":"t"}"#,
        r#"{"type":"item.completed","item":{"id":"item_0","type":"error","message":"Model metadata for `m` not found."}}"#,
        r#"{"type":"turn.started"}"#,
        r#"{"type":"item.started","item":{"id":"item_1","type":"command_execution","command":"bash -lc 'echo hi > a'","exit_code":null}}"#,
        r#"{"type":"item.completed","item":{"id":"item_1","type":"command_execution","command":"bash -lc 'echo hi > a'","exit_code":0}}"#,
        r#"{"type":"item.completed","item":{"id":"item_2","type":"file_change","changes":[{"path":"src/a.rs","kind":"update"}]}}"#,
        r#"{"type":"item.completed","item":{"id":"item_3","type":"agent_message","text":"all done"}}"#,
        r#"{"type":"turn.completed","usage":{"input_tokens":200,"cached_input_tokens":50,"output_tokens":40}}"#,
    ]
    .iter()
    .flat_map(|l| p.feed(l).unwrap().lines)
    .collect();
    assert_eq!(
        lines,
        [
            "codex thread started",
            "codex warning: Model metadata for `m` not found.",
            "run: bash -lc 'echo hi > a'",
            "ran (exit 0): bash -lc 'echo hi > a'",
            "update src/a.rs",
            "says: all done",
            "turn completed: 200 input + 40 output tokens",
        ]
    );
    let u = p.usage();
    assert_eq!((u.turns, u.input_tokens, u.cache_read_tokens, u.output_tokens, u.cost_usd), (1, 150, 50, 40, None));
    assert_eq!(p.outcome(), Outcome::Success { summary: "all done".into() });
}

#[test]
fn a_failed_turn_fails_and_retry_notices_are_not_progress() {
    let mut p = codex();
    let fed = p.feed(r#"{"type":"error","message":"Reconnecting... 2/5"}"#).unwrap();
    assert!(!fed.progress);
    p.feed(r#"{"type":"turn.failed","error":{"message":"unexpected status 500"}}"#).unwrap();
    assert_eq!(p.outcome(), Outcome::Failed { reason: "codex turn failed: unexpected status 500".into() });
    assert_eq!(codex().outcome(), Outcome::Unfinished);
}

#[test]
fn hostile_lines_never_panic() {
    let mut p = codex();
    for l in [
        r#"{"type":"item.completed","item":7}"#,
        r#"{"type":"item.completed","item":{"type":"file_change","changes":"x"}}"#,
        r#"{"type":"turn.completed","usage":{"input_tokens":"many","cached_input_tokens":99}}"#,
        r#"{"type":"turn.failed","error":null}"#,
    ] {
        p.feed(l).unwrap();
    }
    assert_eq!(p.usage().input_tokens, 0);
    assert!(p.feed("{").is_err());
}

#[test]
fn the_command_line_and_codex_home_carry_the_configured_provider() {
    let cli = CliAgent {
        model: Some("gpt-5-codex".into()),
        provider: Some(ProviderConfig {
            name: "openai".into(),
            base_url: "https://api.openai.com/v1".into(),
            env_key: "OPENAI_API_KEY".into(),
        }),
        ..CliAgent::default()
    };
    let agent = AgentConfig {
        adapter: AdapterKind::Codex,
        command: Vec::new(),
        timeout_s: 60.0,
        verdict: VerdictSource::File,
        cli,
    };
    let run = RunPaths {
        prompt: "do it",
        prompt_file: Path::new("/d/prompts/job-1.md"),
        verdict_file: Path::new("/d/verdicts/job-1.json"),
        worktree: Path::new("/d/work/SHOP-1"),
        scratch: Path::new("/d/agents/job-1"),
        as_root: false,
    };
    let l = launch(&agent, &run).unwrap();
    assert_eq!(
        l.argv.join(" "),
        "codex exec --json --skip-git-repo-check --sandbox workspace-write --cd /d/work/SHOP-1 --model gpt-5-codex \
         --add-dir /d/verdicts --add-dir /d/prompts do it"
    );
    assert_eq!(l.env, [("CODEX_HOME".to_owned(), "/d/agents/job-1/codex-home".to_owned())]);
    let (path, text) = &l.files[0];
    assert_eq!(path, Path::new("/d/agents/job-1/codex-home/config.toml"));
    assert!(text.contains("model_provider = \"openai\""), "{text}");
    assert!(
        text.contains("[model_providers.\"openai\"]\nname = \"openai\"\nbase_url = \"https://api.openai.com/v1\""),
        "{text}"
    );
    assert!(
        text.contains("wire_api = \"responses\"") && text.contains("check_for_update_on_startup = false"),
        "{text}"
    );
}
