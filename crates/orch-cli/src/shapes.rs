//! The JSON shapes of DESIGN §8 for `--json` output: field names are the interface
//! (they may be added to, never renamed) and times are RFC 3339 strings, where the
//! store's rows carry milliseconds.

use orch_store::{Event, Item, Job};
use serde_json::{Value, json};

/// An item: `key, repo, kind, title, body, track, stage, status, version, attempts,
/// branch, pr, created_at, updated_at`.
pub(crate) fn item(i: &Item) -> Value {
    json!({
        "key": i.key,
        "repo": i.repo,
        "kind": i.kind,
        "title": i.title,
        "body": i.body,
        "track": i.track,
        "stage": i.stage,
        "status": i.status,
        "version": i.version,
        "attempts": i.attempts,
        "branch": i.branch,
        "head_sha": i.head_sha,
        "pr": i.pr,
        "created_at": i.created_at.to_rfc3339(),
        "updated_at": i.updated_at.to_rfc3339(),
    })
}

/// A job: `id, item, stage, attempt, status, owner, epoch, pid, started_at,
/// finished_at, exit_code, reason, verdict, log_path`.
pub(crate) fn job(j: &Job) -> Value {
    json!({
        "id": j.id,
        "item": j.item,
        "stage": j.stage,
        "attempt": j.attempt,
        "status": j.status,
        "owner": j.owner,
        "epoch": j.epoch,
        "pid": j.pid,
        "queued_at": j.queued_at.to_rfc3339(),
        "started_at": j.started_at.map(|t| t.to_rfc3339()),
        "finished_at": j.finished_at.map(|t| t.to_rfc3339()),
        "exit_code": j.exit_code,
        "reason": j.reason,
        "verdict": j.verdict,
        "log_path": j.log_path,
    })
}

/// An event: `seq, at, item, job, kind, from, to, epoch, reason, data`.
pub(crate) fn event(e: &Event) -> Value {
    json!({
        "seq": e.seq,
        "at": e.at.to_rfc3339(),
        "item": e.item,
        "job": e.job,
        "kind": e.kind,
        "from": e.from,
        "to": e.to,
        "epoch": e.epoch,
        "reason": e.reason,
        "data": e.data,
    })
}

/// Rows printed as columns padded to their widest cell (the last column is not
/// padded, so long titles do not drag trailing spaces).
pub(crate) fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let last = row.len().saturating_sub(1);
        let cells: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(i, c)| if i == last { c.clone() } else { format!("{c:<w$}", w = widths[i]) })
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns() {
        let t = table(&["A", "BB", "C"], &[vec!["xxx".into(), "y".into(), "long last".into()]]);
        assert_eq!(t, "A    BB  C\nxxx  y   long last\n");
    }
}
