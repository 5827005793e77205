//! `orch serve`'s outer surface through the real binary over a real socket:
//! `--log-format json`, access log lines with request ids, the refusals of an
//! unsafe listener or `auth_reads` without a token, and `/readyz` while the store
//! is cut off and after it comes back.

mod common;

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use common::deployment::{Deployment, FAST, sqlite, terminate};
use common::proxy::FreezableProxy;
use common::wait_until;
use nix::sys::signal::Signal;
use serde_json::Value;

/// An answer: status, head (lower-cased), body.
struct Answer {
    status: u16,
    head: String,
    body: String,
}

/// One GET on a fresh connection, with extra header lines; `None` if nothing
/// answered within `timeout`.
fn get(port: u16, path: &str, headers: &[&str], timeout: Duration) -> Option<Answer> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(timeout)).ok()?;
    let extra: String = headers.iter().map(|h| format!("{h}\r\n")).collect();
    let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{extra}\r\n");
    s.write_all(req.as_bytes()).ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some(Answer { status, head: head.to_ascii_lowercase(), body: body.to_owned() })
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `--log-format json`: every stderr line is one JSON object, and a request's
/// access log line is among them with its method, path, status, latency and the
/// request id the client sent (echoed on the response too).
#[test]
fn json_log_format_writes_only_json_lines_with_access_logs() {
    let d = Deployment::new(sqlite(), FAST, "");
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut cmd = std::process::Command::new(common::ORCH);
    // A stray override warns before the node starts: that line must be JSON too.
    cmd.env("ORCH_SERVER_TYPO", "1");
    let env = [("ORCH_SERVER_LISTEN", listen.as_str()), ("ORCH_LOG_FORMAT", "json")];
    let mut serve = d.serve_with(cmd, "node-a", "data-a", &env, "serve.log");
    wait_until("the API to answer", || get(port, "/healthz", &[], Duration::from_secs(5)).is_some());
    let r = get(port, "/items/SHOP-404", &["X-Request-Id: probe-7f3a"], Duration::from_secs(10)).unwrap();
    assert_eq!(r.status, 404);
    assert!(r.head.contains("x-request-id: probe-7f3a"), "{}", r.head);
    let r = get(port, "/queue", &[], Duration::from_secs(10)).unwrap();
    assert_eq!(r.status, 200);
    let made = r.head.lines().find_map(|l| l.strip_prefix("x-request-id: ")).expect("an id is made").to_owned();
    wait_until("both access log lines", || {
        let log = d.log("serve.log");
        log.contains("probe-7f3a") && log.contains(&made)
    });
    assert!(terminate(&mut serve).success());
    let log = d.log("serve.log");
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("a stderr line is not JSON ({e}): {l:?}")))
        .collect();
    assert!(lines.len() >= 4, "{log}");
    let access = lines
        .iter()
        .find(|v| v["span"]["request_id"] == "probe-7f3a")
        .unwrap_or_else(|| panic!("no access line for the request:\n{log}"));
    assert_eq!(access["message"], "request");
    assert_eq!(access["level"], "INFO");
    assert_eq!(access["status"], 404);
    assert!(access["latency_ms"].as_f64().is_some_and(|ms| ms >= 0.0), "{access}");
    assert_eq!(access["span"]["method"], "GET");
    assert_eq!(access["span"]["path"], "/items/SHOP-404");
    assert!(lines.iter().any(|v| v["span"]["request_id"] == made.as_str() && v["status"] == 200), "{log}");
    assert!(
        lines.iter().any(|v| v["level"] == "WARN" && v["message"].as_str().unwrap_or("").contains("ORCH_SERVER_TYPO"))
    );
}

/// `auth_reads` needs a token to check reads against: without one `orch serve`
/// exits non-zero naming the key and the variable, and with one it serves reads
/// only to the token's bearer.
#[test]
fn auth_reads_without_a_token_is_refused_and_with_one_guards_reads() {
    let d = Deployment::new(sqlite(), FAST, "");
    let mut serve = d.serve("node-a", "data-a", &[("ORCH_SERVER_AUTH_READS", "true")], "refused.log");
    let status = serve.0.wait().unwrap();
    assert!(!status.success());
    let log = d.log("refused.log");
    assert!(log.contains("server.auth_reads") && log.contains("ORCH_SERVER_TOKEN"), "{log}");

    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let env = [("ORCH_SERVER_AUTH_READS", "true"), ("ORCH_SERVER_TOKEN", "t0ken"), ("ORCH_SERVER_LISTEN", &listen)];
    let mut serve = d.serve("node-a", "data-a", &env, "serve.log");
    // The probe stays open: no token needed to see the node get ready.
    wait_until("the node to be ready", || {
        get(port, "/readyz", &[], Duration::from_secs(5)).is_some_and(|r| r.status == 200)
    });
    let r = get(port, "/queue", &[], Duration::from_secs(10)).unwrap();
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(r.body.contains("Authorization: Bearer"), "{}", r.body);
    assert_eq!(get(port, "/queue", &["Authorization: Bearer nope"], Duration::from_secs(10)).unwrap().status, 401);
    assert_eq!(get(port, "/queue", &["Authorization: Bearer t0ken"], Duration::from_secs(10)).unwrap().status, 200);
    assert_eq!(get(port, "/openapi.json", &[], Duration::from_secs(10)).unwrap().status, 200);
    assert!(terminate(&mut serve).success());
}

/// With no token, a non-loopback listener is refused, naming both ways out; with
/// `--insecure-open` it serves.
#[test]
fn open_non_loopback_listener_is_refused_unless_insecure_open() {
    let d = Deployment::new(sqlite(), FAST, "");
    let mut serve = d.serve("node-a", "data-a", &[("ORCH_SERVER_LISTEN", "0.0.0.0:0")], "refused.log");
    assert!(!serve.0.wait().unwrap().success());
    let log = d.log("refused.log");
    assert!(log.contains("0.0.0.0:0") && log.contains("--insecure-open") && log.contains("ORCH_SERVER_TOKEN"), "{log}");

    let port = free_port();
    let listen = format!("0.0.0.0:{port}");
    let cmd = std::process::Command::new(common::ORCH);
    let mut serve =
        d.serve_flags(cmd, &["--insecure-open"], "node-a", "data-a", &[("ORCH_SERVER_LISTEN", &listen)], "open.log");
    wait_until("the open API to answer", || {
        get(port, "/healthz", &[], Duration::from_secs(5)).is_some_and(|r| r.status == 200)
    });
    assert!(terminate(&mut serve).success(), "{}", d.log("open.log"));
}

/// `/readyz` is 503 with a JSON reason, promptly, while the node's PostgreSQL
/// store is cut off behind a frozen proxy (no error, no answer: the hard case),
/// and 200 again once the proxy thaws. `/healthz` answers throughout.
#[test]
fn readyz_is_503_while_the_store_is_frozen_and_recovers() {
    let db = orch_test_support::PgDatabase::create("orch_readyz");
    let d = Deployment::new(db.url(), FAST, "");
    let proxy = FreezableProxy::start();
    let via_proxy = proxy.url_for(db.url());
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut serve =
        d.serve("node-a", "data-a", &[("ORCH_STORE_URL", &via_proxy), ("ORCH_SERVER_LISTEN", &listen)], "serve.log");
    let ready = || get(port, "/readyz", &[], Duration::from_secs(10));
    wait_until("the node to be ready", || ready().is_some_and(|r| r.status == 200));

    proxy.signal(Signal::SIGSTOP);
    let frozen_at = Instant::now();
    let r = ready().expect("/readyz answers while the store is frozen");
    assert_eq!(r.status, 503, "{}", r.body);
    // It answers before a probe's usual timeout instead of waiting out the store.
    assert!(frozen_at.elapsed() < Duration::from_secs(8), "took {:?}", frozen_at.elapsed());
    let v: Value = serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("{e}: {}", r.body));
    assert!(v["error"].as_str().is_some_and(|e| e.contains("store")), "{v}");
    assert_eq!(get(port, "/healthz", &[], Duration::from_secs(10)).map(|r| r.status), Some(200));

    proxy.signal(Signal::SIGCONT);
    wait_until("/readyz to recover after the store thaws", || ready().is_some_and(|r| r.status == 200));
    assert!(terminate(&mut serve).success(), "{}", d.log("serve.log"));
}
