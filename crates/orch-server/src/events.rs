//! `GET /events`: every event as Server-Sent Events, resumable with no gap and no
//! repeat.
//!
//! Each message is `id: <seq>` and `data: <event JSON>` (the shape of
//! `GET /items/{key}/events`), with no `event:` name so a browser's
//! `EventSource` gets it as a plain `message`; a comment line keeps the
//! connection alive every [`KEEP_ALIVE`]. A client starts after `Last-Event-ID`
//! (what `EventSource` sends on reconnect) or `?after=<seq>`, from the first event
//! with `?after=0`, and at the current end with neither; `?item=KEY` keeps one
//! item's events.
//!
//! The stream reads `Store::events_after`, whose order never goes back (on
//! PostgreSQL too, where seqs commit out of order), from the position of the last
//! event it sent: that is why a reconnect can neither skip nor repeat. A client's
//! seq is turned back into that position by `Store::event_position`.
//!
//! Followers wake on the store's work signal and at least every [`POLL`]; they
//! share one cached look at the stream's head ([`Hub`]), so a thousand idle
//! followers cost a few store reads a second, not thousands. When the node's
//! shutdown token fires every stream ends cleanly.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use orch_core::ItemKey;
use orch_store::{EventPosition, PositionedEvent, Store};
use tokio::sync::{Mutex, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::{ApiError, AppState, shapes};

/// The longest a follower waits before looking for new events when nothing woke
/// it: the latency bound for events written by other processes.
pub(crate) const POLL: Duration = Duration::from_millis(250);
/// How often an idle stream sends a keep-alive comment, so proxies and clients
/// can tell a quiet stream from a dead one.
pub(crate) const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// How long one look at the head serves every follower: far below [`POLL`], so
/// it adds little latency, while bounding head reads to a few per second.
const HEAD_TTL: Duration = Duration::from_millis(50);
/// Events read per store call; a follower far behind catches up page by page.
const PAGE: u32 = 256;

/// What every follower of one server shares: the last look at the head of the
/// stream, so idle followers need not each ask the store.
#[derive(Debug, Default)]
pub(crate) struct Hub {
    head: Mutex<Option<(Instant, EventPosition)>>,
}

impl Hub {
    /// The position of the last settled event, at most [`HEAD_TTL`] old.
    async fn head(&self, store: &dyn Store) -> Result<EventPosition, orch_store::Error> {
        let mut cached = self.head.lock().await;
        if let Some((at, pos)) = *cached
            && at.elapsed() < HEAD_TTL
        {
            return Ok(pos);
        }
        let pos = store.event_head().await?;
        *cached = Some((Instant::now(), pos));
        Ok(pos)
    }
}

#[derive(Debug, Default, serde::Deserialize)]
pub(crate) struct EventsQuery {
    after: Option<String>,
    item: Option<String>,
}

/// `GET /events[?after=SEQ][&item=KEY]`, resuming after `Last-Event-ID` when sent.
#[utoipa::path(get, path = "/events", operation_id = "streamEvents", tag = "events",
    params(
        ("after" = Option<String>, Query, description = "Start after this event's seq (`0`: from the first event); without it and without `Last-Event-ID`, only new events"),
        ("item" = Option<String>, Query, description = "Only this item's events"),
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this event (sent by EventSource on reconnect); wins over `after`"),
    ),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "Server-Sent Events: `id: <seq>` and `data: <event JSON>` per event, until the client or the server goes away", body = String, content_type = "text/event-stream"),
        (status = 400, description = "A malformed query string", body = crate::schema::ErrorBody),
        (status = 401, description = "Reads need the token (`auth_reads`)", body = crate::schema::ErrorBody),
        (status = 422, description = "`after`, `Last-Event-ID` or `item` is not valid", body = crate::schema::ErrorBody),
        (status = 503, description = "The store cannot be reached", body = crate::schema::ErrorBody),
    ))]
pub(crate) async fn stream(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<EventsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query?;
    let item = match q.item.as_deref() {
        None => None,
        Some(raw) => Some(
            raw.parse::<ItemKey>()
                .map_err(|e| ApiError::invalid("item", format!("item {raw:?} is not an item key: {e}")))?,
        ),
    };
    let last_id = headers.get("last-event-id").map(|v| v.to_str().unwrap_or("\u{fffd}").trim().to_owned());
    let start = match (last_id, q.after) {
        (Some(raw), _) => Some(("Last-Event-ID", raw)),
        (None, Some(raw)) => Some(("after", raw)),
        (None, None) => None,
    };
    let cursor =
        match start {
            None => state.events.head(state.store.as_ref()).await?,
            Some((field, raw)) => {
                let seq: i64 = raw.parse().ok().filter(|s| *s >= 0).ok_or_else(|| {
                    ApiError::invalid(field, format!("{field} must be an event seq (0 or more), not {raw:?}"))
                })?;
                if seq == 0 {
                    EventPosition::START
                } else {
                    state.store.event_position(seq).await?.ok_or_else(|| {
                        ApiError::invalid(field, format!("{field} {seq} names no event in this store"))
                    })?
                }
            }
        };
    let follower = Follower {
        store: Arc::clone(&state.store),
        hub: Arc::clone(&state.events),
        signal: state.store.work_signal(),
        stop: state.shutdown.clone(),
        cursor,
        item,
        pending: VecDeque::new(),
        failing: false,
    };
    Ok(Sse::new(follower.into_stream()).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)).into_response())
}

/// One client's place in the stream.
struct Follower {
    store: Arc<dyn Store>,
    hub: Arc<Hub>,
    signal: Arc<Notify>,
    stop: CancellationToken,
    /// The position of the last event handed to `pending` (or the start).
    cursor: EventPosition,
    item: Option<ItemKey>,
    pending: VecDeque<PositionedEvent>,
    /// The last read failed (its warning is logged already).
    failing: bool,
}

impl Follower {
    fn into_stream(self) -> impl Stream<Item = Result<SseEvent, Infallible>> + Send {
        futures::stream::unfold(self, |mut f| async move {
            let event = f.next().await?;
            Some((Ok(event), f))
        })
    }

    /// The next message, waiting for one; `None` once the server shuts down.
    async fn next(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(p) = self.pending.pop_front() {
                return Some(SseEvent::default().id(p.event.seq.to_string()).data(shapes::event(&p.event).to_string()));
            }
            if self.stop.is_cancelled() {
                return None;
            }
            // Registered before the read, so a wake-up during it is not lost.
            let signal = Arc::clone(&self.signal);
            let woken = signal.notified();
            match self.fetch().await {
                Ok(true) => {
                    self.failing = false;
                    continue;
                }
                Ok(false) => self.failing = false,
                // A store that cannot answer now may answer at the next poll; the
                // client keeps its place either way. Logged once per outage, not
                // once per poll of every follower.
                Err(e) => {
                    if !std::mem::replace(&mut self.failing, true) {
                        tracing::warn!(error = %e, "event stream: cannot read events; retrying every poll");
                    }
                }
            }
            tokio::select! {
                () = self.stop.cancelled() => return None,
                () = woken => {}
                () = tokio::time::sleep(POLL) => {}
            }
        }
    }

    /// Reads the next page after the cursor into `pending`; `true` if it got any.
    async fn fetch(&mut self) -> Result<bool, orch_store::Error> {
        let head = self.hub.head(self.store.as_ref()).await?;
        if head <= self.cursor {
            return Ok(false);
        }
        let page = self.store.events_after(self.cursor, self.item.as_ref(), PAGE).await?;
        let full = page.len() == PAGE as usize;
        if let Some(last) = page.last() {
            self.cursor = last.position;
        }
        if !full {
            // Every event up to `head` had settled before this read, so the read
            // saw all of them: a filtered stream may skip past the others.
            self.cursor = self.cursor.max(head);
        }
        self.pending.extend(page);
        Ok(!self.pending.is_empty())
    }
}
