//! A model server of our own on 127.0.0.1 that speaks just enough of the vendors'
//! published streaming APIs for the real Claude Code and Codex CLIs to run against
//! it offline: Anthropic Messages (`POST /v1/messages`, always streamed as
//! `message_start` … `message_stop`) and OpenAI Responses (`POST /v1/responses`,
//! `response.created` … `response.completed`).
//!
//! A test gives the stub a [`Script`]: the turns the "model" plays in order. Which
//! turn answers a request is decided by how many tool results the conversation
//! already holds, not by how many requests arrived, so a client's retry of the same
//! request gets the same answer. Every request is recorded (path and body) so a test
//! can assert what the CLI sent; paths the stub does not serve answer 404 and are
//! recorded too.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use serde_json::{Value, json};

/// One turn of the scripted model.
#[derive(Clone, Debug)]
pub enum Turn {
    /// Call a tool: Claude Code's `Write`, `Edit`, `Bash`…, Codex's `exec_command`.
    Tool { name: String, input: Value },
    /// A final text answer (the turn ends with `end_turn` / a completed response).
    Text(String),
    /// Answer the request with this HTTP status and an error body of the vendor's shape.
    Status(u16),
    /// Start the stream (headers and the first event), then send nothing more until
    /// the client gives up: a server that stalls mid-answer.
    Stall,
}

impl Turn {
    /// Claude Code's `Bash` tool running `command`.
    pub fn claude_bash(command: &str) -> Self {
        Self::Tool { name: "Bash".into(), input: json!({"command": command, "description": "scripted step"}) }
    }

    /// Claude Code's `Write` tool creating `file_path` with `content`.
    pub fn claude_write(file_path: &str, content: &str) -> Self {
        Self::Tool { name: "Write".into(), input: json!({"file_path": file_path, "content": content}) }
    }

    /// Codex's `exec_command` tool running `cmd` in a shell.
    pub fn codex_exec(cmd: &str) -> Self {
        Self::Tool { name: "exec_command".into(), input: json!({"cmd": cmd}) }
    }
}

/// The turns the stub plays, and the usage it reports for each answer.
#[derive(Clone, Debug)]
pub struct Script {
    pub turns: Vec<Turn>,
    /// Input tokens reported per answer.
    pub input_tokens: u64,
    /// Output tokens reported per answer.
    pub output_tokens: u64,
}

impl Script {
    /// `turns` with 100 input and 20 output tokens per answer.
    pub fn new(turns: Vec<Turn>) -> Self {
        Self { turns, input_tokens: 100, output_tokens: 20 }
    }
}

/// One request the stub received.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    /// Path and query, e.g. `/v1/messages?beta=true`.
    pub path: String,
    pub body: String,
}

struct Shared {
    script: Script,
    requests: Mutex<Vec<Request>>,
}

/// A running stub; stops when dropped.
pub struct ModelStub {
    addr: std::net::SocketAddr,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ModelStub {
    /// Starts a stub playing `script` on 127.0.0.1 on a free port, on a runtime
    /// thread of its own (so it serves while a test blocks or unwinds).
    ///
    /// # Panics
    /// If it cannot bind: the test must fail loudly.
    pub fn start(script: Script) -> Self {
        let shared = Arc::new(Shared { script, requests: Mutex::new(Vec::new()) });
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding the model stub on 127.0.0.1");
        listener.set_nonblocking(true).expect("non-blocking stub listener");
        let addr = listener.local_addr().expect("the stub's address");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("the stub's runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
                // No graceful shutdown: a stalled stream never ends by itself, so the
                // runtime is dropped with whatever connections are still open.
                tokio::select! {
                    _ = axum::serve(listener, app) => {}
                    _ = rx => {}
                }
            });
            rt.shutdown_background();
        });
        Self { addr, shared, stop: Some(tx), thread: Some(thread) }
    }

    /// `http://127.0.0.1:PORT`: Claude Code's `ANTHROPIC_BASE_URL`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The requests received so far.
    pub fn requests(&self) -> Vec<Request> {
        self.shared.requests.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// The requests to the model endpoint (`/v1/messages` or `/v1/responses`).
    pub fn model_requests(&self) -> Vec<Request> {
        self.requests()
            .into_iter()
            .filter(|r| {
                r.method == "POST" && (r.path.starts_with("/v1/messages") || r.path.starts_with("/v1/responses"))
            })
            .filter(|r| !r.path.contains("count_tokens"))
            .collect()
    }
}

impl Drop for ModelStub {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// How many tool results the request's conversation holds: the index of the turn
/// that answers it.
fn position(body: &Value) -> usize {
    let anthropic = body.get("messages").and_then(Value::as_array).map(|msgs| {
        msgs.iter()
            .filter_map(|m| m.get("content").and_then(Value::as_array))
            .flatten()
            .filter(|c| c.get("type").and_then(Value::as_str) == Some("tool_result"))
            .count()
    });
    let openai = body.get("input").and_then(Value::as_array).map(|items| {
        items.iter().filter(|i| i.get("type").and_then(Value::as_str) == Some("function_call_output")).count()
    });
    anthropic.or(openai).unwrap_or(0)
}

async fn handle(State(shared): State<Arc<Shared>>, method: Method, uri: Uri, _h: HeaderMap, body: Bytes) -> Response {
    let path = uri.path_and_query().map_or_else(|| uri.path().to_owned(), ToString::to_string);
    let text = String::from_utf8_lossy(&body).into_owned();
    shared.requests.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(Request {
        method: method.to_string(),
        path: path.clone(),
        body: text,
    });
    let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let script = &shared.script;
    let at = position(&parsed);
    let turn = || script.turns.get(at).cloned().unwrap_or_else(|| Turn::Text("done".into()));
    match (method.as_str(), uri.path()) {
        ("HEAD", "/") => empty(StatusCode::OK),
        ("POST", "/v1/messages") => anthropic(turn(), at, script, parsed.get("model")),
        ("POST", "/v1/responses") => openai(turn(), at, script),
        _ => empty(StatusCode::NOT_FOUND),
    }
}

fn empty(status: StatusCode) -> Response {
    Response::builder().status(status).body(Body::empty()).unwrap_or_default()
}

fn json_response(status: u16, body: &Value) -> Response {
    Response::builder()
        .status(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap_or_default()
}

fn sse(events: Vec<(&'static str, Value)>, stall: bool) -> Response {
    let text: String = events.iter().map(|(name, data)| format!("event: {name}\ndata: {data}\n\n")).collect();
    let first = futures_stream(text, stall);
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(first)
        .unwrap_or_default()
}

/// The body: `text` at once, then either the end or (stalled) nothing ever again.
fn futures_stream(text: String, stall: bool) -> Body {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(2);
    tokio::spawn(async move {
        let _ = tx.send(Ok(Bytes::from(text))).await;
        if stall {
            // Hold the sender until the client hangs up.
            tx.closed().await;
        }
    });
    Body::from_stream(tokio_stream_from(rx))
}

fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// `at` numbers the tool call: each call of a conversation needs its own id.
fn anthropic(turn: Turn, at: usize, script: &Script, model: Option<&Value>) -> Response {
    let model = model.cloned().unwrap_or_else(|| json!("claude-sonnet-4-5"));
    let start = json!({"type": "message_start", "message": {
        "id": "msg_stub", "type": "message", "role": "assistant", "model": model, "content": [],
        "stop_reason": null, "stop_sequence": null,
        "usage": {"input_tokens": script.input_tokens, "output_tokens": 1,
                  "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}}});
    let (block, delta, stop_reason) = match turn {
        Turn::Status(code) => {
            let kind = if code == 529 { "overloaded_error" } else { "api_error" };
            return json_response(
                code,
                &json!({"type": "error", "error": {"type": kind, "message": "scripted failure"}}),
            );
        }
        Turn::Stall => return sse(vec![("message_start", start)], true),
        Turn::Text(text) => {
            (json!({"type": "text", "text": ""}), json!({"type": "text_delta", "text": text}), "end_turn")
        }
        Turn::Tool { name, input } => (
            json!({"type": "tool_use", "id": format!("toolu_stub_{at}"), "name": name, "input": {}}),
            json!({"type": "input_json_delta", "partial_json": input.to_string()}),
            "tool_use",
        ),
    };
    sse(
        vec![
            ("message_start", start),
            ("content_block_start", json!({"type": "content_block_start", "index": 0, "content_block": block})),
            ("content_block_delta", json!({"type": "content_block_delta", "index": 0, "delta": delta})),
            ("content_block_stop", json!({"type": "content_block_stop", "index": 0})),
            (
                "message_delta",
                json!({"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": null},
                       "usage": {"output_tokens": script.output_tokens}}),
            ),
            ("message_stop", json!({"type": "message_stop"})),
        ],
        false,
    )
}

fn openai(turn: Turn, at: usize, script: &Script) -> Response {
    let created = json!({"type": "response.created", "response": {"id": "resp_stub", "status": "in_progress"}});
    let item = match turn {
        Turn::Status(code) => {
            return json_response(
                code,
                &json!({"error": {"type": "server_error", "message": format!("scripted failure (HTTP {code})"), "code": null}}),
            );
        }
        Turn::Stall => return sse(vec![("response.created", created)], true),
        Turn::Text(text) => json!({"type": "message", "id": "msg_stub", "role": "assistant", "status": "completed",
                                   "content": [{"type": "output_text", "text": text, "annotations": []}]}),
        Turn::Tool { name, input } => {
            json!({"type": "function_call", "id": format!("fc_stub_{at}"), "call_id": format!("call_stub_{at}"),
                                             "name": name, "arguments": input.to_string(), "status": "completed"})
        }
    };
    let usage = json!({"input_tokens": script.input_tokens, "input_tokens_details": {"cached_tokens": 0},
                       "output_tokens": script.output_tokens, "output_tokens_details": {"reasoning_tokens": 0},
                       "total_tokens": script.input_tokens + script.output_tokens});
    sse(
        vec![
            ("response.created", created),
            (
                "response.output_item.added",
                json!({"type": "response.output_item.added", "output_index": 0, "item": item}),
            ),
            (
                "response.output_item.done",
                json!({"type": "response.output_item.done", "output_index": 0, "item": item}),
            ),
            (
                "response.completed",
                json!({"type": "response.completed", "response": {"id": "resp_stub", "status": "completed", "usage": usage}}),
            ),
        ],
        false,
    )
}
