//! `GET /healthz` (the process answers) and `GET /readyz` (the store answers
//! and, beside a node, the node has registered), for load balancers and probes.

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use crate::{ApiError, AppState};

pub(crate) async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

pub(crate) async fn readyz(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let nodes =
        state.store.nodes().await.map_err(|e| ApiError::Unavailable(format!("the store is unreachable: {e}")))?;
    if let Some(node) = &state.node {
        let id = node.node_id();
        if !nodes.iter().any(|n| n.id == id && n.stopped_at.is_none()) {
            return Err(ApiError::Unavailable(format!("node {id} has not registered with the store")));
        }
    }
    Ok(Json(json!({"status": "ready"})))
}
