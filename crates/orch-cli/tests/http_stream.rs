//! The API's streams through a real `orch serve` over a real socket: a job's log
//! followed as SSE while a real agent writes it (resumable, ending with the
//! job), byte ranges of the log, `/events`, and streams ending when the node is
//! told to stop.

mod common;

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use common::deployment::{Deployment, terminate};
use common::wait_until;
use serde_json::Value;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A request over HTTP/1.0, so the body (a stream too) is delimited by the
/// connection's end: (status line, lower-cased headers, the open socket with any
/// body bytes already read).
fn open(port: u16, path: &str, headers: &[(&str, &str)]) -> (String, String, TcpStream, Vec<u8>) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut req = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..end]).into_owned();
            let rest = raw[end + 4..].to_vec();
            let (status, headers) = head.split_once("\r\n").unwrap_or((&head, ""));
            return (status.to_owned(), headers.to_ascii_lowercase(), s, rest);
        }
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "connection closed before the response head");
        raw.extend_from_slice(&buf[..n]);
    }
}

/// A whole response: (status code, lower-cased headers, body).
fn get(port: u16, path: &str, headers: &[(&str, &str)]) -> (u16, String, Vec<u8>) {
    let (status, head, mut s, mut body) = open(port, path, headers);
    s.read_to_end(&mut body).unwrap();
    (status.split_whitespace().nth(1).unwrap().parse().unwrap(), head, body)
}

fn json(port: u16, path: &str) -> Value {
    let (status, _, body) = get(port, path, &[]);
    assert_eq!(status, 200, "{path}: {}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).unwrap()
}

/// One SSE message: its `event:` name (empty for a plain message), `id:` and data.
#[derive(Debug, Clone, PartialEq)]
struct Message {
    event: String,
    id: String,
    data: String,
}

/// Reads SSE messages off an open socket.
struct Sse {
    s: TcpStream,
    buf: Vec<u8>,
}

impl Sse {
    fn open(port: u16, path: &str, headers: &[(&str, &str)]) -> Self {
        let (status, head, s, buf) = open(port, path, headers);
        assert!(status.contains(" 200 "), "{path}: {status}");
        assert!(head.contains("content-type: text/event-stream"), "{head}");
        Self { s, buf }
    }

    /// The next message; `None` once the server ends the stream.
    fn next(&mut self) -> Option<Message> {
        loop {
            if let Some(end) = self.buf.windows(2).position(|w| w == b"\n\n") {
                let frame = String::from_utf8(self.buf.drain(..end + 2).collect()).unwrap();
                let mut m = Message { event: String::new(), id: String::new(), data: String::new() };
                let mut data = Vec::new();
                for line in frame.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        m.event = v.trim_start().to_owned();
                    } else if let Some(v) = line.strip_prefix("id:") {
                        m.id = v.trim_start().to_owned();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push(v.strip_prefix(' ').unwrap_or(v).to_owned());
                    }
                }
                if data.is_empty() {
                    continue; // a keep-alive comment
                }
                m.data = data.join("\n");
                return Some(m);
            }
            let mut chunk = [0u8; 4096];
            let n = self.s.read(&mut chunk).expect("the stream stalled for 60 s");
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// The developer agent writes two lines, waits for the test's go-ahead file,
/// writes a third and passes. A follower of its log gets the first two lines
/// while the job is still running, the third after the go-ahead, then `event:
/// end` with the job's status; a follower that resumes with `Last-Event-ID` (the
/// byte offset after line 1) gets the rest and the same end. The plain log
/// answers byte ranges with 206 and `Content-Range`, and 416 past the end.
#[test]
fn log_follow_streams_lines_as_written_and_ends_with_the_job() {
    let d = Deployment::new("sqlite://orch.db", orch_test_support::FAST_REAPER, "");
    let go = d.path().join("go");
    d.script(
        "agents/developer.sh",
        &format!(
            "echo 'line 1'\necho 'line 2'\nwhile [ ! -f '{}' ]; do sleep 0.05; done\necho 'line 3'\n{}",
            go.display(),
            common::deployment::PASS
        ),
    );
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let _serve = d.serve("node-a", "data-a", &[("ORCH_SERVER_LISTEN", listen.as_str())], "serve.log");
    let key = d.add_item("streamed");
    let mut job_id = 0;
    wait_until("the developer job to run", || {
        let item = json(port, &format!("/items/{key}"));
        match item["jobs"].as_array().and_then(|j| j.first()) {
            Some(j) if j["status"] == "running" && j["log_path"].is_string() => {
                job_id = j["id"].as_i64().unwrap();
                true
            }
            _ => false,
        }
    });
    let mut follow = Sse::open(port, &format!("/jobs/{job_id}/log?follow=1"), &[]);
    let first = follow.next().unwrap();
    assert_eq!((first.event.as_str(), first.id.as_str(), first.data.as_str()), ("", "7", "line 1"));
    let second = follow.next().unwrap();
    assert_eq!((second.id.as_str(), second.data.as_str()), ("14", "line 2"));
    assert_eq!(json(port, &format!("/jobs/{job_id}"))["status"], "running", "lines arrive before the job ends");

    let (status, head, body) = get(port, &format!("/jobs/{job_id}/log"), &[("Range", "bytes=7-10")]);
    assert_eq!((status, body.as_slice()), (206, b"line".as_slice()));
    assert!(head.contains("content-range: bytes 7-10/14"), "{head}");
    let (status, head, body) = get(port, &format!("/jobs/{job_id}/log"), &[("Range", "bytes=-7")]);
    assert_eq!((status, body.as_slice()), (206, b"line 2\n".as_slice()));
    assert!(head.contains("content-range: bytes 7-13/14"), "{head}");
    let (status, head, _) = get(port, &format!("/jobs/{job_id}/log"), &[("Range", "bytes=14-")]);
    assert_eq!(status, 416);
    assert!(head.contains("content-range: bytes */14"), "{head}");

    std::fs::write(&go, "").unwrap();
    let third = follow.next().unwrap();
    assert_eq!((third.id.as_str(), third.data.as_str()), ("21", "line 3"));
    let end = follow.next().unwrap();
    assert_eq!(end.event, "end");
    let status: Value = serde_json::from_str(&end.data).unwrap();
    let final_status = json(port, &format!("/jobs/{job_id}"))["status"].clone();
    assert_eq!(status["status"], final_status);
    assert!(["done", "failed"].contains(&final_status.as_str().unwrap()), "{final_status}");
    assert_eq!(follow.next(), None, "the stream ends with the job");

    let mut resumed =
        Sse::open(port, &format!("/jobs/{job_id}/log"), &[("Accept", "text/event-stream"), ("Last-Event-ID", "7")]);
    let rest: Vec<Message> = std::iter::from_fn(|| resumed.next()).collect();
    let data: Vec<&str> = rest.iter().map(|m| m.data.as_str()).collect();
    assert_eq!(data[..2], ["line 2", "line 3"]);
    assert_eq!(rest.len(), 3);
    assert_eq!(rest[2].event, "end");
}

/// `/events` over the real server: a follower started at the end sees an item
/// filed after it connected (its `item.created` first), and when `orch serve`
/// gets SIGTERM every open stream ends promptly and the node exits cleanly.
#[test]
fn events_follow_new_items_and_end_on_sigterm() {
    let d = Deployment::new("sqlite://orch.db", orch_test_support::FAST_REAPER, "");
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut serve = d.serve("node-a", "data-a", &[("ORCH_SERVER_LISTEN", listen.as_str())], "serve.log");
    wait_until("the API to answer", || TcpStream::connect(("127.0.0.1", port)).is_ok());
    let mut events = Sse::open(port, "/events", &[]);
    let mut idle = Sse::open(port, "/events?item=SHOP-999", &[]);
    let key = d.add_item("watched");
    let first = events.next().unwrap();
    let e: Value = serde_json::from_str(&first.data).unwrap();
    assert_eq!((e["kind"].as_str(), e["item"].as_str()), (Some("item.created"), Some(key.as_str())));
    assert_eq!(first.id, e["seq"].to_string());
    let started = Instant::now();
    let status = terminate(&mut serve);
    assert!(status.success(), "orch serve exited with {status}: {}", d.log("serve.log"));
    // Both streams ended (EOF) on their own, instead of holding the shutdown up
    // until the drain deadline cut them.
    while events.next().is_some() {}
    assert_eq!(idle.next(), None);
    let log = d.log("serve.log");
    assert!(!log.contains("still open after the drain deadline"), "streams held the shutdown up: {log}");
    eprintln!("orch serve exited {:?} after SIGTERM", started.elapsed());
}

/// `promtool` from `$ORCH_PROMTOOL` or the `PATH`: `scripts/ensure-tools`
/// installs it (Debian package `prometheus`); a machine without it fails here.
fn promtool() -> String {
    let tool = std::env::var("ORCH_PROMTOOL").unwrap_or_else(|_| "promtool".to_owned());
    let found = std::process::Command::new(&tool).arg("--version").output().is_ok_and(|o| o.status.success());
    assert!(found, "{tool} is not installed: run scripts/ensure-tools (Debian package prometheus)");
    tool
}

/// `GET /metrics` of a running node that has driven an item through a gate to
/// `done` shows the store's item and job counts, transitions by kind, gate,
/// agent and store-call histograms, and the whole page passes `promtool check
/// metrics` (format and naming lints).
#[test]
fn metrics_of_a_running_node_pass_promtool() {
    let extra = "[[edges]]\nfrom = \"development\"\nto = \"testing\"\ngates = [\"lint\"]\non_fail = \"development\"\n\
                 [gates.lint]\ncommand = [\"true\"]\ntimeout_s = 20\n";
    let d = Deployment::new("sqlite://orch.db", orch_test_support::FAST_REAPER, extra);
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let _serve = d.serve("node-a", "data-a", &[("ORCH_SERVER_LISTEN", listen.as_str())], "serve.log");
    let key = d.add_item("measured");
    wait_until("the item to be done", || {
        TcpStream::connect(("127.0.0.1", port)).is_ok() && json(port, &format!("/items/{key}"))["status"] == "done"
    });
    let (status, head, body) = get(port, "/metrics", &[]);
    let text = String::from_utf8(body).unwrap();
    assert_eq!(status, 200, "{text}");
    assert!(head.contains("content-type: text/plain; version=0.0.4"), "{head}");
    for needle in [
        "# TYPE orch_items gauge",
        "orch_items{status=\"done\"} 1",
        "orch_jobs{status=\"done\"} 4",
        "orch_transitions_total{kind=\"item.advanced\"} 3",
        "orch_transitions_total{kind=\"item.done\"} 1",
        "# TYPE orch_gate_duration_seconds histogram",
        "orch_gate_duration_seconds_count{gate=\"lint\"} 1",
        "orch_agent_duration_seconds_count{stage=\"development\"} 1",
        "orch_store_call_duration_seconds_bucket{call=\"claim_jobs\",le=\"+Inf\"}",
        "# HELP orch_store_call_duration_seconds",
        "# HELP orch_items ",
        "orch_reaper_reaped_total{tier=\"tier3\"} 0",
        "orch_fenced_out_total 0",
    ] {
        assert!(text.contains(needle), "/metrics lacks {needle:?}:\n{text}");
    }
    let mut check = std::process::Command::new(promtool())
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .output_with_stdin(text.as_bytes());
    let out = check.take().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n---\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs a command with `input` on its stdin and collects its output.
trait OutputWithStdin {
    fn output_with_stdin(&mut self, input: &[u8]) -> Option<std::process::Output>;
}

impl OutputWithStdin for std::process::Command {
    fn output_with_stdin(&mut self, input: &[u8]) -> Option<std::process::Output> {
        let mut child = self.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().ok()?;
        child.stdin.take()?.write_all(input).ok()?;
        child.wait_with_output().ok()
    }
}
