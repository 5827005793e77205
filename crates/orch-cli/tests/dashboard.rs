//! The dashboard end to end in headless Chromium: the real `orch serve` with a
//! scripted pipeline (agents are shell scripts that wait for files the browser
//! scenario writes), driven by a Node script per scenario through
//! `playwright-core` and the system Chromium (both installed by
//! `scripts/ensure-browser`, which `scripts/test` runs). Every scenario also
//! asserts that the pages make no request outside the server's origin.
//!
//! Screenshots go to `<target>/screenshots/` (`board.png`, `item.png`,
//! `health.png`); `docs/img/` holds copies for the README.

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::deployment::{Deployment, FAST, terminate};
use common::{Serve, wait_until};

const PLAYWRIGHT_VERSION: &str = "1.65.1";

/// The scripted agent every role runs: it logs a coloured line and a line of
/// markup, blocks an item whose prompt asks for a human (until the scenario
/// writes `unblock/KEY`), and otherwise waits for `go/KEY-STAGE`, then changes a
/// file in its worktree (so there is a commit and a pull request) and passes.
/// An item whose prompt says `swap-my-log` first replaces its own log with a
/// link to a secret once the scenario writes `go/KEY-swap`.
fn agent(dir: &Path) -> String {
    let d = dir.display();
    format!(
        r#"echo "started $ORCH_STAGE for $ORCH_ITEM"
printf '\033[1;32mcoloured line\033[0m\n'
echo '<script>window.__xss=3</script>'
echo $$ >> "{d}/pids/agents"
if grep -q swap-my-log "$ORCH_PROMPT_FILE"; then
  echo "before the swap"
  while [ ! -f "{d}/go/$ORCH_ITEM-swap" ]; do sleep 0.05; done
  log=$(readlink /proc/$$/fd/1)
  rm -f "$log" && ln -s "{d}/secret.txt" "$log"
fi
if grep -q needs-a-human "$ORCH_PROMPT_FILE" && [ ! -f "{d}/unblock/$ORCH_ITEM" ]; then
  printf '{{"verdict":"blocked","summary":"needs a human: which rounding rule applies?"}}' > "$ORCH_VERDICT_FILE"
  exit 0
fi
while [ ! -f "{d}/go/$ORCH_ITEM-$ORCH_STAGE" ]; do sleep 0.05; done
echo "$ORCH_STAGE done" >> "notes-$ORCH_ITEM.txt"
echo released
printf '{{"verdict":"pass","summary":"ok"}}' > "$ORCH_VERDICT_FILE""#
    )
}

fn deployment(extra: &str) -> Deployment {
    let d = Deployment::new("sqlite://state/orch.db", FAST, extra);
    for dir in ["go", "unblock"] {
        std::fs::create_dir_all(d.path().join(dir)).unwrap();
    }
    std::fs::write(d.path().join("secret.txt"), "TOP-SECRET-42\n").unwrap();
    // The scenarios hold agents for as long as they watch them: give them longer
    // than the deployment's default 30 s (within FAST's max_running_s).
    let config = d.path().join("orch.toml");
    let text = std::fs::read_to_string(&config).unwrap().replace("timeout_s = 30", "timeout_s = 100");
    std::fs::write(&config, text).unwrap();
    let body = agent(d.path());
    for role in ["analyst", "architect", "developer", "tester", "deployer"] {
        d.script(&format!("agents/{role}.sh"), &body);
    }
    d
}

/// A port free a moment ago (the OS picks it; nothing else here binds it).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn ready(port: u16) -> bool {
    use std::io::{Read as _, Write as _};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    if s.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").is_err() {
        return false;
    }
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.starts_with("HTTP/1.1 200")
}

fn serve(d: &Deployment, port: u16, token: Option<&str>, log: &str) -> Serve {
    let listen = format!("127.0.0.1:{port}");
    let mut env = vec![("ORCH_SERVER_LISTEN", listen.as_str())];
    if let Some(t) = token {
        env.push(("ORCH_SERVER_TOKEN", t));
    }
    let s = d.serve("node-a", "data-a", &env, log);
    wait_until("orch serve to answer /readyz", || ready(port));
    s
}

/// Where the browser tools are, failing loudly with the fix when they are not.
fn tools() -> (PathBuf, PathBuf) {
    let chromium = PathBuf::from(std::env::var("ORCH_TEST_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()));
    let playwright = std::env::var("ORCH_TEST_PLAYWRIGHT_DIR").map(PathBuf::from).unwrap_or_else(|_| {
        let cache = std::env::var("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache"));
        cache.join(format!("orch-test-tools/playwright-core-{PLAYWRIGHT_VERSION}"))
    });
    assert!(chromium.is_file(), "{} is missing: run scripts/ensure-browser (scripts/test does)", chromium.display());
    assert!(
        playwright.join("node_modules/playwright-core/package.json").is_file(),
        "playwright-core is missing from {}: run scripts/ensure-browser (scripts/test does)",
        playwright.display()
    );
    (chromium, playwright)
}

fn screenshots() -> PathBuf {
    // `CARGO_TARGET_TMPDIR` is `<target>/tmp`: screenshots go beside it.
    Path::new(env!("CARGO_TARGET_TMPDIR")).parent().unwrap().join("screenshots")
}

/// Starts `node tests/dashboard/<name>.cjs` against the server on `port`.
fn start_scenario(name: &str, d: &Deployment, port: u16, extra: &[(&str, &str)]) -> std::process::Child {
    let (chromium, playwright) = tools();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/dashboard").join(format!("{name}.cjs"));
    Command::new("node")
        .arg(&script)
        .env("ORCH_TEST_BASE", format!("http://127.0.0.1:{port}"))
        .env("ORCH_TEST_DIR", d.path())
        .env("ORCH_TEST_SHOTS", screenshots())
        .env("ORCH_TEST_CHROMIUM", chromium)
        .env("ORCH_TEST_PLAYWRIGHT_DIR", playwright)
        .envs(extra.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run node (install nodejs): {e}"))
}

/// Waits for the scenario to end (it bounds itself; this is the backstop) and
/// fails the test with its output and the server's log unless it passed.
fn finish_scenario(mut child: std::process::Child, d: &Deployment, logs: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().unwrap();
    let server: String = logs.iter().map(|l| format!("--- {l}\n{}", d.log(l))).collect();
    assert!(
        out.status.success(),
        "scenario failed ({}):\n{}{}\n{server}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A card passes through every stage of the quick track on an open board, with
/// no reload, waiting for approval before deploy until the item page approves
/// it; the running job's log is followed live; the finished item's page
/// shows its timeline; the health page shows the reaper block and the charts.
#[test]
fn board_follows_an_item_through_every_stage_live() {
    let d = deployment(
        "[[edges]]\nfrom = \"deploy-staging\"\nto = \"deploy\"\non_fail = \"development\"\napproval = true\n",
    );
    let port = free_port();
    let mut s = serve(&d, port, None, "serve.log");
    let child = start_scenario("board", &d, port, &[]);
    finish_scenario(child, &d, &["serve.log"]);
    terminate(&mut s);
    d.assert_audit_clean();
}

/// Retry on a blocked item's page needs the token, then moves the item; the API's
/// refusal reason is shown; a title with markup is shown as text and never runs.
#[test]
fn item_page_retries_a_blocked_item_with_the_token_and_escapes_hostile_titles() {
    let d = deployment("");
    let port = free_port();
    let token = "dash-test-token";
    let mut s = serve(&d, port, Some(token), "serve.log");
    let child = start_scenario("item", &d, port, &[("ORCH_TEST_TOKEN", token)]);
    finish_scenario(child, &d, &["serve.log"]);
    terminate(&mut s);
}

/// The board recovers by itself after `orch serve` restarts: an item filed after
/// the restart shows up without a reload.
#[test]
fn board_recovers_after_the_server_restarts() {
    let d = deployment("");
    let port = free_port();
    let mut first = serve(&d, port, None, "serve-1.log");
    let child = start_scenario("restart", &d, port, &[]);
    wait_until("the board to be open", || d.path().join("board-open").exists());
    terminate(&mut first);
    let mut second = serve(&d, port, None, "serve-2.log");
    let key = d.add_item("Filed after the restart");
    std::fs::write(d.path().join("added-key"), &key).unwrap();
    finish_scenario(child, &d, &["serve-1.log", "serve-2.log"]);
    terminate(&mut second);
}
