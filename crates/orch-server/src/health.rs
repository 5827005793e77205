//! `GET /healthz` (the process answers) and `GET /readyz` (the store answers
//! and, beside a node, the node has registered), for load balancers and probes.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use crate::{ApiError, AppState};

/// How long `/readyz` waits for the store.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// The process answers.
#[utoipa::path(get, path = "/healthz", operation_id = "healthz", tag = "health", security(()),
    responses((status = 200, description = "The process answers", body = crate::schema::Status)))]
pub(crate) async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// The store answers and the node beside this server has registered.
#[utoipa::path(get, path = "/readyz", operation_id = "readyz", tag = "health", security(()),
    responses(
        (status = 200, description = "Ready to work", body = crate::schema::Status),
        (status = 503, description = "The store cannot be reached, or the node has not registered", body = crate::schema::ErrorBody),
    ))]
pub(crate) async fn readyz(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    // A probe gives up after a second or two: answer 503 before it does, rather
    // than wait out the store's own (longer) call deadline.
    let nodes = match tokio::time::timeout(READY_TIMEOUT, state.store.nodes()).await {
        Ok(Ok(nodes)) => nodes,
        Ok(Err(e)) => return Err(ApiError::Unavailable(format!("the store is unreachable: {e}"))),
        Err(_) => {
            return Err(ApiError::Unavailable(format!("the store did not answer within {READY_TIMEOUT:?}")));
        }
    };
    if let Some(node) = &state.node {
        let id = node.node_id();
        if !nodes.iter().any(|n| n.id == id && n.stopped_at.is_none()) {
            return Err(ApiError::Unavailable(format!("node {id} has not registered with the store")));
        }
    }
    Ok(Json(json!({"status": "ready"})))
}
