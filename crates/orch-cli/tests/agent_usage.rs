//! Usage as operators see it: `orch serve` runs the developer stage with the real
//! Claude Code against the scripted model stub, and the run's turns, tokens and
//! cost show in `orch item show` (text and `--json`) and in the API's item and
//! job documents, summed per item.

mod common;

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use common::deployment::{Deployment, FAST};
use common::wait_until;
use orch_test_support::agent_cli;
use orch_test_support::model_stub::{ModelStub, Script, Turn};
use serde_json::Value;

/// `GET path` on a fresh connection; the body as JSON.
fn get_json(port: u16, path: &str) -> Option<Value> {
    serde_json::from_str(&get_text(port, path)?).ok()
}

/// `GET path` on a fresh connection; the body as text.
fn get_text(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").as_bytes()).ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    assert!(!head.to_ascii_lowercase().contains("chunked"), "unexpected chunked answer: {head}");
    Some(body.to_owned())
}

#[test]
fn usage_of_a_claude_code_run_shows_in_item_show_and_the_api() {
    let stub = ModelStub::start(Script::new(vec![
        Turn::claude_write("fix.txt", "fixed\n"),
        Turn::claude_bash(r#"printf '{"verdict":"pass","summary":"fixed"}' > "$ORCH_VERDICT_FILE""#),
        Turn::Text("Fixed.".into()),
    ]));
    let d = Deployment::new("sqlite://orch.db", FAST, "");
    let claude_home = tempfile::tempdir().unwrap();
    let config = std::fs::read_to_string(d.path().join("orch.toml")).unwrap();
    let developer = format!(
        "[agents.developer]\nadapter = \"claude-code\"\nbinary = \"{}\"\nmodel = \"claude-sonnet-4-5\"\n\
         permission_mode = \"bypassPermissions\"\ntimeout_s = 30\n\
         env = {{ ANTHROPIC_BASE_URL = \"{}\", ANTHROPIC_API_KEY = \"sk-test-dummy\", CLAUDE_CONFIG_DIR = \"{}\", HOME = \"{}\" }}\n",
        agent_cli("claude").display(),
        stub.base_url(),
        claude_home.path().join("config").display(),
        // Claude Code's Bash tool sources ~/.bashrc: an empty home of the test's own.
        claude_home.path().display()
    );
    let replaced =
        config.replacen("[agents.developer]\ncommand = [\"./agents/developer.sh\"]\ntimeout_s = 30\n", &developer, 1);
    assert_ne!(replaced, config);
    std::fs::write(d.path().join("orch.toml"), replaced).unwrap();

    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let listen = format!("127.0.0.1:{port}");
    let _serve = d.serve("node-a", "data-a", &[("ORCH_SERVER_LISTEN", listen.as_str())], "serve.log");
    let key = d.add_item("Fix the checkout");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while d.status(&key) != "done" {
        assert!(
            std::time::Instant::now() < deadline,
            "the item did not reach done: {:#}\nserve.log:\n{}\njob log:\n{}\nrequests: {:?}",
            d.item(&key),
            d.log("serve.log"),
            d.log("data-a/logs/job-1.log"),
            stub.requests().iter().map(|r| r.path.clone()).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let shown = d.item(&key);
    let usage = &shown["usage"];
    assert_eq!(
        (&usage["turns"], &usage["input_tokens"], &usage["output_tokens"], &usage["total_tokens"]),
        (&Value::from(3), &Value::from(300), &Value::from(60), &Value::from(360)),
        "{shown:#}"
    );
    assert!((usage["cost_usd"].as_f64().unwrap() - 0.0018).abs() < 1e-9, "{usage}");
    let jobs = shown["jobs"].as_array().unwrap();
    assert_eq!(jobs[0]["usage"], *usage, "the developer's run is the item's only usage");
    assert!(jobs[1..].iter().all(|j| j["usage"].is_null()), "command agents report no usage: {jobs:#?}");

    let out = d.orch(&["item", "show", &key]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("usage:") && text.contains("3 turns, 300 in + 60 out tokens, $0.0018"), "{text}");
    assert!(text.contains("TOKENS") && text.contains("$0.0018"), "{text}");

    wait_until("the API to answer", || get_json(port, &format!("/items/{key}")).is_some());
    let api_item = get_json(port, &format!("/items/{key}")).unwrap();
    assert_eq!(api_item["usage"], *usage, "{api_item:#}");
    let api_job = get_json(port, &format!("/jobs/{}", jobs[0]["id"])).unwrap();
    assert_eq!(api_job["usage"], *usage, "{api_job:#}");

    // The same run in /metrics: its tokens by kind, its turns and its cost.
    let stage = jobs[0]["stage"].as_str().unwrap();
    let metrics = get_text(port, "/metrics").unwrap();
    let sample = |name: &str, labels: &[&str]| -> Option<f64> {
        metrics.lines().find_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let ok = series.starts_with(&format!("{name}{{"))
                && series.contains(&format!("stage=\"{stage}\""))
                && labels.iter().all(|lb| series.contains(lb));
            ok.then(|| value.parse().ok()).flatten()
        })
    };
    assert_eq!(sample("orch_agent_tokens_total", &["kind=\"input\""]), Some(300.0), "{metrics}");
    assert_eq!(sample("orch_agent_tokens_total", &["kind=\"output\""]), Some(60.0), "{metrics}");
    assert_eq!(sample("orch_agent_turns_total", &[]), Some(3.0), "{metrics}");
    let cost = sample("orch_agent_cost_usd", &[]).expect("a cost sample");
    assert!((cost - 0.0018).abs() < 1e-9, "{metrics}");
    d.assert_audit_clean();
}
