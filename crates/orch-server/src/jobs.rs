//! `/jobs/{id}` and `/jobs/{id}/log`. The log is agent-writable, so it is read
//! through `orch_engine::untrusted`: no link followed, nothing but a regular file
//! read, at most `MAX_LOG_BYTES`, off the runtime's threads.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use orch_engine::untrusted;
use orch_store::{Job, JobId};
use serde_json::Value;

use crate::{ApiError, AppState, shapes};

/// The most of a log one response carries: the last bytes, when a log is longer.
pub const MAX_LOG_BYTES: u64 = 4 * 1024 * 1024;

async fn job(state: &AppState, raw: &str) -> Result<Job, ApiError> {
    let id: i64 = raw.parse().map_err(|_| ApiError::NotFound(format!("no job {raw}")))?;
    state.store.get_job(JobId(id)).await?.ok_or_else(|| ApiError::NotFound(format!("no job {id}")))
}

/// `GET /jobs/{id}`: the job, in the DESIGN §8 shape.
#[utoipa::path(get, path = "/jobs/{id}", operation_id = "getJob", tag = "jobs", params(("id" = i64, Path, description = "The job's id")), security((), ("bearer" = [])),
    responses(
        (status = 200, description = "The job", body = crate::shapes::JobShape),
        (status = 401, description = "Reads need the token (`auth_reads`)", body = crate::schema::ErrorBody),
        (status = 404, description = "No such job", body = crate::schema::ErrorBody),
        (status = 503, description = "The store cannot be reached", body = crate::schema::ErrorBody),
    ))]
pub(crate) async fn show(State(state): State<AppState>, Path(raw): Path<String>) -> Result<Json<Value>, ApiError> {
    Ok(Json(shapes::job(&job(&state, &raw).await?)))
}

#[derive(Debug, Default, serde::Deserialize)]
pub(crate) struct LogQuery {
    tail: Option<String>,
}

/// `GET /jobs/{id}/log[?tail=N]`: the agent's log as text; with `tail`, its last
/// `N` bytes (at most `MAX_LOG_BYTES` either way).
#[utoipa::path(get, path = "/jobs/{id}/log", operation_id = "getJobLog", tag = "jobs", params(("id" = i64, Path, description = "The job's id"), crate::schema::LogParams,
        ("Range" = Option<String>, Header, description = "One `bytes=a-b`, `bytes=a-` or `bytes=-n` range; anything else is ignored"),
    ), security((), ("bearer" = [])),
    description = "The log as text. With `?follow=1` or `Accept: text/event-stream`, Server-Sent Events instead: `data: <line>` with `id: <byte offset after the line>` (resume with `Last-Event-ID`), then `event: end` with `{\"status\": …}` once the job has ended and the log is drained.",
    responses(
        (status = 200, description = "The log's text (its last bytes, at most 4 MiB)", body = String, content_type = "text/plain"),
        (status = 206, description = "The requested byte range, with `Content-Range`", body = String, content_type = "text/plain"),
        (status = 416, description = "The range starts past the log's end (`Content-Range: bytes */<size>`)", body = crate::schema::ErrorBody),
        (status = 400, description = "A malformed query string", body = crate::schema::ErrorBody),
        (status = 401, description = "Reads need the token (`auth_reads`)", body = crate::schema::ErrorBody),
        (status = 404, description = "No such job, or no log yet", body = crate::schema::ErrorBody),
        (status = 409, description = "The agent replaced its log with a link or a non-file", body = crate::schema::ErrorBody),
        (status = 422, description = "`tail` is not a number of bytes", body = crate::schema::ErrorBody),
        (status = 503, description = "The log could not be read in time", body = crate::schema::ErrorBody),
    ))]
pub(crate) async fn log(
    State(state): State<AppState>,
    Path(raw): Path<String>,
    query: Result<Query<LogQuery>, QueryRejection>,
    mode: crate::logs::LogMode,
) -> Result<Response, ApiError> {
    let Query(q) = query?;
    let tail =
        match q.tail.as_deref() {
            None => MAX_LOG_BYTES,
            // The document declares an int64 (what JSON clients can hold): a
            // larger number is refused like any other value out of range.
            Some(t) => t.parse::<i64>().ok().and_then(|n| u64::try_from(n).ok()).ok_or_else(|| {
                ApiError::invalid("tail", "tail must be a number of bytes from 0 to 9223372036854775807")
            })?,
        }
        .min(MAX_LOG_BYTES);
    let job = job(&state, &raw).await?;
    // A follow (SSE) or a `Range` request is served by `logs`.
    if let Some(response) = mode.respond(&state, job.clone()).await {
        return response;
    }
    let path = crate::logs::log_path(&job)?;
    let bytes = untrusted::try_tail(&path, tail).await.map_err(|e| crate::logs::read_error(&job, e))?;
    // A tail may start inside a multi-byte character: decode lossily so the
    // response is always valid UTF-8 text.
    let text = String::from_utf8_lossy(&bytes).into_owned();
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response())
}
