//! The health page (`GET /ui/health`): the reaper block of `GET /queue` (the same
//! document, built by `queue::document`), running jobs with their lease expiry,
//! nodes with their clock offset, and charts of the last hour's throughput and
//! stage durations computed from the event log.

use std::fmt::Write as _;
use std::time::Duration;

use axum::extract::State;
use axum::response::Html;
use orch_core::Timestamp;
use orch_engine::Node;
use orch_store::JobId;
use serde_json::Value;

use super::PageError;
use super::charts;
use super::html::{self, Nav, esc};
use super::window;
use crate::AppState;
use crate::queue::{self, CLOCK_OFFSET_BOUND_MS};

/// The charts' window.
const WINDOW: Duration = Duration::from_secs(3600);
/// The most events the charts read; past it they say so.
const EVENTS_MAX: usize = 50_000;
/// The most jobs whose stage is looked up one by one (those queued before the window).
const LOOKUPS_MAX: usize = 200;

/// `GET /ui/health`.
pub(crate) async fn page(State(state): State<AppState>) -> Result<Html<String>, PageError> {
    // The store's time (this clock plus the node's measured offset to it), the
    // time leases are stamped and judged in, as `GET /queue` does.
    let offset_ms = state.node.as_ref().map_or(0, Node::clock_offset_ms);
    let now = Timestamp::from_millis(state.clock.now().as_millis() + offset_ms);
    let doc = queue::document(state.store.as_ref(), &state.config, now).await?;
    let stats = state.store.queue_stats().await?;
    let nodes = state.store.nodes().await?;

    let mut body = String::from("<h1>Health</h1>");
    reaper_block(&mut body, &doc);

    body.push_str(
        "<h2 id=\"running-h\">Running jobs</h2><div class=\"scroll\"><table id=\"running\" aria-labelledby=\"running-h\">\
         <thead><tr><th scope=\"col\">Job</th><th scope=\"col\">Item</th><th scope=\"col\">Stage</th>\
         <th scope=\"col\">Status</th><th scope=\"col\">Owner</th><th scope=\"col\">Epoch</th>\
         <th scope=\"col\">Running for</th><th scope=\"col\">Lease expires</th></tr></thead><tbody>",
    );
    if stats.active_jobs.is_empty() {
        body.push_str("<tr><td colspan=\"8\">Nothing running.</td></tr>");
    }
    for j in &stats.active_jobs {
        let lease = match j.lease_expires_at {
            Some(t) if t >= now => format!("in {} ({})", html::duration(t.since(now)), html::time(t)),
            Some(t) => format!("<strong class=\"bad\">expired {} ago</strong>", html::duration(now.since(t))),
            None => "—".into(),
        };
        let _ = write!(
            body,
            "<tr><td><a href=\"/ui/jobs/{id}\">{id}</a></td><td><a href=\"/ui/items/{k}\">{k}</a></td><td>{stage}</td>\
             <td><span class=\"badge jst-{st}\">{st}</span></td><td>{owner}</td><td>{epoch}</td><td>{ran}</td>\
             <td>{lease}</td></tr>",
            id = j.id,
            k = esc(&j.item.to_string()),
            stage = esc(j.stage.as_str()),
            st = j.status,
            owner = esc(j.owner.as_deref().unwrap_or("—")),
            epoch = j.epoch,
            ran = j.started_at.map_or_else(|| "—".into(), |s| html::duration(now.since(s))),
        );
    }
    body.push_str("</tbody></table></div>");

    body.push_str(
        "<h2 id=\"nodes-h\">Nodes</h2><div class=\"scroll\"><table id=\"nodes\" aria-labelledby=\"nodes-h\"><thead><tr>\
         <th scope=\"col\">Node</th><th scope=\"col\">Host</th><th scope=\"col\">Pid</th><th scope=\"col\">State</th>\
         <th scope=\"col\">Last seen</th><th scope=\"col\">Clock offset</th></tr></thead><tbody>",
    );
    for n in &nodes {
        let state_text = match n.stopped_at {
            Some(t) => format!("stopped {}", html::time(t)),
            None => format!("up since {}", html::time(n.started_at)),
        };
        let over = n.clock_offset_ms.abs() > CLOCK_OFFSET_BOUND_MS;
        let _ = write!(
            body,
            "<tr><td>{id}</td><td>{host}</td><td>{pid}</td><td>{state_text}</td><td>{seen} ago</td>\
             <td class=\"{cls}\">{off} ms{warn}</td></tr>",
            id = esc(&n.id),
            host = esc(&n.host),
            pid = n.pid,
            seen = html::duration(now.since(n.last_seen)),
            cls = if over { "bad" } else { "" },
            off = n.clock_offset_ms,
            warn = if over { format!(" (over the {CLOCK_OFFSET_BOUND_MS} ms bound)") } else { String::new() },
        );
    }
    body.push_str("</tbody></table></div>");

    let since = now.sub(WINDOW);
    let (events, capped) = window::events_from(state.store.as_ref(), since, EVENTS_MAX).await?;
    body.push_str("<h2>The last hour</h2><div class=\"charts\">");
    let moved = charts::throughput(&events, since, now, Duration::from_secs(300));
    let total: f64 = moved.iter().map(|b| b.value).sum();
    body.push_str(&charts::bars(
        "chart-throughput",
        &format!("Items moved on per 5 minutes, last hour ({total} in all)"),
        &moved,
    ));
    let mut runs = Vec::new();
    let mut lookups = 0;
    for (job, (stage, d)) in charts::job_runs(&events) {
        let stage = match stage {
            Some(s) => Some(s),
            None if lookups < LOOKUPS_MAX => {
                lookups += 1;
                state.store.get_job(JobId(job)).await?.map(|j| j.stage.to_string())
            }
            None => None,
        };
        if let Some(s) = stage {
            runs.push((s, d));
        }
    }
    let mut order: Vec<String> = Vec::new();
    for stage in state.config.tracks.values().flat_map(|t| t.stages.iter()) {
        if !order.iter().any(|s| s == stage.as_str()) {
            order.push(stage.to_string());
        }
    }
    let durations = charts::stage_durations(&runs, &order);
    if durations.is_empty() {
        body.push_str("<p class=\"empty\" id=\"chart-durations\">No job ran in the last hour.</p>");
    } else {
        body.push_str(&charts::bars(
            "chart-durations",
            "Mean agent run time per stage, last hour (seconds)",
            &durations,
        ));
    }
    body.push_str("</div>");
    if capped {
        let _ = write!(body, "<p class=\"note\">The charts read the first {EVENTS_MAX} events of the hour.</p>");
    }
    Ok(Html(html::page("Health", Nav::Health, Some(""), Some(now), &body)))
}

fn reaper_block(out: &mut String, doc: &Value) {
    let r = &doc["reaper"];
    let show = |v: &Value| match v {
        Value::Null => "—".to_owned(),
        Value::String(s) => esc(s),
        other => esc(&other.to_string()),
    };
    let from = match &doc["counters_from"] {
        Value::String(c) if c == "cluster" => "counters of the whole cluster, kept in the store".to_owned(),
        Value::String(id) => format!("counters of node {}", esc(id)),
        _ => "counters unknown".into(),
    };
    let _ = write!(
        out,
        "<h2 id=\"reaper-h\">Reaper</h2><p class=\"hint\">{from}</p><dl class=\"reaper\" id=\"reaper\" \
         aria-labelledby=\"reaper-h\">"
    );
    for (key, label) in [
        ("interval_s", "interval (s)"),
        ("finalize_grace_s", "finalize grace (s)"),
        ("max_running_s", "max running (s)"),
        ("finalizer_liveness_enabled", "finalizer liveness"),
        ("finalizer_defers_total", "finalizer defers"),
        ("finalizer_owned", "finalizations owned"),
        ("last_pass_at", "last pass"),
    ] {
        let _ = write!(out, "<div data-key=\"{key}\"><dt>{label}</dt><dd>{}</dd></div>", show(&r[key]));
    }
    for tier in ["tier1", "tier2", "tier3"] {
        let _ = write!(
            out,
            "<div data-key=\"reaped_{tier}\"><dt>reaped, {tier}</dt><dd>{}</dd></div>",
            show(&r["reaped_total"][tier])
        );
    }
    let _ = write!(
        out,
        "<div data-key=\"lease\"><dt>lease ttl / heartbeat (s)</dt><dd>{} / {}</dd></div></dl>",
        show(&doc["lease"]["ttl_s"]),
        show(&doc["lease"]["heartbeat_s"])
    );
}
