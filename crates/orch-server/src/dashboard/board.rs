//! The board (`GET /`): a column per stage of each track, a card per open item.
//! Done and cancelled items collapse into counts that link to the same board
//! filtered to them. Filters (`?repo=&kind=&status=`) are a plain GET form, so
//! they work without the script and can be bookmarked.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use axum::extract::{Query, State};
use axum::response::Html;
use orch_core::{EventKind, ItemKind, ItemStatus, Timestamp};
use orch_store::{Event, Item, ItemFilter, Page, Store};

use super::PageError;
use super::html::{self, Nav, esc};
use crate::AppState;

/// The most cards one board shows; past it the board says how many it left out.
const CARDS_MAX: usize = 500;
/// Counting done items with a repo or kind filter reads them: stop at this many.
const DONE_COUNT_MAX: u32 = 1_000;

/// The board's filters, as the form sends them (an empty value means "any").
#[derive(Debug, Default, serde::Deserialize)]
pub(crate) struct BoardQuery {
    repo: Option<String>,
    kind: Option<String>,
    status: Option<String>,
}

fn non_empty(v: Option<&String>) -> Option<&str> {
    v.map(String::as_str).filter(|s| !s.is_empty())
}

fn parse<T: std::str::FromStr>(field: &str, v: Option<&String>) -> Result<Option<T>, PageError>
where
    T::Err: std::fmt::Display,
{
    non_empty(v).map(|s| s.parse::<T>().map_err(|e| PageError::bad_request(format!("filter {field}: {e}")))).transpose()
}

/// What a card shows beyond the item itself, read from the item's events.
struct CardFacts {
    /// When the item entered its current stage (or was created).
    since: Timestamp,
    /// The last gate that ran: (gate, passed, reason).
    last_gate: Option<(String, bool, Option<String>)>,
    /// Why a blocked item is blocked (its last `item.blocked` event's reason).
    blocked_why: Option<String>,
}

fn card_facts(item: &Item, events: &[Event]) -> CardFacts {
    let moved = |k: &str| {
        matches!(
            k.parse::<EventKind>(),
            Ok(EventKind::ItemCreated
                | EventKind::ItemAdvanced
                | EventKind::ItemRolledBack
                | EventKind::ItemEscalated
                | EventKind::ItemRetried)
        )
    };
    let since = events.iter().rev().find(|e| moved(&e.kind)).map_or(item.created_at, |e| e.at);
    let last_gate = events.iter().rev().find_map(|e| match e.kind.parse::<EventKind>() {
        Ok(k @ (EventKind::GatePassed | EventKind::GateFailed)) => Some((
            e.data.get("gate").and_then(|g| g.as_str()).unwrap_or("gate").to_owned(),
            k == EventKind::GatePassed,
            e.reason.clone(),
        )),
        _ => None,
    });
    let blocked_why = (item.status == ItemStatus::Blocked)
        .then(|| events.iter().rev().find(|e| e.kind == EventKind::ItemBlocked.as_str()).and_then(|e| e.reason.clone()))
        .flatten();
    CardFacts { since, last_gate, blocked_why }
}

/// Every item matching `filter` with one of `statuses`, at most `max`, in key order.
async fn items_with(
    store: &dyn Store,
    base: &ItemFilter,
    statuses: &[ItemStatus],
    max: usize,
) -> Result<(Vec<Item>, bool), orch_store::Error> {
    let mut all = Vec::new();
    let mut truncated = false;
    for status in statuses {
        let filter = ItemFilter { status: Some(*status), ..base.clone() };
        let limit = u32::try_from(max + 1).unwrap_or(u32::MAX);
        let mut items = store.list_items(&filter, Page { offset: 0, limit }).await?;
        truncated |= items.len() > max;
        items.truncate(max);
        all.extend(items);
    }
    all.sort_by(|a, b| a.key.cmp(&b.key));
    truncated |= all.len() > max;
    all.truncate(max);
    Ok((all, truncated))
}

/// How many items with `status` match the filter, and whether that is a floor.
async fn count(state: &AppState, base: &ItemFilter, status: ItemStatus) -> Result<(i64, bool), orch_store::Error> {
    if base.repo.is_none() && base.kind.is_none() {
        let stats = state.store.queue_stats().await?;
        return Ok((stats.items_by_status.get(status.as_str()).copied().unwrap_or(0), false));
    }
    let filter = ItemFilter { status: Some(status), ..base.clone() };
    let n = state.store.list_items(&filter, Page { offset: 0, limit: DONE_COUNT_MAX + 1 }).await?.len();
    let n = i64::try_from(n).unwrap_or(i64::MAX);
    Ok((n.min(i64::from(DONE_COUNT_MAX)), n > i64::from(DONE_COUNT_MAX)))
}

const OPEN: [ItemStatus; 4] =
    [ItemStatus::Blocked, ItemStatus::WaitingApproval, ItemStatus::Running, ItemStatus::Queued];

/// `GET /?repo=&kind=&status=`: the board.
pub(crate) async fn page(
    State(state): State<AppState>,
    query: Result<Query<BoardQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Html<String>, PageError> {
    let Query(q) = query.map_err(|e| PageError::bad_request(e.body_text()))?;
    let kind = parse::<ItemKind>("kind", q.kind.as_ref())?;
    let status = parse::<ItemStatus>("status", q.status.as_ref())?;
    let repo = non_empty(q.repo.as_ref()).map(str::to_owned);
    if let Some(r) = &repo
        && !state.config.repos.iter().any(|c| &c.name == r)
    {
        return Err(PageError::bad_request(format!("filter repo: no repo {r} in the config")));
    }
    let base = ItemFilter { repo: repo.clone(), kind, ..ItemFilter::default() };
    let statuses: Vec<ItemStatus> = status.map_or_else(|| OPEN.to_vec(), |s| vec![s]);
    let (items, truncated) = items_with(state.store.as_ref(), &base, &statuses, CARDS_MAX).await?;
    let now = state.clock.now();
    let mut cards: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for item in &items {
        let events = state.store.events_for_item(&item.key).await?;
        let facts = card_facts(item, &events);
        cards.entry((item.track.to_string(), item.stage.to_string())).or_default().push(card(item, &facts, now));
    }

    let mut body = String::new();
    body.push_str("<h1>Board</h1>");
    filters(&mut body, &state, &q);
    if status.is_none() {
        let (done, done_floor) = count(&state, &base, ItemStatus::Done).await?;
        let (cancelled, cancelled_floor) = count(&state, &base, ItemStatus::Cancelled).await?;
        let plus = |f: bool| if f { "+" } else { "" };
        let link = |s: ItemStatus| {
            let mut params = vec![format!("status={s}")];
            if let Some(r) = &repo {
                params.push(format!("repo={}", url_part(r)));
            }
            if let Some(k) = kind {
                params.push(format!("kind={k}"));
            }
            format!("/?{}", params.join("&amp;"))
        };
        let _ = write!(
            body,
            "<p class=\"closed\"><a id=\"done-count\" data-count=\"{done}\" href=\"{}\">{done}{} done</a> · \
             <a id=\"cancelled-count\" data-count=\"{cancelled}\" href=\"{}\">{cancelled}{} cancelled</a></p>",
            link(ItemStatus::Done),
            plus(done_floor),
            link(ItemStatus::Cancelled),
            plus(cancelled_floor),
        );
    }
    if truncated {
        let _ = write!(
            body,
            "<p class=\"note\">Showing the first {CARDS_MAX} items; narrow the filters to see the rest.</p>"
        );
    }
    let mut empty_tracks = Vec::new();
    for (track, cfg) in &state.config.tracks {
        let mut stages: Vec<String> = cfg.stages.iter().map(ToString::to_string).collect();
        // A stage the config no longer lists still shows the items in it.
        for (t, s) in cards.keys() {
            if t == track.as_str() && !stages.contains(s) {
                stages.push(s.clone());
            }
        }
        if !cards.keys().any(|(t, _)| t == track.as_str()) {
            // A track with nothing open is one line, not a row of empty columns.
            empty_tracks.push(format!(
                "<li data-track=\"{t}\"><strong>{t}</strong>: {}</li>",
                stages.iter().map(|s| esc(s)).collect::<Vec<_>>().join(" → "),
                t = esc(track.as_str())
            ));
            continue;
        }
        let _ = write!(
            body,
            "<section class=\"track\" aria-labelledby=\"track-{t}\"><h2 id=\"track-{t}\">Track {t}</h2>\
             <div class=\"columns\">",
            t = esc(track.as_str())
        );
        for stage in &stages {
            let list = cards.get(&(track.to_string(), stage.clone()));
            let n = list.map_or(0, Vec::len);
            let _ = write!(
                body,
                "<section class=\"column\" data-track=\"{t}\" data-stage=\"{s}\" aria-label=\"{s} on track {t}: {n} \
                 items\"><h3>{s} <span class=\"count\">{n}</span></h3><div class=\"cards\">",
                t = esc(track.as_str()),
                s = esc(stage),
            );
            for c in list.into_iter().flatten() {
                body.push_str(c);
            }
            body.push_str("</div></section>");
        }
        body.push_str("</div></section>");
    }
    if !empty_tracks.is_empty() {
        let _ = write!(
            body,
            "<section class=\"idle-tracks\" aria-labelledby=\"idle-h\"><h2 id=\"idle-h\">Tracks with nothing open</h2>\
             <ul>{}</ul></section>",
            empty_tracks.concat()
        );
    }
    Ok(Html(html::page("Board", Nav::Board, Some(""), Some(now), &body)))
}

/// A query-string value: only the characters repo names use pass as they are.
fn url_part(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn card(item: &Item, facts: &CardFacts, now: Timestamp) -> String {
    let status = item.status.as_str();
    let attempt = item.attempts.get(&item.stage).copied().unwrap_or(0);
    let key = esc(&item.key.to_string());
    let mut out = format!(
        "<article class=\"card st-{status}\" data-key=\"{key}\" data-status=\"{status}\" aria-label=\"{key}: {title}, \
         {label}\"><div class=\"card-head\"><a class=\"key\" href=\"/ui/items/{key}\">{key}</a>\
         <span class=\"badge st-{status}\">{label}</span></div><p class=\"title\">{title}</p>\
         <p class=\"meta\"><span>{kind}</span> · <span>attempt {attempt}</span> · <span class=\"since\" \
         data-since=\"{since_ms}\" title=\"in this stage since {since_iso}\">{since}</span></p>",
        title = esc(&item.title),
        label = status.replace('_', " "),
        kind = item.kind,
        since_ms = facts.since.as_millis(),
        since_iso = facts.since.to_rfc3339(),
        since = html::duration(now.since(facts.since)),
    );
    if let Some((gate, passed, reason)) = &facts.last_gate {
        let (class, word) = if *passed { ("pass", "passed") } else { ("fail", "failed") };
        let _ = write!(
            out,
            "<p class=\"gate gate-{class}\" title=\"{}\">gate {} {word}</p>",
            esc(reason.as_deref().unwrap_or("")),
            esc(gate)
        );
    }
    if let Some(why) = &facts.blocked_why {
        let _ = write!(out, "<p class=\"why\">{}</p>", html::log_text(why));
    }
    out.push_str("</article>");
    out
}

fn filters(out: &mut String, state: &AppState, q: &BoardQuery) {
    let select = |out: &mut String, name: &str, label: &str, values: &[String], chosen: Option<&str>| {
        let _ = write!(out, "<label>{label} <select name=\"{name}\"><option value=\"\">any</option>");
        for v in values {
            let sel = if Some(v.as_str()) == chosen { " selected" } else { "" };
            let _ = write!(out, "<option value=\"{v}\"{sel}>{t}</option>", v = esc(v), t = esc(&v.replace('_', " ")));
        }
        out.push_str("</select></label>");
    };
    out.push_str("<form class=\"filters\" method=\"get\" action=\"/\" aria-label=\"Filter the board\">");
    let repos: Vec<String> = state.config.repos.iter().map(|r| r.name.clone()).collect();
    let kinds: Vec<String> = ItemKind::ALL.iter().map(ToString::to_string).collect();
    let statuses: Vec<String> = ItemStatus::ALL.iter().map(ToString::to_string).collect();
    select(out, "repo", "Repo", &repos, non_empty(q.repo.as_ref()));
    select(out, "kind", "Kind", &kinds, non_empty(q.kind.as_ref()));
    select(out, "status", "Status", &statuses, non_empty(q.status.as_ref()));
    out.push_str("<button type=\"submit\">Filter</button> <a href=\"/\">clear</a></form>");
}
