//! The queue document: what `GET /queue` serves and `orch queue --json` prints,
//! built by one function so the two cannot drift.
//!
//! The `reaper` block has exactly the keys `interval_s`, `finalize_grace_s`,
//! `max_running_s`, `finalizer_liveness_enabled`, `finalizer_defers_total`,
//! `finalizer_owned`, `reaped_total` (by tier) and `last_pass_at`. The settings
//! come from the config. The counters are the live, in-memory counters of the
//! node this server runs beside (`orch serve`), so they count since that node
//! started and cover that node only; without a node (`orch queue`) they are
//! `null`. Cluster-wide counters that survive restarts (kept in the store) are
//! future work; `counters_from` says whose counters are shown.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use orch_core::Timestamp;
use orch_core::config::Config;
use orch_engine::MetricsSnapshot;
use orch_store::Store;
use serde_json::{Value, json};

use crate::{ApiError, AppState};

/// An offset past this is flagged (the node logs it too): lease decisions use the
/// store's clock, but a host this far off has a clock worth fixing.
pub const CLOCK_OFFSET_BOUND_MS: i64 = 1_000;

/// The queue document; `live` is the counters of the node serving it, with its id.
///
/// # Errors
/// The store's error reading the counts or the nodes.
pub async fn document(
    store: &dyn Store,
    config: &Config,
    live: Option<(&str, &MetricsSnapshot)>,
) -> Result<Value, orch_store::Error> {
    let stats = store.queue_stats().await?;
    let nodes = store.nodes().await?;
    let r = &config.reaper;
    let counters = live.map(|(_, m)| m);
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
        "counters_from": live.map(|(id, _)| id),
        "reaper": {
            "interval_s": r.interval_s,
            "finalize_grace_s": r.finalize_grace_s,
            "max_running_s": r.max_running_s,
            "finalizer_liveness_enabled": r.finalizer_liveness_enabled,
            "finalizer_defers_total": counters.map(|m| m.finalizer_defers_total),
            "finalizer_owned": counters.map(|m| m.finalizer_owned),
            "reaped_total": counters.map(|m| json!({
                "tier1": m.reaped_tier1,
                "tier2": m.reaped_tier2,
                "tier3": m.reaped_tier3,
            })),
            "last_pass_at": counters
                .filter(|m| m.last_pass_at_ms > 0)
                .map(|m| Timestamp::from_millis(m.last_pass_at_ms).to_rfc3339()),
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
            let snapshot = state.node.as_ref().map(|n| (n.node_id().to_owned(), n.metrics()));
            let live = snapshot.as_ref().map(|(id, m)| (id.as_str(), m));
            let doc = document(state.store.as_ref(), &state.config, live).await?;
            serde_json::to_vec(&doc).map(Bytes::from).map_err(|e| ApiError::Internal(format!("queue document: {e}")))
        })
        .await?;
    Ok(([(header::CONTENT_TYPE, "application/json")], doc).into_response())
}
