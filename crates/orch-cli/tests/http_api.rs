//! `orch serve` serves the HTTP API on `server.listen` beside its node: black-box,
//! over a real socket with hand-written HTTP/1.1 requests.

mod common;

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use common::deployment::Deployment;
use common::wait_until;
use serde_json::Value;

/// One request on a fresh connection: (status, body).
fn request(port: u16, method: &str, path: &str, body: Option<&str>) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let body = body.unwrap_or("");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, rest) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let body =
        if head.to_ascii_lowercase().contains("transfer-encoding: chunked") { dechunk(rest) } else { rest.to_owned() };
    Some((status, body))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
    out
}

fn json(port: u16, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
    let (status, text) = request(port, method, path, body).unwrap_or_else(|| panic!("{method} {path}: no answer"));
    (status, serde_json::from_str(&text).unwrap_or_else(|e| panic!("{method} {path}: {e}: {text}")))
}

/// A port free a moment ago (the OS picks it; nothing else here binds it).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `GET /queue` on a running node shows the reaper block with that node's live
/// values; `POST /items` files an item the node then runs, `GET /items/{key}`
/// reads it back.
#[test]
fn serve_answers_queue_with_live_reaper_block_and_files_items() {
    let d = Deployment::new("sqlite://orch.db", orch_test_support::FAST_REAPER, "");
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let _serve = d.serve("node-a", "data-a", &[("ORCH_SERVER_LISTEN", listen.as_str())], "serve.log");
    wait_until("the API to answer /readyz", || request(port, "GET", "/readyz", None).is_some_and(|(s, _)| s == 200));
    // The reaper runs every 0.2 s: its last pass shows up as a live value.
    wait_until("a reaper pass to be reported", || {
        json(port, "GET", "/queue", None).1["reaper"]["last_pass_at"].is_string()
    });
    let (status, q) = json(port, "GET", "/queue", None);
    assert_eq!(status, 200);
    let reaper = q["reaper"].as_object().unwrap();
    let keys: Vec<&str> = reaper.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "finalize_grace_s",
            "finalizer_defers_total",
            "finalizer_liveness_enabled",
            "finalizer_owned",
            "interval_s",
            "last_pass_at",
            "max_running_s",
            "reaped_total"
        ]
    );
    assert_eq!(q["counters_from"], "cluster");
    assert_eq!(reaper["interval_s"], 0.2);
    assert_eq!(reaper["finalizer_defers_total"], 0);
    assert_eq!(reaper["reaped_total"]["tier1"], 0);

    let (status, created) =
        json(port, "POST", "/items", Some(r#"{"repo":"shop","kind":"bug","title":"over http","body":"b"}"#));
    assert_eq!(status, 201, "{created}");
    let key = created["key"].as_str().unwrap().to_owned();
    let (status, item) = json(port, "GET", &format!("/items/{key}"), None);
    assert_eq!((status, item["title"].as_str()), (200, Some("over http")));
    // The node picks it up like any other item and drives it to the end.
    wait_until("the item filed over HTTP to be done", || {
        json(port, "GET", &format!("/items/{key}"), None).1["status"] == "done"
    });
    let (status, err) = json(port, "GET", "/items/SHOP-99", None);
    assert_eq!((status, err["error"].as_str()), (404, Some("no item SHOP-99")));
}

/// With no token, a non-loopback listener is refused, and says why.
#[test]
fn serve_refuses_an_open_non_loopback_listener() {
    let d = Deployment::new("sqlite://orch.db", orch_test_support::FAST_REAPER, "");
    let mut serve = d.serve("node-a", "data-a", &[("ORCH_SERVER_LISTEN", "0.0.0.0:0")], "serve.log");
    let status = serve.0.wait().unwrap();
    assert!(!status.success());
    let log = d.log("serve.log");
    assert!(log.contains("refusing to serve the API on 0.0.0.0:0") && log.contains("--insecure-open"), "{log}");
}
