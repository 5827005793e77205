//! `GET /metrics`: the node's metrics in the Prometheus text format.
//!
//! The engine and the store record through the `metrics` facade (counters of
//! transitions by kind, reaper actions by tier, fenced-out writes; histograms of
//! gate, agent and store-call durations; names in `orch_engine::metrics::names`
//! and `orch_store::STORE_CALL_DURATION`). This module installs the
//! `metrics-exporter-prometheus` recorder once per process, with no listener of
//! its own, and the handler renders it. Items and jobs by status are gauges set
//! from the store's counts at scrape time, so they are the cluster's, while the
//! counters and histograms are this process's own (Prometheus sums them over
//! the nodes it scrapes).

use std::sync::OnceLock;
use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use metrics::Unit;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use orch_engine::metrics::names;
use tokio_util::sync::CancellationToken;

use crate::{ApiError, AppState};

/// Gauge, label `status`: items per status, from the store at scrape time.
const ITEMS: &str = "orch_items";
/// Gauge, label `status`: jobs per status, from the store at scrape time.
const JOBS: &str = "orch_jobs";
/// Histogram buckets for every `*_seconds` metric: from a store call's
/// milliseconds to an agent's hour.
const BUCKETS_S: &[f64] =
    &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0];
/// How often [`upkeep`] folds recorded samples into the histograms, so memory
/// stays bounded between scrapes.
const UPKEEP: Duration = Duration::from_secs(5);

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// The process's recorder, installed on first use; `None` if another recorder
/// was installed first (then `/metrics` answers 503 saying so).
pub(crate) fn handle() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let built = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), BUCKETS_S)
                .and_then(PrometheusBuilder::install_recorder);
            match built {
                Ok(handle) => {
                    describe();
                    Some(handle)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot install the Prometheus recorder; /metrics will answer 503");
                    None
                }
            }
        })
        .as_ref()
}

/// The `# HELP` and units of every metric orch exports.
fn describe() {
    metrics::describe_gauge!(ITEMS, "Items per status (the whole store, read at scrape time).");
    metrics::describe_gauge!(JOBS, "Jobs per status (the whole store, read at scrape time).");
    metrics::describe_counter!(names::TRANSITIONS, "Item transitions this process committed, by event kind.");
    metrics::describe_counter!(names::REAPED, "Jobs this process's reaper reaped or took over, by tier.");
    metrics::describe_counter!(names::FINALIZER_DEFERS, "Tier-2 deferrals to a finalizer holding a live lease.");
    metrics::describe_counter!(names::FENCED_OUT, "Owner writes refused because another owner holds a newer epoch.");
    metrics::describe_counter!(names::SELF_FENCED, "Jobs killed because this node could not renew its lease.");
    metrics::describe_counter!(names::START_RETRIES, "Agent or gate starts retried after an infrastructure failure.");
    metrics::describe_counter!(
        names::HANDOFF_CLAIMS,
        "Jobs this process claimed in the same write as the transition that queued them."
    );
    metrics::describe_gauge!(names::FINALIZER_OWNED, "Finalizations this process runs now.");
    metrics::describe_counter!(names::AGENT_TOKENS, "Tokens agent runs reported, by stage and kind.");
    metrics::describe_counter!(names::AGENT_TURNS, "Model turns agent runs reported, by stage.");
    metrics::describe_gauge!(names::AGENT_COST, "US dollars agent runs reported spending, by stage (only grows).");
    metrics::describe_histogram!(names::GATE_DURATION, Unit::Seconds, "How long each gate ran, by gate.");
    metrics::describe_histogram!(names::AGENT_DURATION, Unit::Seconds, "How long each agent process ran, by stage.");
    metrics::describe_histogram!(
        orch_store::STORE_CALL_DURATION,
        Unit::Seconds,
        "Latency of each store call, by call."
    );
    // Counters that may stay at zero for a long time are exported from the
    // start, so a rate over them is 0 rather than absent.
    for tier in ["tier1", "tier2", "tier3"] {
        metrics::counter!(names::REAPED, "tier" => tier).increment(0);
    }
    for name in
        [names::FINALIZER_DEFERS, names::FENCED_OUT, names::SELF_FENCED, names::START_RETRIES, names::HANDOFF_CLAIMS]
    {
        metrics::counter!(name).increment(0);
    }
}

/// Folds recorded samples into the histograms every [`UPKEEP`] until `stop`
/// fires. Policy: runs for the life of the server; nothing in it can fail.
pub async fn upkeep(stop: CancellationToken) {
    let Some(handle) = handle() else { return };
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(UPKEEP) => handle.run_upkeep(),
        }
    }
}

/// `GET /metrics`.
#[utoipa::path(get, path = "/metrics", operation_id = "getMetrics", tag = "metrics", security((), ("bearer" = [])),
    responses(
        (status = 200, description = "Prometheus text exposition format", body = String, content_type = "text/plain"),
        (status = 401, description = "Reads need the token (`auth_reads`)", body = crate::schema::ErrorBody),
        (status = 503, description = "The store cannot be reached", body = crate::schema::ErrorBody),
    ))]
pub(crate) async fn get_metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    let Some(handle) = handle() else {
        return Err(ApiError::Unavailable("another metrics recorder is installed in this process".to_owned()));
    };
    let stats = state.store.queue_stats().await?;
    for (status, n) in &stats.items_by_status {
        metrics::gauge!(ITEMS, "status" => status.clone()).set(*n as f64);
    }
    for (status, n) in &stats.jobs_by_status {
        metrics::gauge!(JOBS, "status" => status.clone()).set(*n as f64);
    }
    handle.run_upkeep();
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], handle.render()).into_response())
}
