//! The queue document: what `GET /queue` serves and `orch queue --json` prints,
//! built by one function so the two cannot drift.
//!
//! The `reaper` block has exactly the keys `interval_s`, `finalize_grace_s`,
//! `max_running_s`, `finalizer_liveness_enabled`, `finalizer_defers_total`,
//! `finalizer_owned`, `reaped_total` (by tier) and `last_pass_at`. The settings
//! come from the config. The counters come from the store
//! (`Store::reaper_totals`): every node's reaper adds each pass's counts to
//! them in one statement, so they are cluster-wide, survive restarts, and are
//! the same whichever node (or `orch queue`, with no node) is asked.
//! `finalizer_owned` counts the jobs `finishing` under a lease still live at
//! `now`, judged in the store's time. `counters_from` is `"cluster"`.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use orch_core::Timestamp;
use orch_core::config::Config;
use orch_engine::Node;
use orch_store::Store;
use serde_json::{Value, json};

use crate::{ApiError, AppState};

/// An offset past this is flagged (the node logs it too): lease decisions use the
/// store's clock, but a host this far off has a clock worth fixing.
pub const CLOCK_OFFSET_BOUND_MS: i64 = 1_000;

/// The queue document at `now` (in the store's time: it judges which leases
/// are live for `finalizer_owned`).
///
/// # Errors
/// The store's error reading the counts, the nodes or the reaper totals.
pub async fn document(store: &dyn Store, config: &Config, now: Timestamp) -> Result<Value, orch_store::Error> {
    let stats = store.queue_stats().await?;
    let nodes = store.nodes().await?;
    let totals = store.reaper_totals(now).await?;
    let r = &config.reaper;
    Ok(json!({
        "items_by_status": stats.items_by_status,
        "items_by_stage": stats.items_by_stage,
        "jobs_by_status": stats.jobs_by_status,
        "running": stats.active_jobs,
        // Every node that ever registered; `stopped_at` is set by a clean
        // shutdown, `clock_offset_ms` is store clock − the node's clock.
        "nodes": nodes.iter().map(|n| {
            let mut v = serde_json::to_value(n).unwrap_or_default();
            v["clock_offset_over_bound"] = json!(n.clock_offset_ms.abs() > CLOCK_OFFSET_BOUND_MS);
            v
        }).collect::<Vec<_>>(),
        "lease": { "ttl_s": r.lease_ttl_s, "heartbeat_s": r.heartbeat_s },
        // The counters are the whole cluster's, kept in the store.
        "counters_from": "cluster",
        "reaper": {
            "interval_s": r.interval_s,
            "finalize_grace_s": r.finalize_grace_s,
            "max_running_s": r.max_running_s,
            "finalizer_liveness_enabled": r.finalizer_liveness_enabled,
            "finalizer_defers_total": totals.finalizer_defers_total,
            "finalizer_owned": totals.finalizer_owned,
            "reaped_total": {
                "tier1": totals.reaped_tier1,
                "tier2": totals.reaped_tier2,
                "tier3": totals.reaped_tier3,
            },
            "last_pass_at": totals.last_pass_at.map(|t| t.to_rfc3339()),
        },
    }))
}

/// Counts by status and stage, running jobs, nodes and the reaper block.
#[utoipa::path(get, path = "/queue", operation_id = "getQueue", tag = "queue", security((), ("bearer" = [])),
    responses(
        (status = 200, description = "The queue document", body = crate::schema::QueueDocument),
        (status = 401, description = "Reads need the token (`auth_reads`)", body = crate::schema::ErrorBody),
        (status = 503, description = "The store cannot be reached", body = crate::schema::ErrorBody),
    ))]
pub(crate) async fn get_queue(State(state): State<AppState>) -> Result<Response, ApiError> {
    // Concurrent requests share one build (each answer still built after its
    // request arrived): under many clients the store sees one build at a time.
    let doc = state
        .queue
        .get(|| async {
            // The store's time: this clock plus the node's measured offset to it.
            let offset_ms = state.node.as_ref().map_or(0, Node::clock_offset_ms);
            let now = Timestamp::from_millis(state.clock.now().as_millis() + offset_ms);
            let doc = document(state.store.as_ref(), &state.config, now).await?;
            serde_json::to_vec(&doc).map(Bytes::from).map_err(|e| ApiError::Internal(format!("queue document: {e}")))
        })
        .await?;
    Ok(([(header::CONTENT_TYPE, "application/json")], doc).into_response())
}
