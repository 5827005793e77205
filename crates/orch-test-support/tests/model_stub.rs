//! The model stub drives the real CLIs: `claude -p` and `codex exec` run against
//! it offline, call the scripted tools (which change files for real) and end with
//! the scripted answer. If a CLI release changes what it sends or expects, these
//! fail first, before the adapter tests that build on them.

use std::process::Command;

use orch_test_support::agent_cli;
use orch_test_support::model_stub::{ModelStub, Script, Turn};

#[test]
fn claude_code_runs_the_scripted_turns_against_the_stub() {
    let stub = ModelStub::start(Script::new(vec![
        Turn::claude_write("hello.txt", "hi from the stub\n"),
        Turn::Text("all done".into()),
    ]));
    let dir = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let out = Command::new(agent_cli("claude"))
        .args(["-p", "write hello.txt", "--output-format", "stream-json", "--verbose"])
        .args(["--permission-mode", "acceptEdits", "--model", "claude-sonnet-4-5"])
        .current_dir(dir.path())
        .env("HOME", home.path())
        .env("ANTHROPIC_BASE_URL", stub.base_url())
        .env("ANTHROPIC_API_KEY", "sk-test-dummy")
        .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
        .env("DISABLE_TELEMETRY", "1")
        .env("DISABLE_AUTOUPDATER", "1")
        .env("DISABLE_ERROR_REPORTING", "1")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "claude failed: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let result = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["type"] == "result")
        .unwrap_or_else(|| panic!("no result event in {stdout}"));
    assert_eq!(result["result"], "all done");
    assert_eq!(result["num_turns"], 2);
    assert_eq!(result["usage"]["input_tokens"], 200);
    assert_eq!(std::fs::read_to_string(dir.path().join("hello.txt")).unwrap(), "hi from the stub\n");
    let calls = stub.model_requests();
    assert_eq!(calls.len(), 2, "{:?}", stub.requests());
    assert!(calls.iter().all(|r| r.path == "/v1/messages?beta=true"));
}

#[test]
fn codex_runs_the_scripted_turns_against_the_stub() {
    let stub = ModelStub::start(Script::new(vec![
        Turn::codex_exec("printf 'hi from the stub\\n' > hello.txt"),
        Turn::Text("all done".into()),
    ]));
    let dir = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    std::fs::write(
        home.path().join("config.toml"),
        format!(
            "model = \"gpt-5-codex\"\nmodel_provider = \"stub\"\ncheck_for_update_on_startup = false\n\
             [analytics]\nenabled = false\n\
             [model_providers.stub]\nname = \"stub\"\nbase_url = \"{}/v1\"\nenv_key = \"STUB_API_KEY\"\n\
             wire_api = \"responses\"\nrequest_max_retries = 0\nstream_max_retries = 0\n",
            stub.base_url()
        ),
    )
    .unwrap();
    let out = Command::new(agent_cli("codex"))
        .args(["exec", "--json", "--skip-git-repo-check", "--sandbox", "danger-full-access", "write hello.txt"])
        .current_dir(dir.path())
        .env("CODEX_HOME", home.path())
        .env("STUB_API_KEY", "sk-test-dummy")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "codex failed: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let events: Vec<serde_json::Value> = stdout.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let message = events
        .iter()
        .find(|v| v["type"] == "item.completed" && v["item"]["type"] == "agent_message")
        .unwrap_or_else(|| panic!("no agent message in {stdout}"));
    assert_eq!(message["item"]["text"], "all done");
    let usage = events.iter().find(|v| v["type"] == "turn.completed").unwrap_or_else(|| panic!("{stdout}"));
    assert_eq!(usage["usage"]["input_tokens"], 200, "{stdout}");
    assert_eq!(std::fs::read_to_string(dir.path().join("hello.txt")).unwrap(), "hi from the stub\n");
    assert_eq!(stub.model_requests().len(), 2, "{:?}", stub.requests());
}
