//! The two other ways to read `GET /jobs/{id}/log`: a byte `Range`, and a live
//! follow as Server-Sent Events (`Accept: text/event-stream` or `?follow=1`).
//! `jobs::log` hands a request here when it asks for either, and serves the
//! plain text itself otherwise.
//!
//! The log is agent-writable and hostile: every read goes through
//! `orch_engine::untrusted::try_range` (no link followed, nothing but a regular
//! file, bounded, off the runtime's threads). A follower reads the file from its
//! offset every [`POLL`] and sends each complete line as `id: <byte offset after
//! the line>` + `data: <line>`, so `Last-Event-ID` resumes at the next line;
//! once the job has ended and the log is drained it sends `event: end` with
//! `data: {"status": "<job status>"}` and the stream ends. A log the agent turns
//! into a link or a non-file ends the stream with `event: error`.

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use orch_engine::untrusted::{self, ReadError};
use orch_store::{Job, JobId, Store};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::events::KEEP_ALIVE;
use crate::{ApiError, AppState, MAX_LOG_BYTES};

/// How often a follower looks for new lines and for the job's end.
const POLL: Duration = Duration::from_millis(250);
/// The most read from the log per look; a longer line is sent in pieces this size.
const CHUNK: u64 = 64 * 1024;

/// What `GET /jobs/{id}/log` may ask besides `?tail=`: a follow, or a range.
#[derive(Debug, Default)]
pub(crate) struct LogMode {
    follow: bool,
    /// `Last-Event-ID`: the byte offset a reconnecting follower resumes at.
    resume: Option<String>,
    range: Option<String>,
}

#[derive(Debug, Default, serde::Deserialize)]
struct FollowQuery {
    follow: Option<String>,
}

impl<S: Send + Sync> FromRequestParts<S> for LogMode {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let query: Result<Query<FollowQuery>, QueryRejection> = Query::from_request_parts(parts, state).await;
        let Query(q) = query?;
        let follow_query = match q.follow.as_deref() {
            None | Some("0" | "false") => false,
            Some("" | "1" | "true") => true,
            Some(other) => return Err(ApiError::invalid("follow", format!("follow must be 1 or 0, not {other:?}"))),
        };
        let accepts_sse = header_str(&parts.headers, header::ACCEPT).is_some_and(|a| a.contains("text/event-stream"));
        Ok(Self {
            follow: follow_query || accepts_sse,
            resume: header_str(&parts.headers, "last-event-id").map(str::to_owned),
            range: header_str(&parts.headers, header::RANGE).map(str::to_owned),
        })
    }
}

fn header_str(headers: &HeaderMap, name: impl header::AsHeaderName) -> Option<&str> {
    headers.get(name).map(|v| v.to_str().unwrap_or("\u{fffd}"))
}

impl LogMode {
    /// The response for a follow or a range request; `None` for plain text.
    pub(crate) async fn respond(&self, state: &AppState, job: Job) -> Option<Result<Response, ApiError>> {
        if self.follow {
            return Some(self.follow(state, job));
        }
        let range = self.range.as_deref()?;
        // A Range this server does not understand is ignored (RFC 9110 §14.2).
        let spec = ByteRange::parse(range)?;
        Some(ranged(job, spec).await)
    }

    fn follow(&self, state: &AppState, job: Job) -> Result<Response, ApiError> {
        let offset = match self.resume.as_deref() {
            None => 0,
            Some(raw) => raw.trim().parse::<u64>().map_err(|_| {
                ApiError::invalid("Last-Event-ID", format!("Last-Event-ID must be a byte offset, not {raw:?}"))
            })?,
        };
        let follower = Follower {
            store: Arc::clone(&state.store),
            stop: state.shutdown.clone(),
            job: job.id,
            path: job.log_path.map(PathBuf::from),
            offset,
            partial: Vec::new(),
            pending: std::collections::VecDeque::new(),
            done: false,
        };
        Ok(Sse::new(follower.into_stream()).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)).into_response())
    }
}

/// One `bytes=` range of RFC 9110 §14.1.2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ByteRange {
    /// `bytes=a-b` (`b` inclusive) or `bytes=a-` (`None`).
    From(u64, Option<u64>),
    /// `bytes=-n`: the last `n` bytes.
    Suffix(u64),
}

impl ByteRange {
    /// One range in the `bytes` unit; `None` for anything else (another unit,
    /// several ranges, bad syntax), which the caller ignores.
    fn parse(raw: &str) -> Option<Self> {
        let spec = raw.trim().strip_prefix("bytes=")?.trim();
        if spec.contains(',') {
            return None;
        }
        let (a, b) = spec.split_once('-')?;
        let (a, b) = (a.trim(), b.trim());
        if a.is_empty() {
            return Some(Self::Suffix(b.parse().ok()?));
        }
        let first: u64 = a.parse().ok()?;
        if b.is_empty() {
            return Some(Self::From(first, None));
        }
        let last: u64 = b.parse().ok()?;
        (last >= first).then_some(Self::From(first, Some(last)))
    }

    /// The first byte and length this range selects of `size` bytes, at most
    /// `MAX_LOG_BYTES`; `None` if it selects none (416).
    fn resolve(self, size: u64) -> Option<(u64, u64)> {
        let (first, last) = match self {
            Self::From(first, _) if first >= size => return None,
            Self::From(first, last) => (first, last.map_or(size - 1, |l| l.min(size - 1))),
            Self::Suffix(0) => return None,
            Self::Suffix(_) if size == 0 => return None,
            Self::Suffix(n) => (size.saturating_sub(n), size - 1),
        };
        Some((first, (last - first + 1).min(MAX_LOG_BYTES)))
    }
}

/// 206 with the bytes a range selects, or 416 when it selects none.
async fn ranged(job: Job, spec: ByteRange) -> Result<Response, ApiError> {
    let path = log_path(&job)?;
    let size = match untrusted::try_range(&path, u64::MAX, 0).await {
        Ok((_, size)) => size,
        Err(e) => return Err(read_error(&job, e)),
    };
    let Some((first, len)) = spec.resolve(size) else {
        let mut res = (StatusCode::RANGE_NOT_SATISFIABLE, "").into_response();
        if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
            res.headers_mut().insert(header::CONTENT_RANGE, v);
        }
        return Ok(res);
    };
    let (bytes, size_now) = untrusted::try_range(&path, first, len).await.map_err(|e| read_error(&job, e))?;
    if bytes.is_empty() {
        // The file shrank between the two reads: nothing of the range is left.
        return Err(ApiError::Conflict(format!("job {}'s log shrank while it was read; ask again", job.id)));
    }
    let last = first + bytes.len() as u64 - 1;
    let content_range = format!("bytes {first}-{last}/{size_now}");
    Ok((
        StatusCode::PARTIAL_CONTENT,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8".to_owned()), (header::CONTENT_RANGE, content_range)],
        bytes,
    )
        .into_response())
}

pub(crate) fn log_path(job: &Job) -> Result<PathBuf, ApiError> {
    job.log_path
        .as_deref()
        .map(PathBuf::from)
        .ok_or_else(|| ApiError::NotFound(format!("job {} has no log yet (status {})", job.id, job.status)))
}

/// The API's answer to a log that cannot be read, for every way of reading it.
pub(crate) fn read_error(job: &Job, e: ReadError) -> ApiError {
    match e {
        ReadError::Missing { .. } => ApiError::NotFound(format!("job {}'s log has not been written yet", job.id)),
        e @ (ReadError::Link { .. } | ReadError::NotRegular { .. }) => {
            // The agent replaced its log with something orch will not read: the
            // job's state, not the client's mistake nor a server fault.
            ApiError::Conflict(format!("job {}'s log cannot be read safely: {e}", job.id))
        }
        e @ ReadError::TimedOut { .. } => ApiError::Unavailable(e.to_string()),
        e => ApiError::Internal(e.to_string()),
    }
}

/// One client following one job's log.
struct Follower {
    store: Arc<dyn Store>,
    stop: CancellationToken,
    job: JobId,
    /// Known once the job has started; looked up again until then.
    path: Option<PathBuf>,
    /// The byte offset after the last byte read.
    offset: u64,
    /// Bytes read after the last newline, not yet sent.
    partial: Vec<u8>,
    pending: std::collections::VecDeque<SseEvent>,
    /// The end (or error) message is queued: stop after `pending` drains.
    done: bool,
}

impl Follower {
    fn into_stream(self) -> impl Stream<Item = Result<SseEvent, Infallible>> + Send {
        futures::stream::unfold(self, |mut f| async move {
            let event = f.next().await?;
            Some((Ok(event), f))
        })
    }

    async fn next(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(e) = self.pending.pop_front() {
                return Some(e);
            }
            if self.done || self.stop.is_cancelled() {
                return None;
            }
            match self.look().await {
                Ok(true) => continue,
                Ok(false) => {}
                Err(message) => {
                    self.pending
                        .push_back(SseEvent::default().event("error").data(json!({ "error": message }).to_string()));
                    self.done = true;
                    continue;
                }
            }
            tokio::select! {
                () = self.stop.cancelled() => return None,
                () = tokio::time::sleep(POLL) => {}
            }
        }
    }

    /// One look: the job's state first, then the log, so an ended job's last
    /// lines are read after its end is known and none is missed. `Ok(true)` if
    /// anything was queued; `Err` ends the stream with that message.
    async fn look(&mut self) -> Result<bool, String> {
        let job = match self.store.get_job(self.job).await {
            Ok(Some(job)) => job,
            Ok(None) => return Err(format!("job {} no longer exists", self.job)),
            Err(e) => {
                tracing::debug!(job = %self.job, error = %e, "log follow: cannot read the job; retrying");
                return Ok(false);
            }
        };
        if self.path.is_none() {
            self.path = job.log_path.as_deref().map(PathBuf::from);
        }
        let ended = job.status.is_ended();
        let mut drained = true;
        if let Some(path) = self.path.clone() {
            match untrusted::try_range(&path, self.offset, CHUNK).await {
                Ok((bytes, size)) => {
                    if size < self.offset {
                        // Truncated under us: carry on from its new end.
                        tracing::warn!(job = %self.job, "log follow: the log shrank; following from its new end");
                        self.offset = size;
                        self.partial.clear();
                    }
                    drained = self.offset + bytes.len() as u64 >= size;
                    self.take(&bytes, ended && drained);
                }
                Err(ReadError::Missing { .. }) => {}
                Err(e @ ReadError::TimedOut { .. }) => {
                    tracing::debug!(job = %self.job, error = %e, "log follow: read timed out; retrying");
                    return Ok(false);
                }
                Err(e) => return Err(format!("job {}'s log cannot be read safely: {e}", self.job)),
            }
        }
        if ended && drained {
            self.pending.push_back(SseEvent::default().event("end").data(json!({ "status": job.status }).to_string()));
            self.done = true;
        }
        Ok(!self.pending.is_empty())
    }

    /// Queues each complete line of `bytes` (after what `partial` holds); with
    /// `flush`, the unterminated rest too. A line that fills a whole chunk
    /// without a newline is sent as it is, so memory stays bounded.
    fn take(&mut self, bytes: &[u8], flush: bool) {
        self.partial.extend_from_slice(bytes);
        let mut start = 0;
        while let Some(nl) = self.partial[start..].iter().position(|b| *b == b'\n') {
            let end = start + nl + 1;
            self.line(start, end);
            start = end;
        }
        let rest = self.partial.len() - start;
        if rest > 0 && (flush || rest as u64 >= CHUNK) {
            self.line(start, self.partial.len());
            start = self.partial.len();
        }
        self.partial.drain(..start);
    }

    /// Queues `partial[start..end]` as one message and moves the offset past it.
    fn line(&mut self, start: usize, end: usize) {
        self.offset += (end - start) as u64;
        let raw = &self.partial[start..end];
        let raw = raw.strip_suffix(b"\n").unwrap_or(raw);
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        // A lone CR (a progress bar) would end the SSE line early: send it as a
        // newline, which SSE carries as a second data line of the same message.
        let text = String::from_utf8_lossy(raw).replace('\r', "\n");
        self.pending.push_back(SseEvent::default().id(self.offset.to_string()).data(text));
    }
}

#[cfg(test)]
mod tests {
    use super::ByteRange;

    #[test]
    fn ranges_parse_and_resolve_like_rfc_9110() {
        assert_eq!(ByteRange::parse("bytes=0-9"), Some(ByteRange::From(0, Some(9))));
        assert_eq!(ByteRange::parse("bytes=5-"), Some(ByteRange::From(5, None)));
        assert_eq!(ByteRange::parse("bytes=-3"), Some(ByteRange::Suffix(3)));
        for ignored in ["items=0-1", "bytes=1-0", "bytes=0-1,4-5", "bytes=x-1", "bytes=-", "0-1"] {
            assert_eq!(ByteRange::parse(ignored), None, "{ignored}");
        }
        assert_eq!(ByteRange::From(0, Some(9)).resolve(5), Some((0, 5)));
        assert_eq!(ByteRange::From(2, None).resolve(5), Some((2, 3)));
        assert_eq!(ByteRange::Suffix(3).resolve(5), Some((2, 3)));
        assert_eq!(ByteRange::Suffix(9).resolve(5), Some((0, 5)));
        assert_eq!(ByteRange::From(5, None).resolve(5), None);
        assert_eq!(ByteRange::Suffix(0).resolve(5), None);
        assert_eq!(ByteRange::Suffix(1).resolve(0), None);
    }
}
