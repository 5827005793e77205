//! `GET /events` through the real router on SQLite and PostgreSQL: resuming with
//! `Last-Event-ID` while 16 writers commit gives every event exactly once and in
//! order; the start position, the item filter and their errors; and streams end
//! when the server shuts down.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, BodyDataStream};
use axum::http::{Request, StatusCode, header};
use futures::StreamExt as _;
use orch_core::{EventKind, ItemKey, Timestamp};
use orch_engine::{Clock, ManualClock};
use orch_server::{AppState, router};
use orch_store::{EventPosition, NewEvent, Store};
use orch_test_support::{FAST_REAPER, PgDatabase, config_text};
use serde_json::Value;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

use orch_test_support::Backend;

struct Api {
    _dir: tempfile::TempDir,
    store: Arc<dyn Store>,
    app: Router,
    stop: CancellationToken,
    _pg: Option<PgDatabase>,
}

impl Api {
    async fn new(backend: Backend) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let text = config_text("", FAST_REAPER);
        let path = dir.path().join("orch.toml");
        std::fs::write(&path, &text).unwrap();
        let config = orch_core::config::load(&path, &text, &BTreeMap::new()).unwrap_or_else(|e| panic!("{e}"));
        let (url, pg) = backend.store_url(dir.path(), "orch_sse");
        let store = orch_store::open(&url).await.unwrap();
        let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(Timestamp::from_millis(1_700_000_000_000)));
        let stop = CancellationToken::new();
        let state = AppState::new(Arc::clone(&store), Arc::new(config), clock).with_shutdown(stop.clone());
        Self { _dir: dir, store, app: router(state), stop, _pg: pg }
    }
}

/// One SSE message: its `id:` and its `data:` parsed as JSON.
#[derive(Debug)]
struct Message {
    id: i64,
    data: Value,
}

/// An open `text/event-stream` response, read message by message.
struct SseClient {
    body: BodyDataStream,
    buf: String,
}

impl SseClient {
    async fn open(app: &Router, uri: &str, last_id: Option<i64>) -> Self {
        let mut req = Request::get(uri);
        if let Some(id) = last_id {
            req = req.header("last-event-id", id.to_string());
        }
        let res = app.clone().oneshot(req.body(Body::empty()).unwrap()).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.headers()[header::CONTENT_TYPE], "text/event-stream");
        Self { body: res.into_body().into_data_stream(), buf: String::new() }
    }

    /// The next message, skipping keep-alive comments; `None` when the stream ends.
    async fn next(&mut self) -> Option<Message> {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let frame: String = self.buf.drain(..end + 2).collect();
                let (mut id, mut data) = (None, None);
                for line in frame.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        id = Some(v.trim().parse::<i64>().unwrap());
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data = Some(serde_json::from_str::<Value>(v.trim()).unwrap());
                    } else {
                        assert!(line.starts_with(':') || line.is_empty(), "unexpected SSE line {line:?}");
                    }
                }
                if let (Some(id), Some(data)) = (id, data) {
                    return Some(Message { id, data });
                }
                continue;
            }
            let chunk = self.body.next().await?.unwrap();
            self.buf.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }

    /// The next message within `within`, failing the test otherwise.
    async fn expect(&mut self, within: Duration) -> Message {
        tokio::time::timeout(within, self.next())
            .await
            .unwrap_or_else(|_| panic!("no SSE message within {within:?}"))
            .expect("the stream ended early")
    }
}

const WAIT: Duration = Duration::from_secs(30);

/// Every settled event's seq, in stream order, once `n` have settled.
async fn settled_seqs(store: &dyn Store, n: usize) -> Vec<i64> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let mut all = Vec::new();
        let mut from = EventPosition::START;
        loop {
            let page = store.events_after(from, None, 1000).await.unwrap();
            let Some(last) = page.last() else { break };
            from = last.position;
            all.extend(page.into_iter().map(|p| p.event.seq));
        }
        if all.len() >= n || tokio::time::Instant::now() > deadline {
            assert_eq!(all.len(), n, "the writers' events settled");
            return all;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// 16 writers each file an item and append 30 events while a client follows
/// `/events?after=0`; it drops the stream after 150 messages and reconnects
/// with `Last-Event-ID`. Together the two streams carry exactly the committed
/// events, in the store's stream order, none twice.
async fn events_resume_with_no_gap_or_repeat_under_16_writers(backend: Backend) {
    let api = Api::new(backend).await;
    let mut first = SseClient::open(&api.app, "/events?after=0", None).await;
    let mut writers = JoinSet::new();
    for w in 0..16 {
        let store = Arc::clone(&api.store);
        writers.spawn(async move {
            let new = orch_store::NewItem {
                repo: "shop".into(),
                prefix: orch_core::KeyPrefix::new("SHOP").unwrap(),
                kind: orch_core::ItemKind::Bug,
                title: format!("writer {w}"),
                body: String::new(),
                state: orch_core::ItemState::new(
                    orch_core::TrackName::new("quick"),
                    orch_core::StageName::new("development"),
                ),
            };
            let key = store.create_item(new, Timestamp::from_millis(1)).await.unwrap().key;
            for i in 0..30 {
                let mut e = NewEvent::new(key.clone(), EventKind::ReaperDeferred);
                e.reason = Some(format!("{w}/{i}"));
                store.append_events(&[e], Timestamp::from_millis(i)).await.unwrap();
            }
        });
    }
    let expected = 16 * (2 + 30);
    let mut got = Vec::new();
    for _ in 0..150 {
        let m = first.expect(WAIT).await;
        assert_eq!(m.data["seq"].as_i64(), Some(m.id), "id is the event's seq");
        got.push(m.id);
    }
    drop(first);
    let mut second = SseClient::open(&api.app, "/events", got.last().copied()).await;
    while got.len() < expected {
        got.push(second.expect(WAIT).await.id);
    }
    while writers.join_next().await.is_some() {}
    let all = settled_seqs(api.store.as_ref(), expected).await;
    assert_eq!(got.iter().collect::<BTreeSet<_>>().len(), got.len(), "no event twice");
    assert_eq!(got, all, "the two streams together are the committed log, in stream order");
    // Nothing more arrives: the stream has no stray repeats after the end.
    assert!(tokio::time::timeout(Duration::from_millis(600), second.next()).await.is_err());
}

fn event(key: &ItemKey, reason: &str) -> NewEvent {
    let mut e = NewEvent::new(key.clone(), EventKind::ReaperDeferred);
    e.reason = Some(reason.to_owned());
    e
}

/// With neither `Last-Event-ID` nor `after` a stream starts at the end (only new
/// events); `?after=0` starts at the first event; `?item=` keeps one item's
/// events; `Last-Event-ID` wins over `after`; a malformed or unknown start and a
/// bad item key are 422 naming the field.
async fn events_start_filter_and_errors(backend: Backend) {
    let api = Api::new(backend).await;
    let a: ItemKey = "SHOP-1".parse().unwrap();
    let b: ItemKey = "SHOP-2".parse().unwrap();
    api.store.append_events(&[event(&a, "old")], Timestamp::from_millis(1)).await.unwrap();
    let old = settled_seqs(api.store.as_ref(), 1).await[0];

    let mut new_only = SseClient::open(&api.app, "/events", None).await;
    let mut from_zero = SseClient::open(&api.app, "/events?after=0", None).await;
    let mut only_b = SseClient::open(&api.app, "/events?after=0&item=SHOP-2", None).await;
    let mut header_wins = SseClient::open(&api.app, "/events?after=0", Some(old)).await;
    api.store.append_events(&[event(&a, "a1"), event(&b, "b1")], Timestamp::from_millis(2)).await.unwrap();

    let m = new_only.expect(WAIT).await;
    assert_eq!(m.data["reason"], "a1", "a stream with no start position begins after the events that existed");
    assert_eq!(from_zero.expect(WAIT).await.data["reason"], "old");
    assert_eq!(from_zero.expect(WAIT).await.data["reason"], "a1");
    assert_eq!(from_zero.expect(WAIT).await.data["reason"], "b1");
    let m = only_b.expect(WAIT).await;
    assert_eq!((m.data["reason"].as_str(), m.data["item"].as_str()), (Some("b1"), Some("SHOP-2")));
    assert_eq!(header_wins.expect(WAIT).await.data["reason"], "a1");

    for (uri, last_id, field) in [
        ("/events?after=x", None, "after"),
        ("/events?after=-1", None, "after"),
        ("/events?after=999999", None, "after"),
        ("/events", Some("nope"), "Last-Event-ID"),
        ("/events?item=not%20a%20key", None, "item"),
    ] {
        let mut req = Request::get(uri);
        if let Some(id) = last_id {
            req = req.header("last-event-id", id);
        }
        let res = api.app.clone().oneshot(req.body(Body::empty()).unwrap()).await.unwrap();
        assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY, "{uri}");
        let bytes = axum::body::to_bytes(res.into_body(), usize::MAX).await.unwrap();
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["field"], field, "{uri}: {v}");
    }
}

/// Open streams, idle or mid-flow, end (the body finishes) when the shutdown
/// token fires, so a graceful shutdown is not held up by followers.
async fn streams_end_when_the_server_shuts_down(backend: Backend) {
    let api = Api::new(backend).await;
    let key: ItemKey = "SHOP-1".parse().unwrap();
    let mut idle = SseClient::open(&api.app, "/events", None).await;
    let mut busy = SseClient::open(&api.app, "/events?after=0", None).await;
    api.store.append_events(&[event(&key, "one")], Timestamp::from_millis(1)).await.unwrap();
    assert_eq!(busy.expect(WAIT).await.data["reason"], "one");
    api.stop.cancel();
    for s in [&mut idle, &mut busy] {
        let end = tokio::time::timeout(WAIT, s.next()).await.expect("the stream ended within the deadline");
        assert!(end.is_none(), "no message after shutdown: {end:?}");
    }
}

orch_test_support::on_both_backends!(
    events_resume_with_no_gap_or_repeat_under_16_writers,
    events_start_filter_and_errors,
    streams_end_when_the_server_shuts_down,
);
