//! The JSON shapes of DESIGN §8, one copy for the API and the CLI's `--json`
//! output: field names are the interface (they may be added to, never renamed) and
//! times are RFC 3339 strings, where the store's rows carry milliseconds.
//!
//! Each shape is a typed struct that both serializes the answer and derives the
//! OpenAPI schema of it, so the document `GET /openapi.json` serves cannot drift
//! from what the handlers send. The functions return `serde_json::Value` so
//! callers can add fields (`GET /items/{key}` adds `jobs`).

use std::collections::BTreeMap;

use orch_core::{ItemKey, OperatorAction, Transition, Usage};
use orch_store::{Event, Item, Job};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::schema;

/// An item: `key, repo, kind, title, body, track, stage, status, version, attempts,
/// branch, pr, created_at, updated_at`.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Item)]
pub struct ItemShape {
    /// `PREFIX-N`, e.g. `SHOP-12`.
    #[schema(example = "SHOP-12")]
    pub key: String,
    pub repo: String,
    #[schema(schema_with = schema::item_kind)]
    pub kind: String,
    pub title: String,
    pub body: String,
    pub track: String,
    pub stage: String,
    #[schema(schema_with = schema::item_status)]
    pub status: String,
    /// +1 on every transition.
    pub version: i64,
    /// Jobs started per stage.
    pub attempts: BTreeMap<String, u32>,
    /// The item's feature branch, once a run has pushed it.
    pub branch: Option<String>,
    /// The branch's SHA as last pushed.
    pub head_sha: Option<String>,
    /// The item's pull request, once opened.
    pub pr: Option<PrShape>,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
}

/// An item's pull request: `url, state, merge_sha` (DESIGN §8), and what the git
/// layer added beside them.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = PullRequest)]
pub struct PrShape {
    pub url: String,
    /// `open`, `merged` or `closed`.
    #[schema(schema_with = schema::pr_state)]
    pub state: String,
    pub merge_sha: Option<String>,
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub more: serde_json::Map<String, Value>,
}

/// A job: `id, item, stage, attempt, status, owner, epoch, pid, started_at,
/// finished_at, exit_code, reason, verdict, log_path, usage` (`usage` is null
/// for runs that reported none).
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Job)]
pub struct JobShape {
    pub id: i64,
    pub item: String,
    pub stage: String,
    pub attempt: u32,
    #[schema(schema_with = schema::job_status)]
    pub status: String,
    /// The node holding the job's lease.
    pub owner: Option<String>,
    /// The fencing token: +1 at every change of owner.
    pub epoch: i64,
    pub pid: Option<i32>,
    #[schema(format = DateTime)]
    pub queued_at: String,
    #[schema(format = DateTime)]
    pub started_at: Option<String>,
    #[schema(format = DateTime)]
    pub finished_at: Option<String>,
    pub exit_code: Option<i32>,
    pub reason: Option<String>,
    /// The agent's verdict file, as parsed.
    #[schema(value_type = Option<Object>)]
    pub verdict: Option<Value>,
    pub log_path: Option<String>,
    /// What the run consumed, where its agent reports it.
    pub usage: Option<UsageShape>,
}

/// What agent runs consumed: `turns, input_tokens, output_tokens,
/// cache_read_tokens, cache_write_tokens, total_tokens, cost_usd` (null when no
/// run reported a cost).
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Usage)]
pub struct UsageShape {
    pub turns: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_read_tokens: u64,
    pub cache_write_tokens: u64,
    pub total_tokens: u64,
    pub cost_usd: Option<f64>,
}

impl From<&Usage> for UsageShape {
    fn from(u: &Usage) -> Self {
        Self {
            turns: u.turns,
            input_tokens: u.input_tokens,
            output_tokens: u.output_tokens,
            cache_read_tokens: u.cache_read_tokens,
            cache_write_tokens: u.cache_write_tokens,
            total_tokens: u.total_tokens(),
            cost_usd: u.cost_usd,
        }
    }
}

/// The usage JSON shape.
pub fn usage(u: &Usage) -> Value {
    to_value(UsageShape::from(u))
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
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Event)]
pub struct EventShape {
    pub seq: i64,
    #[schema(format = DateTime)]
    pub at: String,
    pub item: String,
    pub job: Option<i64>,
    /// e.g. `item.created`, `job.finished`, `item.advanced`, `reaper.deferred`.
    pub kind: String,
    pub from: Option<String>,
    pub to: Option<String>,
    pub epoch: Option<i64>,
    pub reason: Option<String>,
    /// Whatever else the event records, or null.
    #[schema(value_type = Option<Object>)]
    pub data: Value,
}

/// An operator action's outcome: `key, action, track, stage, status, version,
/// decision`.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = ActionOutcome)]
pub struct TransitionShape {
    pub key: String,
    #[schema(schema_with = schema::operator_action)]
    pub action: String,
    pub track: String,
    pub stage: String,
    #[schema(schema_with = schema::item_status)]
    pub status: String,
    pub version: i64,
    /// The engine's decision, for people.
    pub decision: String,
}

fn to_value(shape: impl Serialize) -> Value {
    // Serializing these structs of strings and numbers cannot fail; a null would
    // only hide a bug that the API tests would catch.
    serde_json::to_value(shape).unwrap_or(Value::Null)
}

/// The item's JSON shape.
pub fn item(i: &Item) -> Value {
    to_value(ItemShape {
        key: i.key.to_string(),
        repo: i.repo.clone(),
        kind: i.kind.as_str().to_owned(),
        title: i.title.clone(),
        body: i.body.clone(),
        track: i.track.to_string(),
        stage: i.stage.to_string(),
        status: i.status.as_str().to_owned(),
        version: i.version,
        attempts: i.attempts.iter().map(|(s, n)| (s.to_string(), *n)).collect(),
        branch: i.branch.clone(),
        head_sha: i.head_sha.clone(),
        pr: i.pr.as_ref().map(|pr| {
            let mut more = match serde_json::to_value(pr) {
                Ok(Value::Object(m)) => m,
                _ => serde_json::Map::new(),
            };
            for k in ["url", "state", "merge_sha"] {
                more.remove(k);
            }
            PrShape { url: pr.url.clone(), state: pr.state.clone(), merge_sha: pr.merge_sha.clone(), more }
        }),
        created_at: i.created_at.to_rfc3339(),
        updated_at: i.updated_at.to_rfc3339(),
    })
}

/// The job's JSON shape.
pub fn job(j: &Job) -> Value {
    to_value(JobShape {
        id: j.id.0,
        item: j.item.to_string(),
        stage: j.stage.to_string(),
        attempt: j.attempt,
        status: j.status.as_str().to_owned(),
        owner: j.owner.clone(),
        epoch: j.epoch,
        pid: j.pid,
        queued_at: j.queued_at.to_rfc3339(),
        started_at: j.started_at.map(|t| t.to_rfc3339()),
        finished_at: j.finished_at.map(|t| t.to_rfc3339()),
        exit_code: j.exit_code,
        reason: j.reason.clone(),
        verdict: j.verdict.clone(),
        log_path: j.log_path.clone(),
        usage: j.usage.as_ref().map(UsageShape::from),
    })
}

/// The event's JSON shape.
pub fn event(e: &Event) -> Value {
    to_value(EventShape {
        seq: e.seq,
        at: e.at.to_rfc3339(),
        item: e.item.to_string(),
        job: e.job.map(|j| j.0),
        kind: e.kind.clone(),
        from: e.from.clone(),
        to: e.to.clone(),
        epoch: e.epoch,
        reason: e.reason.clone(),
        data: e.data.clone(),
    })
}

/// The operator action's JSON shape.
pub fn transition(key: &ItemKey, action: OperatorAction, t: &Transition) -> Value {
    to_value(TransitionShape {
        key: key.to_string(),
        action: action.as_str().to_owned(),
        track: t.next.track.to_string(),
        stage: t.next.stage.to_string(),
        status: t.next.status.as_str().to_owned(),
        version: t.next.version,
        decision: format!("{:?}", t.decision),
    })
}
