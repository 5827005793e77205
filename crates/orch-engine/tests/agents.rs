//! The coding-agent adapters with the real CLIs: Claude Code and Codex run as
//! the stage agents of a quick-track item, against the scripted model stub of
//! orch-test-support on 127.0.0.1 (offline). The stub's script makes the agent
//! call its tools for real (edit files in the worktree, write the verdict file)
//! and answer; orch must commit the work, read tokens and cost from the event
//! stream, keep a readable log, and fail a run that breaks (HTTP 500, max
//! turns, an unreachable or stalled server) with a clear reason and no process
//! left behind. Every scenario runs on SQLite and on PostgreSQL.

mod common;

use std::path::Path;

use common::*;
use orch_core::{ItemKind, ItemStatus, JobStatus};
use orch_test_support::model_stub::{ModelStub, Script, Turn};
use orch_test_support::{agent_cli, git_out};

/// One stage's work as the stub scripts it for Claude Code: append a line
/// naming the stage to `claude.txt` (Bash), write the verdict (Bash), answer.
fn claude_stage_script() -> Script {
    Script::new(vec![
        Turn::claude_bash("echo \"$ORCH_STAGE by claude\" >> claude.txt"),
        Turn::claude_bash(r#"printf '{"verdict":"pass","summary":"stage done"}' > "$ORCH_VERDICT_FILE""#),
        Turn::Text("Done: the checkout handles empty carts.".into()),
    ])
}

/// Every role's agent is Claude Code against the API at `url`, with `extra`
/// keys added to each `[agents.<role>]` table, `env` added to its `env` inline
/// table (`, KEY = "v"`), and `tail` appended to the config.
fn claude_config(url: &str, dir: &Path, extra: &str, env: &str, tail: &str) -> String {
    let bin = agent_cli("claude");
    let mut agents = String::new();
    for role in ["analyst", "architect", "developer", "tester", "deployer"] {
        agents.push_str(&format!(
            r#"
[agents.{role}]
adapter = "claude-code"
binary = "{bin}"
model = "claude-sonnet-4-5"
permission_mode = "bypassPermissions"
timeout_s = 30
env = {{ ANTHROPIC_BASE_URL = "{url}", ANTHROPIC_API_KEY = "sk-test-dummy", CLAUDE_CONFIG_DIR = "{cfg}", HOME = "{home}"{env} }}
{extra}
"#,
            bin = bin.display(),
            cfg = dir.join("claude-config").display(),
            // Claude Code's Bash tool sources the user's shell start-up files
            // (~/.bashrc); a test runs with an empty home of its own.
            home = dir.display(),
        ));
    }
    format!(
        "[store]\nurl = \"sqlite://orch.db\"\n[node]\nid = \"node-a\"\nmax_concurrent_jobs = 4\ndata_dir = \"data\"\n\
         [reaper]\n{FAST_REAPER}\n[[repos]]\nname = \"shop\"\nkey = \"SHOP\"\npath = \".\"\n{agents}\n{tail}"
    )
}

/// A harness whose config is `text(dir)`, committing every file agents write.
async fn harness(backend: Backend, text: impl FnOnce(&Path) -> String) -> (Harness, tempfile::TempDir) {
    let side = tempfile::tempdir().unwrap();
    let h = Harness::from_text_with_ignore(backend, text(side.path()), None).await;
    (h, side)
}

/// No process of the item's runs is alive any more.
fn assert_no_process_left(jobs: &[orch_store::Job]) {
    for j in jobs {
        if let Some(pid) = j.pid.filter(|p| *p > 0) {
            assert!(!alive(pid), "job {} left its agent (pid {pid}) running", j.id);
        }
    }
}

async fn claude_code_drives_a_quick_track_item_to_done(backend: Backend) {
    let stub = ModelStub::start(claude_stage_script());
    let (h, _side) = harness(backend, |d| claude_config(&stub.base_url(), d, "", "", "")).await;
    let node = h.node("node-a");
    let run = h.start(&node);
    let key = h.add_item(ItemKind::Bug).await;
    let item = h.wait_status(&key, ItemStatus::Done).await;
    assert_eq!(item.stage.as_str(), "deploy");

    let jobs = h.jobs(&key).await;
    assert_eq!(jobs.len(), 4, "{jobs:#?}");
    for j in &jobs {
        assert_eq!((j.status, j.exit_code), (JobStatus::Done, Some(0)), "{j:#?}");
        let u = j.usage.unwrap_or_else(|| panic!("job {} has no usage", j.id));
        // Three answers of the stub per run, 100 input and 20 output tokens each.
        assert_eq!((u.turns, u.input_tokens, u.output_tokens), (3, 300, 60), "{u:?}");
        // Claude Code prices its own calls: sonnet 4.5 at $3 / $15 per million.
        let cost = u.cost_usd.expect("claude-code reports a cost");
        assert!((cost - 0.0018).abs() < 1e-9, "cost {cost}");
    }
    // The work is on main: one line per stage, each committed by orch.
    let remote = h.path().join("remote.git");
    let text = git_out(&remote, &["show", "main:claude.txt"]);
    assert_eq!(text, "development by claude\ntesting by claude\ndeploy-staging by claude\ndeploy by claude");
    let log = git_out(&remote, &["log", "--format=%s", "main"]);
    assert!(log.contains(&format!("developer({key}): auto-commit from developer job {}", jobs[0].id)), "{log}");
    assert!(log.contains(&format!("deployer({key}): auto-commit from deployer job {}", jobs[3].id)), "{log}");

    // A readable log, the raw stream beside it.
    let log_path = jobs[0].log_path.clone().unwrap();
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(log.contains("[agent] claude-code 2.1"), "{log}");
    assert!(log.contains("[agent] tool Bash: echo \"$ORCH_STAGE by claude\" >> claude.txt"), "{log}");
    assert!(log.contains("[agent] result: success after 3 turns, 300 input + 60 output tokens, $0.0018"), "{log}");
    assert!(!log.contains("\"type\":\"assistant\""), "raw JSON leaked into the readable log: {log}");
    let raw = std::fs::read_to_string(format!("{log_path}.jsonl")).unwrap();
    assert!(raw.lines().any(|l| l.contains("\"type\":\"result\"")), "{raw}");
    // The prompt reached the model.
    let first = &stub.model_requests()[0];
    assert!(
        first.body.contains("Fix the checkout"),
        "the prompt was not sent: {}",
        &first.body[..500.min(first.body.len())]
    );

    assert_no_process_left(&jobs);
    node.shutdown_token().cancel();
    run.await.unwrap();
    h.assert_audit_clean().await;
}

/// The processes still alive whose environment names a worktree under `root`:
/// anything an agent of this harness started (tests run side by side, each in
/// its own folder).
fn processes_under(root: &Path) -> Vec<i32> {
    let needle = format!("ORCH_WORKTREE={}", root.display());
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| alive(*pid))
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|b| *b == 0).any(|kv| kv.starts_with(needle.as_bytes())))
        })
        .collect()
}

/// The development stage with a single attempt, so one failed run blocks the item.
const ONE_ATTEMPT: &str = "[stages.development]\nrole = \"developer\"\nmax_attempts = 1\n";

/// Runs one item on the agent `config` describes (with [`ONE_ATTEMPT`]) and
/// returns the failed job's reason once the item is blocked. Checks that no
/// process of the run is left.
async fn run_fails(backend: Backend, config: impl FnOnce(&Path) -> String) -> String {
    let (h, _side) = harness(backend, config).await;
    let node = h.node("node-a");
    let run = h.start(&node);
    let key = h.add_item(ItemKind::Bug).await;
    h.wait_status(&key, ItemStatus::Blocked).await;
    let jobs = h.jobs(&key).await;
    assert_eq!(jobs.len(), 1, "{jobs:#?}");
    assert_eq!(jobs[0].status, JobStatus::Failed);
    assert_no_process_left(&jobs);
    assert_eq!(processes_under(h.path()), Vec::<i32>::new(), "processes of the run outlived it");
    node.shutdown_token().cancel();
    run.await.unwrap();
    h.assert_audit_clean().await;
    jobs[0].reason.clone().unwrap_or_default()
}

/// [`run_fails`] with Claude Code configured by `extra` and `env`.
async fn claude_run_fails(backend: Backend, url: &str, extra: &str, env: &str) -> String {
    run_fails(backend, |d| claude_config(url, d, extra, env, ONE_ATTEMPT)).await
}

/// Claude Code retries a failed API call ten times over minutes by default;
/// with none, a failure shows at once.
const NO_RETRIES: &str = ", CLAUDE_CODE_MAX_RETRIES = \"0\"";

async fn claude_code_api_error_fails_the_job_with_its_status(backend: Backend) {
    let stub = ModelStub::start(Script::new(vec![Turn::Status(500)]));
    let reason = claude_run_fails(backend, &stub.base_url(), "", NO_RETRIES).await;
    assert!(reason.starts_with("claude-code api_error: API status 500: API Error: 500"), "{reason}");
    assert!(reason.contains("500 scripted failure"), "{reason}");
}

async fn claude_code_max_turns_fails_the_job(backend: Backend) {
    let stub = ModelStub::start(claude_stage_script());
    let reason = claude_run_fails(backend, &stub.base_url(), "max_turns = 1", "").await;
    assert_eq!(reason, "claude-code error_max_turns: max turns reached after 2 turns");
}

async fn claude_code_unreachable_api_fails_the_job(backend: Backend) {
    let stub = ModelStub::start(claude_stage_script());
    // A port nothing listens on: bound, then closed.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let reason = claude_run_fails(backend, &format!("http://{closed}"), "", NO_RETRIES).await;
    assert!(reason.starts_with("claude-code api_error: "), "{reason}");
    assert!(reason.to_lowercase().contains("connect"), "{reason}");
    assert!(stub.model_requests().is_empty());
}

async fn claude_code_stalled_stream_is_stopped(backend: Backend) {
    let stub = ModelStub::start(Script::new(vec![Turn::Stall]));
    let reason = claude_run_fails(backend, &stub.base_url(), "stall_s = 2", "").await;
    assert_eq!(reason, "stalled: the agent's event stream showed no progress for 2s; the run was stopped");
    assert_eq!(stub.model_requests().len(), 1, "the stalled call was made once");
}

async fn a_budget_overrun_stops_the_run_and_blocks_the_item(backend: Backend) {
    let stub = ModelStub::start(claude_stage_script());
    // Each answer of the stub is 100 input and 20 output tokens: the second
    // pushes the item past 200.
    let (h, _side) = harness(backend, |d| {
        claude_config(&stub.base_url(), d, "", "", "").replacen(
            "path = \".\"\n",
            "path = \".\"\nbudget = { max_tokens = 200, max_cost_usd = 5 }\n",
            1,
        )
    })
    .await;
    let node = h.node("node-a");
    let run = h.start(&node);
    let key = h.add_item(ItemKind::Bug).await;
    let item = h.wait_status(&key, ItemStatus::Blocked).await;
    assert_eq!(item.stage.as_str(), "development");
    let jobs = h.jobs(&key).await;
    assert_eq!(jobs.len(), 1, "blocked, not retried: {jobs:#?}");
    let reason = jobs[0].reason.clone().unwrap_or_default();
    assert!(reason.starts_with(&format!("budget: item {key}: ")), "{reason}");
    assert!(reason.ends_with("tokens are over max_tokens 200 (repo shop)"), "{reason}");
    let used = jobs[0].usage.expect("the stopped run's usage is kept");
    assert!(used.total_tokens() > 200, "{used:?}");
    let blocked = h.events(&key).await.into_iter().find(|e| e.kind == "item.blocked").expect("an item.blocked event");
    assert!(blocked.reason.as_deref().is_some_and(|r| r.starts_with("budget: ")), "{blocked:?}");
    let log = std::fs::read_to_string(jobs[0].log_path.as_ref().unwrap()).unwrap();
    assert!(log.contains("[orch] stopping the run: item"), "{log}");
    assert_no_process_left(&jobs);
    assert_eq!(processes_under(h.path()), Vec::<i32>::new(), "processes of the run outlived it");
    node.shutdown_token().cancel();
    run.await.unwrap();
    h.assert_audit_clean().await;
}

/// One stage's work as the stub scripts it for Codex: append a line naming the
/// stage to `codex.txt`, write the verdict, answer (shell `function_call`s).
fn codex_stage_script() -> Script {
    Script::new(vec![
        Turn::codex_exec("echo \"$ORCH_STAGE by codex\" >> codex.txt"),
        Turn::codex_exec(r#"printf '{"verdict":"pass","summary":"stage done"}' > "$ORCH_VERDICT_FILE""#),
        Turn::Text("Done: the checkout handles empty carts.".into()),
    ])
}

/// Every role's agent is Codex against the Responses API at `url` (a provider
/// entry orch writes into the run's CODEX_HOME), with `extra` keys added to
/// each `[agents.<role>]` table and `tail` appended to the config.
fn codex_config(url: &str, home: &Path, extra: &str, tail: &str) -> String {
    let bin = agent_cli("codex");
    let mut agents = String::new();
    for role in ["analyst", "architect", "developer", "tester", "deployer"] {
        agents.push_str(&format!(
            r#"
[agents.{role}]
adapter = "codex"
binary = "{bin}"
model = "gpt-5-codex"
timeout_s = 30
provider = {{ name = "stub", base_url = "{url}/v1", env_key = "STUB_API_KEY" }}
env = {{ STUB_API_KEY = "sk-test-dummy", HOME = "{home}" }}
{extra}
"#,
            bin = bin.display(),
            home = home.display(),
        ));
    }
    format!(
        "[store]\nurl = \"sqlite://orch.db\"\n[node]\nid = \"node-a\"\nmax_concurrent_jobs = 4\ndata_dir = \"data\"\n\
         [reaper]\n{FAST_REAPER}\n[[repos]]\nname = \"shop\"\nkey = \"SHOP\"\npath = \".\"\n{agents}\n{tail}"
    )
}

async fn codex_drives_a_quick_track_item_to_done(backend: Backend) {
    let stub = ModelStub::start(codex_stage_script());
    let (h, _side) = harness(backend, |d| codex_config(&stub.base_url(), d, "", "")).await;
    let node = h.node("node-a");
    let run = h.start(&node);
    let key = h.add_item(ItemKind::Bug).await;
    h.wait_status(&key, ItemStatus::Done).await;

    let jobs = h.jobs(&key).await;
    assert_eq!(jobs.len(), 4, "{jobs:#?}");
    for j in &jobs {
        assert_eq!((j.status, j.exit_code), (JobStatus::Done, Some(0)), "{j:#?}");
        let u = j.usage.unwrap_or_else(|| panic!("job {} has no usage", j.id));
        // One turn of three model calls, 100 input and 20 output tokens each;
        // Codex reports no cost.
        assert_eq!((u.turns, u.input_tokens, u.output_tokens, u.cost_usd), (1, 300, 60, None), "{u:?}");
    }
    let remote = h.path().join("remote.git");
    let text = git_out(&remote, &["show", "main:codex.txt"]);
    assert_eq!(text, "development by codex\ntesting by codex\ndeploy-staging by codex\ndeploy by codex");
    let log = git_out(&remote, &["log", "--format=%s", "main"]);
    assert!(log.contains(&format!("developer({key}): auto-commit from developer job {}", jobs[0].id)), "{log}");

    let log_path = jobs[0].log_path.clone().unwrap();
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(log.contains("[agent] codex thread started"), "{log}");
    assert!(log.contains("[agent] ran (exit 0): "), "{log}");
    assert!(log.contains("[agent] says: Done: the checkout handles empty carts."), "{log}");
    assert!(log.contains("[agent] turn completed: 300 input + 60 output tokens"), "{log}");
    let raw = std::fs::read_to_string(format!("{log_path}.jsonl")).unwrap();
    assert!(raw.lines().any(|l| l.contains("\"type\":\"turn.completed\"")), "{raw}");
    // The provider orch wrote for the run is the one the requests reached.
    let config = std::fs::read_to_string(h.path().join("data/agents/job-1/codex-home/config.toml")).unwrap();
    assert!(config.contains("wire_api = \"responses\"") && config.contains(&stub.base_url()), "{config}");
    assert!(stub.model_requests().iter().all(|r| r.path == "/v1/responses"));

    assert_no_process_left(&jobs);
    node.shutdown_token().cancel();
    run.await.unwrap();
    h.assert_audit_clean().await;
}

/// As [`claude_run_fails`], for Codex.
async fn codex_run_fails(backend: Backend, url: &str, extra: &str) -> String {
    run_fails(backend, |d| codex_config(url, d, extra, ONE_ATTEMPT)).await
}

async fn codex_api_error_fails_the_job(backend: Backend) {
    let stub = ModelStub::start(Script::new(vec![Turn::Status(400)]));
    let reason = codex_run_fails(backend, &stub.base_url(), "").await;
    assert!(reason.starts_with("codex turn failed: "), "{reason}");
    assert!(reason.contains("scripted failure (HTTP 400)"), "{reason}");
}

async fn codex_unreachable_api_is_stopped_as_stalled(backend: Backend) {
    // Codex retries an unreachable server on and on; the stall watch ends it.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let reason = codex_run_fails(backend, &format!("http://{closed}"), "stall_s = 3").await;
    assert_eq!(reason, "stalled: the agent's event stream showed no progress for 3s; the run was stopped");
}

async fn codex_stalled_stream_is_stopped(backend: Backend) {
    let stub = ModelStub::start(Script::new(vec![Turn::Stall]));
    let reason = codex_run_fails(backend, &stub.base_url(), "stall_s = 2").await;
    assert_eq!(reason, "stalled: the agent's event stream showed no progress for 2s; the run was stopped");
}

backend_tests!(
    claude_code_drives_a_quick_track_item_to_done,
    claude_code_api_error_fails_the_job_with_its_status,
    claude_code_max_turns_fails_the_job,
    claude_code_unreachable_api_fails_the_job,
    claude_code_stalled_stream_is_stopped,
    a_budget_overrun_stops_the_run_and_blocks_the_item,
    codex_drives_a_quick_track_item_to_done,
    codex_api_error_fails_the_job,
    codex_unreachable_api_is_stopped_as_stalled,
    codex_stalled_stream_is_stopped,
);
