//! The item page (`GET /ui/items/{key}`): the item, its actions, its jobs with
//! durations, and its timeline from the event log — transitions, gate results
//! with the tail of their output, reaper decisions, commits, the pull request.
//!
//! The action buttons call the JSON API (`POST /items/{key}/retry` …) from the
//! script, which shows the API's answer, refusal reasons included.

use std::fmt::Write as _;
use std::path::Path as FsPath;

use axum::extract::{Path, State};
use axum::response::Html;
use orch_core::{EventKind, ItemKey, ItemStatus, Timestamp};
use orch_engine::layout::Layout;
use orch_engine::untrusted;
use orch_store::{Event, Item, Job, JobId};
use serde_json::Value;

use super::PageError;
use super::html::{self, Nav, esc};
use crate::AppState;

/// How much of a gate's output the timeline shows.
const GATE_TAIL_BYTES: u64 = 2 * 1024;

/// `GET /ui/items/{key}`.
pub(crate) async fn page(State(state): State<AppState>, Path(raw): Path<String>) -> Result<Html<String>, PageError> {
    let key: ItemKey = raw.parse().map_err(|_| PageError::not_found(format!("no item {raw}")))?;
    let item = state.store.get_item(&key).await?.ok_or_else(|| PageError::not_found(format!("no item {key}")))?;
    let jobs = state.store.jobs_for_item(&key).await?;
    let events = state.store.events_for_item(&key).await?;
    let now = state.clock.now();
    let layout = Layout::new(state.config.data_dir_resolved());

    let k = esc(&key.to_string());
    let status = item.status.as_str();
    let mut body = format!(
        "<nav class=\"crumbs\" aria-label=\"Breadcrumb\"><a href=\"/\">Board</a> › {k}</nav>\
         <h1><span class=\"key\">{k}</span> <span class=\"item-title\">{title}</span></h1>\
         <p class=\"facts\"><span class=\"badge st-{status}\" id=\"item-status\" data-status=\"{status}\">{label}</span> \
         <span>{kind}</span> · <span>repo {repo}</span> · <span>track {track}</span> · \
         <span id=\"item-stage\" data-stage=\"{stage}\">stage {stage}</span> · <span>version {version}</span></p>",
        title = esc(&item.title),
        label = status.replace('_', " "),
        kind = item.kind,
        repo = esc(&item.repo),
        track = esc(item.track.as_str()),
        stage = esc(item.stage.as_str()),
        version = item.version,
    );
    links(&mut body, &item);
    actions(&mut body, &item);
    if !item.body.trim().is_empty() {
        let _ = write!(
            body,
            "<details class=\"item-body\"><summary>Description</summary><pre>{}</pre></details>",
            esc(&item.body)
        );
    }
    jobs_table(&mut body, &jobs, now);
    body.push_str("<h2 id=\"timeline-h\">Timeline</h2><ol class=\"timeline\" aria-labelledby=\"timeline-h\">");
    for e in &events {
        timeline_entry(&mut body, e, &layout).await;
    }
    body.push_str("</ol>");
    let live = format!("item={key}");
    Ok(Html(html::page(&format!("{key} {}", item.title), Nav::Other, Some(&live), Some(now), &body)))
}

fn links(out: &mut String, item: &Item) {
    out.push_str("<p class=\"links\">");
    match &item.branch {
        Some(b) => {
            let _ = write!(out, "Branch <code>{}</code>", esc(b));
            if let Some(sha) = &item.head_sha {
                let _ = write!(out, " at <code title=\"{s}\">{}</code>", esc(short(sha)), s = esc(sha));
            }
        }
        None => out.push_str("No branch yet"),
    }
    if let Some(pr) = &item.pr {
        let _ = write!(
            out,
            " · Pull request {} <span class=\"badge pr-{st}\">{st}</span>",
            pr_ref(&pr.url, &pr.number.to_string()),
            st = esc(&pr.state),
        );
        if let Some(m) = &pr.merge_sha {
            let _ = write!(out, " merged as <code title=\"{s}\">{}</code>", esc(short(m)), s = esc(m));
        }
    }
    out.push_str("</p>");
}

/// A pull request as a link when its URL is http(s) — a `javascript:` URL in a
/// forge's answer must never become a link — and otherwise as its number and
/// URL in text (the local forge's `local://repo/pulls/KEY` has no web page).
fn pr_ref(url: &str, number: &str) -> String {
    let lower = url.trim_start().to_ascii_lowercase();
    if lower.starts_with("https://") || lower.starts_with("http://") {
        format!("<a href=\"{}\" rel=\"noreferrer\">#{}</a>", esc(url), esc(number))
    } else {
        format!("#{} <code>{}</code>", esc(number), esc(url))
    }
}

fn short(sha: &str) -> &str {
    sha.get(..10).unwrap_or(sha)
}

fn actions(out: &mut String, item: &Item) {
    let key = esc(&item.key.to_string());
    let _ = write!(out, "<section class=\"actions\" aria-label=\"Operator actions\" data-key=\"{key}\">");
    for (action, label, hint) in [
        ("retry", "Retry", "run the current stage again"),
        ("approve", "Approve", "let an item waiting for approval go on"),
        ("escalate", "Escalate", "move the item to its full-cycle track"),
        ("cancel", "Cancel", "stop the item for good"),
    ] {
        let primary = match (action, item.status) {
            ("retry", ItemStatus::Blocked) | ("approve", ItemStatus::WaitingApproval) => " primary",
            ("cancel", _) => " danger",
            _ => "",
        };
        let _ = write!(
            out,
            "<button type=\"button\" class=\"action{primary}\" data-action=\"{action}\" title=\"{hint}\">{label}</button>"
        );
    }
    out.push_str(
        "<p id=\"action-result\" class=\"action-result\" role=\"status\" aria-live=\"polite\"></p>\
         <details id=\"token-box\" class=\"token\"><summary>API token</summary>\
         <form id=\"token-form\"><label>Bearer token for this server \
         <input type=\"password\" id=\"token\" name=\"token\" autocomplete=\"off\"></label> \
         <button type=\"submit\">Keep for this tab</button> \
         <button type=\"button\" id=\"token-forget\">Forget</button></form>\
         <p class=\"hint\">Kept in this tab's session storage only; sent as <code>Authorization: Bearer</code> \
         with the actions.</p></details></section>",
    );
}

fn jobs_table(out: &mut String, jobs: &[Job], now: Timestamp) {
    out.push_str(
        "<h2 id=\"jobs-h\">Jobs</h2><div class=\"scroll\"><table class=\"jobs\" aria-labelledby=\"jobs-h\"><thead><tr>\
         <th scope=\"col\">Job</th><th scope=\"col\">Stage</th><th scope=\"col\">Attempt</th>\
         <th scope=\"col\">Status</th><th scope=\"col\">Started</th><th scope=\"col\">Duration</th>\
         <th scope=\"col\">Exit</th><th scope=\"col\">Tokens</th><th scope=\"col\">Cost</th>\
         <th scope=\"col\">Reason</th></tr></thead><tbody>",
    );
    if jobs.is_empty() {
        out.push_str("<tr><td colspan=\"10\">No jobs yet.</td></tr>");
    }
    for j in jobs.iter().rev() {
        let duration = match (j.started_at, j.finished_at) {
            (Some(s), Some(f)) => html::duration(f.since(s)),
            (Some(s), None) => format!("{} so far", html::duration(now.since(s))),
            _ => "—".into(),
        };
        let metric = |name: &str| {
            j.verdict
                .as_ref()
                .and_then(|v| v.get("metrics"))
                .and_then(|m| m.get(name))
                .map_or_else(|| "—".to_owned(), |v| esc(&plain(v)))
        };
        let _ = write!(
            out,
            "<tr data-job=\"{id}\" data-status=\"{st}\"><td><a href=\"/ui/jobs/{id}\">{id}</a></td><td>{stage}</td>\
             <td>{att}</td><td><span class=\"badge jst-{st}\">{st}</span></td><td>{started}</td><td>{duration}</td>\
             <td>{exit}</td><td>{tokens}</td><td>{cost}</td><td class=\"reason\">{reason}</td></tr>",
            id = j.id,
            stage = esc(j.stage.as_str()),
            att = j.attempt,
            st = j.status,
            started = j.started_at.map_or_else(|| "—".into(), html::time),
            exit = j.exit_code.map_or_else(|| "—".into(), |c| c.to_string()),
            // The adapter's measured usage (Claude Code, Codex) when there is
            // one; else what the verdict's metrics say.
            tokens = j.usage.as_ref().map_or_else(|| metric("tokens"), |u| u.total_tokens().to_string()),
            cost = match j.usage.as_ref().and_then(|u| u.cost_usd) {
                Some(c) => format!("${c:.4}"),
                None => metric("cost"),
            },
            reason = esc(j.reason.as_deref().unwrap_or("")),
        );
    }
    out.push_str("</tbody></table></div>");
}

/// A JSON value as text: strings without quotes.
fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn data_str<'a>(e: &'a Event, field: &str) -> Option<&'a str> {
    e.data.get(field).and_then(Value::as_str)
}

async fn timeline_entry(out: &mut String, e: &Event, layout: &Layout) {
    let kind = e.kind.parse::<EventKind>().ok();
    let class = match kind {
        Some(EventKind::GateFailed | EventKind::ItemRolledBack | EventKind::ItemBlocked | EventKind::JobFailed) => {
            "bad"
        }
        Some(
            EventKind::GatePassed
            | EventKind::ItemAdvanced
            | EventKind::ItemDone
            | EventKind::PrMerged
            | EventKind::ItemApproved,
        ) => "good",
        Some(
            EventKind::ReaperDeferred | EventKind::ReaperTookOver | EventKind::ReaperReaped | EventKind::JobFencedOut,
        ) => "reaper",
        _ => "plain",
    };
    let _ = write!(
        out,
        "<li class=\"ev ev-{class}\" data-kind=\"{k}\" data-seq=\"{seq}\">{at} <span class=\"ev-kind\">{k}</span>",
        k = esc(&e.kind),
        seq = e.seq,
        at = html::time(e.at),
    );
    match (&e.from, &e.to) {
        (Some(f), Some(t)) => {
            let _ = write!(out, " <span class=\"ev-move\">{} → {}</span>", esc(f), esc(t));
        }
        (None, Some(t)) => {
            let _ = write!(out, " <span class=\"ev-move\">→ {}</span>", esc(t));
        }
        _ => {}
    }
    if let Some(job) = e.job {
        let _ = write!(out, " <a class=\"ev-job\" href=\"/ui/jobs/{job}\">job {job}</a>");
    }
    if let Some(epoch) = e.epoch {
        let _ = write!(out, " <span class=\"ev-epoch\">epoch {epoch}</span>");
    }
    match kind {
        Some(EventKind::GatePassed | EventKind::GateFailed) => {
            if let Some(gate) = data_str(e, "gate") {
                let _ = write!(out, " <span class=\"ev-gate\">gate <strong>{}</strong></span>", esc(gate));
            }
            if let Some(ms) = e.data.get("duration_ms").and_then(Value::as_i64) {
                let _ = write!(
                    out,
                    " <span>in {}</span>",
                    html::duration(std::time::Duration::from_millis(ms.max(0).unsigned_abs()))
                );
            }
            if let Some(m) = e.data.get("metric").and_then(Value::as_f64) {
                let _ = write!(out, " <span>metric {m}</span>");
            }
        }
        Some(EventKind::VcsCommitted | EventKind::VcsPushed) => {
            if let Some(sha) = data_str(e, "sha") {
                let _ = write!(out, " <code class=\"sha\" title=\"{s}\">{}</code>", esc(short(sha)), s = esc(sha));
            }
            if let Some(b) = data_str(e, "branch") {
                let _ = write!(out, " on <code>{}</code>", esc(b));
            }
        }
        Some(EventKind::PrOpened | EventKind::PrMerged) => {
            if let Some(url) = data_str(e, "url") {
                let n = e.data.get("number").map(plain).unwrap_or_default();
                let _ = write!(out, " PR {}", pr_ref(url, &n));
            }
            for field in ["merge_sha", "head_sha", "sha"] {
                if let Some(sha) = data_str(e, field) {
                    let _ = write!(out, " <code class=\"sha\" title=\"{s}\">{}</code>", esc(short(sha)), s = esc(sha));
                    break;
                }
            }
        }
        _ => {}
    }
    if let Some(r) = &e.reason {
        let _ = write!(out, "<p class=\"ev-reason\">{}</p>", html::log_text(r));
    }
    if let (Some(EventKind::GatePassed | EventKind::GateFailed), Some(job), Some(epoch), Some(gate)) =
        (kind, e.job, e.epoch, data_str(e, "gate"))
    {
        gate_tail(out, layout, job, epoch, gate).await;
    }
    out.push_str("</li>");
}

/// The tail of a gate's output, when this node has its log (gate logs live on
/// the node that ran the gate).
async fn gate_tail(out: &mut String, layout: &Layout, job: JobId, epoch: i64, gate: &str) {
    let path = layout.gate_log(job, epoch, gate);
    match untrusted::try_tail(FsPath::new(&path), GATE_TAIL_BYTES).await {
        Ok(bytes) if !bytes.is_empty() => {
            let _ = write!(
                out,
                "<details class=\"tail\"><summary>output (last {} bytes)</summary><pre>{}</pre></details>",
                bytes.len(),
                html::log_text(&String::from_utf8_lossy(&bytes))
            );
        }
        Ok(_) => {}
        Err(untrusted::ReadError::Missing { .. }) => {
            out.push_str("<p class=\"hint\">output not on this node</p>");
        }
        Err(e) => {
            let _ = write!(out, "<p class=\"hint\">output cannot be shown: {}</p>", esc(&e.to_string()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_http_pull_request_urls_become_links() {
        assert_eq!(pr_ref("https://forge/pr/3", "3"), "<a href=\"https://forge/pr/3\" rel=\"noreferrer\">#3</a>");
        assert_eq!(pr_ref("local://shop/pulls/SHOP-3", "3"), "#3 <code>local://shop/pulls/SHOP-3</code>");
        let evil = pr_ref("javascript:alert(1)//\"<x>", "3");
        assert!(!evil.contains("href") && evil.contains("&lt;x&gt;") && evil.contains("&quot;"), "{evil}");
    }
}
