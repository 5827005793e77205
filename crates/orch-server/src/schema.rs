//! The OpenAPI schemas of what the API answers and accepts beside the item, job
//! and event shapes (which live in [`crate::shapes`] and serialize the answers
//! themselves): the error body, request bodies, pages, and the queue document.
//!
//! Enumerations are built from the domain's own lists (`ItemStatus::ALL`, …), so a
//! new status shows in the document without an edit here. The queue document is
//! built as JSON by [`crate::queue::document`]; its schema below is checked
//! against real answers by `scripts/api-contract` (schemathesis) and by the
//! `openapi` tests, which compare its keys with a served document.

use std::collections::BTreeMap;

use orch_core::{ItemKind, ItemStatus, JobStatus, OperatorAction};
use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::{RefOr, Schema};
use utoipa::{IntoParams, ToSchema};

fn string_enum(values: impl IntoIterator<Item = &'static str>) -> RefOr<Schema> {
    ObjectBuilder::new().schema_type(Type::String).enum_values(Some(values)).into()
}

pub(crate) fn item_kind() -> RefOr<Schema> {
    string_enum(ItemKind::ALL.iter().map(|k| k.as_str()))
}

pub(crate) fn item_status() -> RefOr<Schema> {
    string_enum(ItemStatus::ALL.iter().map(|s| s.as_str()))
}

pub(crate) fn job_status() -> RefOr<Schema> {
    string_enum(JobStatus::ALL.iter().map(|s| s.as_str()))
}

pub(crate) fn pr_state() -> RefOr<Schema> {
    string_enum(orch_store::PullRequest::STATES)
}

pub(crate) fn operator_action() -> RefOr<Schema> {
    string_enum(
        [OperatorAction::Retry, OperatorAction::Cancel, OperatorAction::Escalate, OperatorAction::Approve]
            .map(OperatorAction::as_str),
    )
}

/// What each operator action (`POST /items/{key}/retry|cancel|escalate|approve`)
/// may answer: one list, documented on the four routes alike.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // only its derived document is used
pub enum ActionResponses {
    #[response(status = 200, description = "Applied")]
    Applied(crate::shapes::TransitionShape),
    #[response(status = 401, description = "No or a wrong bearer token")]
    Unauthorized(ErrorBody),
    #[response(status = 404, description = "No such item")]
    NotFound(ErrorBody),
    #[response(status = 409, description = "The item's state refuses the action; `error` says why")]
    Refused(ErrorBody),
    #[response(status = 503, description = "The store cannot be reached")]
    Unavailable(ErrorBody),
}

/// Every error: what went wrong, and the field at fault when there is one.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Error)]
pub struct ErrorBody {
    /// For people: what went wrong and, where it helps, what to do.
    pub error: String,
    /// The request field at fault (a body field or a query parameter).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// `/healthz` and `/readyz` when all is well.
#[derive(Debug, Serialize, ToSchema)]
pub struct Status {
    /// `ok` (healthz) or `ready` (readyz).
    pub status: String,
}

/// `POST /items`: a new work item. Unknown fields are refused (422), so a
/// misspelt optional field is never dropped in silence.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewItem {
    /// A repo named in the config's `[[repos]]`.
    pub repo: String,
    #[schema(schema_with = item_kind)]
    pub kind: String,
    /// Not empty.
    pub title: String,
    pub body: Option<String>,
    /// Default: the repo's track for the kind.
    pub track: Option<String>,
}

/// `GET /items`: one page, in key order.
#[derive(Debug, Serialize, ToSchema)]
pub struct ItemPage {
    #[schema(value_type = Vec<crate::shapes::ItemShape>)]
    pub items: Vec<serde_json::Value>,
    /// The `cursor` of the following page; null on the last.
    pub next: Option<String>,
}

/// `GET /items/{key}`: the item and its jobs, oldest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct ItemDetail {
    #[serde(flatten)]
    pub item: crate::shapes::ItemShape,
    pub jobs: Vec<crate::shapes::JobShape>,
    /// The sum of the jobs' usage, or null when no run reported any.
    pub usage: Option<crate::shapes::UsageShape>,
}

/// The `GET /items` query; every value is checked by the handler, so a bad one
/// is a 422 naming its parameter.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ItemListParams {
    /// Only items of this repo.
    pub repo: Option<String>,
    /// Only items with this status.
    #[param(schema_with = item_status)]
    pub status: Option<String>,
    /// Only items at this stage.
    pub stage: Option<String>,
    /// Only items of this kind.
    #[param(schema_with = item_kind)]
    pub kind: Option<String>,
    /// Items per page, 1–500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
    /// The `next` of the previous page: start after this key.
    pub cursor: Option<String>,
}

/// The `GET /jobs/{id}/log` query.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogParams {
    /// Only the log's last `tail` bytes (at most 4 MiB are sent either way).
    #[param(minimum = 0)]
    pub tail: Option<u64>,
}

/// A running or finishing job in the queue document. Times here are
/// milliseconds since the Unix epoch.
#[derive(Debug, Serialize, ToSchema)]
pub struct ActiveJob {
    pub id: i64,
    pub item: String,
    pub stage: String,
    #[schema(schema_with = job_status)]
    pub status: String,
    pub owner: Option<String>,
    pub epoch: i64,
    pub started_at: Option<i64>,
    pub lease_expires_at: Option<i64>,
}

/// A node that registered with the store. Times are milliseconds since the Unix
/// epoch.
#[derive(Debug, Serialize, ToSchema)]
pub struct NodeInfo {
    pub id: String,
    /// Unique per process start.
    pub incarnation: String,
    pub host: String,
    pub pid: i32,
    pub data_dir: String,
    pub started_at: i64,
    pub last_seen: i64,
    /// Set by a clean shutdown.
    pub stopped_at: Option<i64>,
    /// The store's clock minus the node's.
    pub clock_offset_ms: i64,
    /// Whether the offset is past the bound (1 s).
    pub clock_offset_over_bound: bool,
}

/// The lease settings.
#[derive(Debug, Serialize, ToSchema)]
pub struct LeaseSettings {
    pub ttl_s: f64,
    pub heartbeat_s: f64,
}

/// Jobs reaped per tier.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReapedTotal {
    pub tier1: u64,
    pub tier2: u64,
    pub tier3: u64,
}

/// The reaper block, with exactly these keys. The counters are the cluster's,
/// kept in the store; `last_pass_at` is null until some reaper has run a pass.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReaperBlock {
    pub interval_s: f64,
    pub finalize_grace_s: f64,
    pub max_running_s: f64,
    pub finalizer_liveness_enabled: bool,
    pub finalizer_defers_total: u64,
    /// Finalizations running now under a live lease.
    pub finalizer_owned: i64,
    pub reaped_total: ReapedTotal,
    #[schema(format = DateTime)]
    pub last_pass_at: Option<String>,
}

/// `GET /queue`: what `orch queue --json` prints.
#[derive(Debug, Serialize, ToSchema)]
pub struct QueueDocument {
    pub items_by_status: BTreeMap<String, i64>,
    /// Non-terminal items per stage.
    pub items_by_stage: BTreeMap<String, i64>,
    pub jobs_by_status: BTreeMap<String, i64>,
    /// Running and finishing jobs.
    pub running: Vec<ActiveJob>,
    /// Every node that ever registered.
    pub nodes: Vec<NodeInfo>,
    pub lease: LeaseSettings,
    /// Whose counters the reaper block shows: always `"cluster"`.
    pub counters_from: String,
    pub reaper: ReaperBlock,
}
