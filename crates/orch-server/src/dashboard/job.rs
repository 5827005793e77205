//! The job log page (`GET /ui/jobs/{id}`): a finished job's whole log (its last
//! `MAX_LOG_BYTES`), or, for a running one, a pane the script fills by following
//! `GET /jobs/{id}/log?follow=1` over SSE until the job ends. The log is agent
//! output: read through `orch_engine::untrusted`, stripped of control sequences
//! and escaped here, and appended as text (never markup) by the script.

use std::fmt::Write as _;
use std::path::Path as FsPath;

use axum::extract::{Path, State};
use axum::response::Html;
use orch_core::JobStatus;
use orch_engine::untrusted::{self, ReadError};
use orch_store::JobId;

use super::PageError;
use super::html::{self, Nav, esc};
use crate::{AppState, MAX_LOG_BYTES};

/// `GET /ui/jobs/{id}`.
pub(crate) async fn page(State(state): State<AppState>, Path(raw): Path<String>) -> Result<Html<String>, PageError> {
    let id: i64 = raw.parse().map_err(|_| PageError::not_found(format!("no job {raw}")))?;
    let job = state.store.get_job(JobId(id)).await?.ok_or_else(|| PageError::not_found(format!("no job {id}")))?;
    let key = esc(&job.item.to_string());
    let now = state.clock.now();
    let duration = match (job.started_at, job.finished_at) {
        (Some(s), Some(f)) => html::duration(f.since(s)),
        (Some(s), None) => format!("{} so far", html::duration(now.since(s))),
        _ => "not started".into(),
    };
    let mut body = format!(
        "<nav class=\"crumbs\" aria-label=\"Breadcrumb\"><a href=\"/\">Board</a> › <a href=\"/ui/items/{key}\">{key}</a> \
         › job {id}</nav><h1>Job {id} <span class=\"badge jst-{st}\" id=\"job-status\" data-status=\"{st}\">{st}</span></h1>\
         <p class=\"facts\">item <a href=\"/ui/items/{key}\">{key}</a> · stage {stage} · attempt {att} · owner {owner} · \
         epoch {epoch} · {duration}{exit}</p>",
        st = job.status,
        stage = esc(job.stage.as_str()),
        att = job.attempt,
        owner = esc(job.owner.as_deref().unwrap_or("—")),
        epoch = job.epoch,
        exit = job.exit_code.map(|c| format!(" · exit {c}")).unwrap_or_default(),
    );
    if let Some(r) = &job.reason {
        let _ = write!(body, "<p class=\"reason\">{}</p>", html::log_text(r));
    }
    let live_item = format!("item={}", job.item);
    let running = matches!(job.status, JobStatus::Running | JobStatus::Finishing);
    // A job with a log to follow is followed; one that has none yet (queued, or
    // claimed but its agent not started) refreshes with its item's events until
    // it has.
    let waiting = job.status == JobStatus::Queued || (running && job.log_path.is_none());
    let live = waiting.then_some(live_item.as_str());
    if running && job.log_path.is_some() {
        let _ = write!(
            body,
            "<h2 id=\"log-h\">Log <span class=\"follow-state\" id=\"follow-state\" role=\"status\" aria-live=\"polite\">\
             following</span></h2><pre class=\"log\" id=\"log\" tabindex=\"0\" aria-labelledby=\"log-h\" \
             data-follow=\"/jobs/{id}/log?follow=1\"></pre>"
        );
    } else if waiting {
        body.push_str("<p class=\"hint\">Not started yet: the log appears when the agent starts.</p>");
    } else {
        body.push_str("<h2 id=\"log-h\">Log</h2>");
        match job.log_path.as_deref() {
            None => body.push_str("<p class=\"hint\">This job never wrote a log.</p>"),
            Some(path) => match untrusted::try_tail(FsPath::new(path), MAX_LOG_BYTES).await {
                Ok(bytes) => {
                    let _ = write!(
                        body,
                        "<pre class=\"log\" id=\"log\" tabindex=\"0\" aria-labelledby=\"log-h\">{}</pre>",
                        html::log_text(&String::from_utf8_lossy(&bytes))
                    );
                }
                Err(ReadError::Missing { .. }) => {
                    body.push_str("<p class=\"hint\">The log is not on this node's disk.</p>");
                }
                Err(e) => {
                    let _ = write!(body, "<p class=\"error\">The log cannot be shown: {}</p>", esc(&e.to_string()));
                }
            },
        }
    }
    Ok(Html(html::page(&format!("job {id}"), Nav::Other, live, Some(now), &body)))
}
