//! The JSON shapes of DESIGN §8, one copy for the API and the CLI's `--json`
//! output: field names are the interface (they may be added to, never renamed) and
//! times are RFC 3339 strings, where the store's rows carry milliseconds.

use orch_core::{ItemKey, OperatorAction, Transition, Usage};
use orch_store::{Event, Item, Job};
use serde_json::{Value, json};

/// An item: `key, repo, kind, title, body, track, stage, status, version, attempts,
/// branch, pr, created_at, updated_at`.
pub fn item(i: &Item) -> Value {
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
/// finished_at, exit_code, reason, verdict, log_path, usage` (`usage` is null
/// for runs that reported none).
pub fn job(j: &Job) -> Value {
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
        "usage": j.usage.as_ref().map(usage),
    })
}

/// What agent runs consumed: `turns, input_tokens, output_tokens,
/// cache_read_tokens, cache_write_tokens, total_tokens, cost_usd` (null when no
/// run reported a cost).
pub fn usage(u: &Usage) -> Value {
    json!({
        "turns": u.turns,
        "input_tokens": u.input_tokens,
        "output_tokens": u.output_tokens,
        "cache_read_tokens": u.cache_read_tokens,
        "cache_write_tokens": u.cache_write_tokens,
        "total_tokens": u.total_tokens(),
        "cost_usd": u.cost_usd,
    })
}

/// An item's usage: the sum over its jobs' runs, or null when none reported any
/// (the item's `usage` field in `GET /items/{key}` and `orch item show --json`).
pub fn item_usage(jobs: &[Job]) -> Value {
    let mut reported = jobs.iter().filter_map(|j| j.usage.as_ref()).peekable();
    if reported.peek().is_none() {
        return Value::Null;
    }
    usage(&reported.fold(Usage::default(), |acc, u| acc.plus(u)))
}

/// An event: `seq, at, item, job, kind, from, to, epoch, reason, data`.
pub fn event(e: &Event) -> Value {
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

/// An operator action's outcome: `key, action, track, stage, status, version,
/// decision`.
pub fn transition(key: &ItemKey, action: OperatorAction, t: &Transition) -> Value {
    json!({
        "key": key.to_string(),
        "action": action.as_str(),
        "track": t.next.track,
        "stage": t.next.stage,
        "status": t.next.status,
        "version": t.next.version,
        "decision": format!("{:?}", t.decision),
    })
}
