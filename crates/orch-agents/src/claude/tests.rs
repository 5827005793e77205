//! The Claude Code parser on lines as `claude -p --output-format stream-json
//! --verbose` 2.1 writes them (shortened), and the command line it builds.

use std::path::Path;

use orch_core::config::{AdapterKind, AgentConfig, CliAgent, VerdictSource};

use crate::{Outcome, RunPaths, StreamParser, launch, parser};

const INIT: &str = r#"{"type":"system","subtype":"init","cwd":"/w","model":"claude-sonnet-4-5","claude_code_version":"2.1.332","tools":["Bash"]}"#;
const TOOL: &str = r#"{"type":"assistant","message":{"id":"msg_1","role":"assistant","content":[{"type":"tool_use","id":"t1","name":"Write","input":{"file_path":"hello.txt","content":"hi"}}],"usage":{"input_tokens":100,"output_tokens":1}}}"#;
const TOOL_RESULT: &str = r#"{"type":"user","message":{"role":"user","content":[{"tool_use_id":"t1","type":"tool_result","content":"File created"}]},"tool_use_result":{"type":"create","filePath":"hello.txt"}}"#;
const RESULT: &str = r#"{"type":"result","subtype":"success","is_error":false,"result":"all done","num_turns":2,"total_cost_usd":0.0012,"usage":{"input_tokens":200,"cache_creation_input_tokens":5,"cache_read_input_tokens":7,"output_tokens":40}}"#;

fn claude() -> StreamParser {
    parser(AdapterKind::ClaudeCode).unwrap()
}

#[test]
fn a_successful_run_gives_progress_lines_usage_and_cost() {
    let mut p = claude();
    let lines: Vec<String> = [INIT, TOOL, TOOL_RESULT, RESULT].iter().flat_map(|l| p.feed(l).unwrap().lines).collect();
    assert_eq!(lines[0], "claude-code 2.1.332 started, model claude-sonnet-4-5");
    assert_eq!(lines[1], "tool Write: hello.txt");
    assert_eq!(lines[2], "changed hello.txt");
    assert!(lines[3].starts_with("result: success after 2 turns, 200 input + 40 output tokens, $0.0012"), "{lines:?}");
    let u = p.usage();
    assert_eq!(
        (u.turns, u.input_tokens, u.output_tokens, u.cache_read_tokens, u.cache_write_tokens),
        (2, 200, 40, 7, 5)
    );
    assert_eq!(u.cost_usd, Some(0.0012));
    assert_eq!(p.outcome(), Outcome::Success { summary: "all done".into() });
}

#[test]
fn usage_is_estimated_from_assistant_messages_before_the_result() {
    let mut p = claude();
    p.feed(TOOL).unwrap();
    p.feed(TOOL).unwrap(); // the same message repeated per content block counts once
    assert_eq!((p.usage().turns, p.usage().input_tokens), (1, 100));
    assert_eq!(p.outcome(), Outcome::Unfinished);
}

#[test]
fn max_turns_and_api_errors_are_failures_with_their_reason() {
    let mut p = claude();
    p.feed(r#"{"type":"result","subtype":"error_max_turns","is_error":true,"num_turns":2,"errors":["Reached maximum number of turns (1)"]}"#).unwrap();
    assert_eq!(
        p.outcome(),
        Outcome::Failed { reason: "claude-code error_max_turns: max turns reached after 2 turns".into() }
    );
    let mut p = claude();
    p.feed(r#"{"type":"result","subtype":"success","is_error":true,"api_error_status":500,"terminal_reason":"api_error","result":"API Error: 500 boom.","num_turns":1}"#).unwrap();
    assert_eq!(
        p.outcome(),
        Outcome::Failed { reason: "claude-code api_error: API status 500: API Error: 500 boom.".into() }
    );
}

#[test]
fn api_retries_are_reported_but_are_not_progress() {
    let mut p = claude();
    let fed = p.feed(r#"{"type":"system","subtype":"api_retry","attempt":3,"error_status":500}"#).unwrap();
    assert!(!fed.progress);
    assert_eq!(fed.lines, vec!["API call failed (status 500), retry 3"]);
}

#[test]
fn hostile_lines_are_refused_or_bounded_never_a_panic() {
    let mut p = claude();
    assert!(p.feed("not json").is_err());
    assert!(p.feed(r#"{"no":"type"}"#).is_err());
    assert!(p.feed("[1,2]").is_err());
    // Wrong types everywhere: still no panic, and no usage invented.
    for l in [
        r#"{"type":"assistant","message":"x"}"#,
        r#"{"type":"assistant","message":{"content":[{"type":"tool_use","name":7,"input":"x"}],"usage":[]}}"#,
        r#"{"type":"user","tool_use_result":{"filePath":3}}"#,
        r#"{"type":"result","usage":"lots","num_turns":-1,"total_cost_usd":-5}"#,
    ] {
        p.feed(l).unwrap();
    }
    assert_eq!(p.usage().cost_usd, None);
    let long = format!(
        r#"{{"type":"assistant","message":{{"content":[{{"type":"text","text":"{}\nsecond"}}]}}}}"#,
        "x".repeat(10_000)
    );
    let fed = claude().feed(&long).unwrap();
    assert!(fed.lines[0].chars().count() < 220, "{}", fed.lines[0].len());
}

fn agent(cli: CliAgent) -> AgentConfig {
    AgentConfig {
        adapter: AdapterKind::ClaudeCode,
        command: Vec::new(),
        timeout_s: 60.0,
        verdict: VerdictSource::File,
        cli,
    }
}

fn run<'a>(as_root: bool) -> RunPaths<'a> {
    RunPaths {
        prompt: "do it",
        prompt_file: Path::new("/d/prompts/job-1.md"),
        verdict_file: Path::new("/d/verdicts/job-1.json"),
        worktree: Path::new("/d/work/SHOP-1"),
        scratch: Path::new("/d/agents/job-1"),
        as_root,
    }
}

#[test]
fn the_command_line_carries_the_configured_flags() {
    let l = launch(&agent(CliAgent::default()), &run(false)).unwrap();
    assert_eq!(
        l.argv,
        [
            "claude",
            "-p",
            "do it",
            "--output-format",
            "stream-json",
            "--verbose",
            "--permission-mode",
            "acceptEdits",
            "--add-dir",
            "/d/verdicts",
            "--add-dir",
            "/d/prompts"
        ]
    );
    assert!(l.env.contains(&("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC".into(), "1".into())));
    let cli = CliAgent {
        model: Some("claude-sonnet-4-5".into()),
        max_turns: Some(5),
        permission_mode: Some("bypassPermissions".into()),
        allowed_tools: vec!["Bash(git *)".into(), "Edit".into()],
        binary: Some("/opt/claude".into()),
        env: [("ANTHROPIC_BASE_URL".to_owned(), "http://x".to_owned())].into(),
        ..CliAgent::default()
    };
    let l = launch(&agent(cli.clone()), &run(true)).unwrap();
    let argv = l.argv.join(" ");
    assert!(argv.starts_with("/opt/claude -p do it"), "{argv}");
    assert!(argv.contains("--model claude-sonnet-4-5 --max-turns 5 --dangerously-skip-permissions"), "{argv}");
    assert!(argv.contains("--allowedTools Bash(git *),Edit"), "{argv}");
    assert!(l.env.contains(&("IS_SANDBOX".into(), "1".into())));
    assert!(l.env.contains(&("ANTHROPIC_BASE_URL".into(), "http://x".into())));
    assert!(!launch(&agent(cli), &run(false)).unwrap().env.iter().any(|(k, _)| k == "IS_SANDBOX"));
}

#[test]
fn a_prompt_too_long_for_argv_goes_by_file() {
    let long = "x".repeat(crate::MAX_PROMPT_ARG_BYTES + 1);
    let r = RunPaths { prompt: &long, ..run(false) };
    let l = launch(&agent(CliAgent::default()), &r).unwrap();
    assert!(l.argv[2].contains("/d/prompts/job-1.md") && l.argv[2].len() < 200);
}
