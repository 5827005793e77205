//! The end of the demo: a table of what happened to each item (track, stages run,
//! attempts, gates passed/failed, result, merge SHA), and where to look next.

use orch_core::EventKind;

use super::progress::short;
use super::scenario::Report;
use super::workspace::Workspace;
use crate::shapes;

/// The summary table, one row per item.
pub(crate) fn table(reports: &[Report]) -> String {
    let rows: Vec<Vec<String>> = reports.iter().map(row).collect();
    shapes::table(&["ITEM", "KIND", "TRACK", "STAGES RUN", "ATTEMPTS", "GATES", "RESULT", "MERGE"], &rows)
}

fn row(r: &Report) -> Vec<String> {
    let escalated = r.events.iter().find(|e| e.kind == EventKind::ItemEscalated.as_str());
    let track = match escalated.and_then(|e| e.data.get("from_track")).and_then(|t| t.as_str()) {
        Some(from) => format!("{from}->{}", r.item.track),
        None => r.item.track.to_string(),
    };
    // Attempts beyond the first are the interesting ones: "development x2".
    let retried: Vec<String> =
        r.item.attempts.iter().filter(|(_, n)| **n > 1).map(|(s, n)| format!("{s} x{n}")).collect();
    let attempts = if retried.is_empty() { "1 each".to_owned() } else { retried.join(", ") };
    let passed = r.count(EventKind::GatePassed);
    let failed = r.count(EventKind::GateFailed);
    let mut result = r.item.status.to_string();
    let rollbacks = r.count(EventKind::ItemRolledBack);
    let deferrals = r.count(EventKind::ReaperDeferred);
    let mut notes = Vec::new();
    if rollbacks > 0 {
        notes.push(format!("{rollbacks} rollback"));
    }
    if escalated.is_some() {
        notes.push("escalated".to_owned());
    }
    if deferrals > 0 {
        notes.push(format!("{deferrals} reaper deferral"));
    }
    if !notes.is_empty() {
        result = format!("{result} ({})", notes.join(", "));
    }
    vec![
        r.item.key.to_string(),
        r.item.kind.to_string(),
        track,
        r.jobs.len().to_string(),
        attempts,
        format!("{passed} passed, {failed} failed"),
        result,
        r.merge_sha().map_or_else(|| "-".to_owned(), |s| short(s).to_owned()),
    ]
}

/// Where the repository, the logs and the event log are, and the commands that
/// read them.
pub(crate) fn where_to_look(ws: &Workspace, first_key: &str) -> String {
    let config = ws.config();
    let c = config.display();
    let mut out = String::new();
    out.push_str(&format!("workspace   {}\n", ws.root().display()));
    out.push_str(&format!(
        "repository  {} (the clone, pulled to main); remote: git -C {} log --oneline --graph main\n",
        ws.project().display(),
        ws.remote().display()
    ));
    out.push_str(&format!(
        "logs        {} (job-N.log per agent run, job-N.eE.gate-G.log per gate)\n",
        ws.logs().display()
    ));
    out.push_str(&format!(
        "event log   orch --config {c} item events {first_key}   (audit: orch --config {c} audit)\n"
    ));
    out.push_str(&format!("items       orch --config {c} item list   /   orch --config {c} pr list\n"));
    if ws.is_temporary() {
        out.push_str("            (a temporary workspace: it is removed when the demo exits; `--keep DIR` keeps it)\n");
    }
    out
}
