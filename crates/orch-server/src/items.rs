//! `/items`: list (filtered, keyset-paged), file, show, events, and the operator
//! actions. Every rule is the engine's (`ops::new_item`, `ops::apply`); this file
//! only maps requests and refusals to HTTP.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use orch_core::{ItemKey, ItemKind, ItemStatus, OperatorAction, StageName};
use orch_engine::ops::{ItemRequest, OpError};
use orch_store::{ItemFilter, Page};
use serde_json::{Map, Value, json};

use crate::{ApiError, AppState, shapes};

/// Items per page when `?limit=` is not given.
const DEFAULT_PAGE: u32 = 50;
/// The largest page a client may ask for.
const MAX_PAGE: u32 = 500;

/// The `GET /items` query, every value checked here so an error names its field.
#[derive(Debug, Default, serde::Deserialize)]
pub(crate) struct ListQuery {
    repo: Option<String>,
    status: Option<String>,
    stage: Option<String>,
    kind: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

fn parse_field<T: std::str::FromStr>(field: &str, value: Option<&str>) -> Result<Option<T>, ApiError>
where
    T::Err: std::fmt::Display,
{
    value.map(|v| v.parse::<T>().map_err(|e| ApiError::invalid(field, format!("{field}: {e}")))).transpose()
}

/// `GET /items?repo=&status=&stage=&kind=&limit=&cursor=`: items in key order;
/// `next` is the cursor of the following page, `null` on the last.
#[utoipa::path(get, path = "/items", operation_id = "listItems", tag = "items", params(crate::schema::ItemListParams), security((), ("bearer" = [])),
    responses(
        (status = 200, description = "One page of items", body = crate::schema::ItemPage),
        (status = 400, description = "A malformed query string", body = crate::schema::ErrorBody),
        (status = 401, description = "Reads need the token (`auth_reads`)", body = crate::schema::ErrorBody),
        (status = 422, description = "A bad filter, limit or cursor, named in `field`", body = crate::schema::ErrorBody),
        (status = 503, description = "The store cannot be reached", body = crate::schema::ErrorBody),
    ))]
pub(crate) async fn list(
    State(state): State<AppState>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = query?;
    let status = parse_field::<ItemStatus>("status", q.status.as_deref())?;
    let kind = parse_field::<ItemKind>("kind", q.kind.as_deref())?;
    let after = parse_field::<ItemKey>("cursor", q.cursor.as_deref())?;
    let limit = parse_field::<u32>("limit", q.limit.as_deref())?.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::invalid("limit", format!("limit must be between 1 and {MAX_PAGE}")));
    }
    let filter = ItemFilter { repo: q.repo, stage: q.stage.as_deref().map(StageName::new), status, kind, after };
    // One more than asked tells whether another page follows.
    let mut items = state.store.list_items(&filter, Page { offset: 0, limit: limit + 1 }).await?;
    let next = if items.len() > limit as usize {
        items.truncate(limit as usize);
        items.last().map(|i| i.key.to_string())
    } else {
        None
    };
    Ok(Json(json!({ "items": items.iter().map(shapes::item).collect::<Vec<_>>(), "next": next })))
}

/// A string field of the request body: `None` if absent or null.
fn text(body: &Map<String, Value>, field: &str) -> Result<Option<String>, ApiError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(ApiError::invalid(field, format!("{field} must be a string"))),
    }
}

fn required(body: &Map<String, Value>, field: &str) -> Result<String, ApiError> {
    text(body, field)?.ok_or_else(|| ApiError::invalid(field, format!("{field} is required")))
}

/// `POST /items` with `{repo, kind, title, body?, track?}`: 201, `Location:
/// /items/KEY` and the item. Unknown fields are refused, so a misspelt optional
/// field is not silently dropped.
#[utoipa::path(post, path = "/items", operation_id = "createItem", tag = "items", request_body = crate::schema::NewItem, security(("bearer" = [])),
    responses(
        (status = 201, description = "Filed", body = crate::shapes::ItemShape,
            headers(("Location" = String, description = "/items/KEY")),
            links(
                ("getItem" = (operation_id = "getItem", parameters(("key" = "$response.body#/key")))),
                ("getItemEvents" = (operation_id = "getItemEvents", parameters(("key" = "$response.body#/key")))),
                ("retryItem" = (operation_id = "retryItem", parameters(("key" = "$response.body#/key")))),
                ("cancelItem" = (operation_id = "cancelItem", parameters(("key" = "$response.body#/key")))),
                ("escalateItem" = (operation_id = "escalateItem", parameters(("key" = "$response.body#/key")))),
                ("approveItem" = (operation_id = "approveItem", parameters(("key" = "$response.body#/key"))))
            )),
        (status = 400, description = "The body is not JSON", body = crate::schema::ErrorBody),
        (status = 401, description = "No or a wrong bearer token", body = crate::schema::ErrorBody),
        (status = 413, description = "The body is over 1 MiB", body = crate::schema::ErrorBody),
        (status = 422, description = "Invalid: unknown repo, kind, track or field, empty title", body = crate::schema::ErrorBody),
        (status = 503, description = "The store cannot be reached", body = crate::schema::ErrorBody),
    ))]
pub(crate) async fn create(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body?;
    let value: Value =
        serde_json::from_slice(&body).map_err(|e| ApiError::BadRequest(format!("the body is not valid JSON: {e}")))?;
    let Value::Object(obj) = value else {
        return Err(ApiError::Invalid { field: None, message: "the body must be a JSON object".into() });
    };
    const FIELDS: [&str; 5] = ["repo", "kind", "title", "body", "track"];
    if let Some(unknown) = obj.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(ApiError::invalid(
            unknown,
            format!("unknown field {unknown}; expected one of {}", FIELDS.join(", ")),
        ));
    }
    let req = ItemRequest {
        repo: required(&obj, "repo")?,
        kind: required(&obj, "kind")?,
        title: required(&obj, "title")?,
        body: text(&obj, "body")?.unwrap_or_default(),
        track: text(&obj, "track")?,
    };
    let new = orch_engine::ops::new_item(&state.config, &req).map_err(|e| ApiError::invalid(e.field, e.message))?;
    let item = state.store.create_item(new, state.clock.now()).await?;
    let location = HeaderValue::from_str(&format!("/items/{}", item.key))
        .map_err(|e| ApiError::Internal(format!("item key {} is not a header value: {e}", item.key)))?;
    Ok((StatusCode::CREATED, [(header::LOCATION, location)], Json(shapes::item(&item))).into_response())
}

/// A path key that is not a key names no item: 404, like an unknown one.
fn key(raw: &str) -> Result<ItemKey, ApiError> {
    raw.parse().map_err(|_| ApiError::NotFound(format!("no item {raw}")))
}

/// `GET /items/{key}`: the item with its jobs, as `orch item show --json`.
#[utoipa::path(get, path = "/items/{key}", operation_id = "getItem", tag = "items", params(("key" = String, Path, description = "The item's key, e.g. SHOP-12")), security((), ("bearer" = [])),
    responses(
        (status = 200, description = "The item and its jobs", body = crate::schema::ItemDetail,
            links(
                ("getJob" = (operation_id = "getJob", parameters(("id" = "$response.body#/jobs/0/id")))),
                ("getJobLog" = (operation_id = "getJobLog", parameters(("id" = "$response.body#/jobs/0/id"))))
            )),
        (status = 401, description = "Reads need the token (`auth_reads`)", body = crate::schema::ErrorBody),
        (status = 404, description = "No such item", body = crate::schema::ErrorBody),
        (status = 503, description = "The store cannot be reached", body = crate::schema::ErrorBody),
    ))]
pub(crate) async fn show(State(state): State<AppState>, Path(raw): Path<String>) -> Result<Json<Value>, ApiError> {
    let key = key(&raw)?;
    let item = state.store.get_item(&key).await?.ok_or_else(|| ApiError::NotFound(format!("no item {key}")))?;
    let jobs = state.store.jobs_for_item(&key).await?;
    let mut doc = shapes::item(&item);
    doc["jobs"] = jobs.iter().map(shapes::job).collect();
    doc["usage"] = shapes::item_usage(&jobs);
    Ok(Json(doc))
}

/// `GET /items/{key}/events`: the item's audit log, oldest first.
#[utoipa::path(get, path = "/items/{key}/events", operation_id = "getItemEvents", tag = "items", params(("key" = String, Path, description = "The item's key, e.g. SHOP-12")), security((), ("bearer" = [])),
    responses(
        (status = 200, description = "The item's events, oldest first", body = Vec<crate::shapes::EventShape>),
        (status = 401, description = "Reads need the token (`auth_reads`)", body = crate::schema::ErrorBody),
        (status = 404, description = "No such item", body = crate::schema::ErrorBody),
        (status = 503, description = "The store cannot be reached", body = crate::schema::ErrorBody),
    ))]
pub(crate) async fn events(State(state): State<AppState>, Path(raw): Path<String>) -> Result<Json<Value>, ApiError> {
    let key = key(&raw)?;
    if state.store.get_item(&key).await?.is_none() {
        return Err(ApiError::NotFound(format!("no item {key}")));
    }
    let events = state.store.events_for_item(&key).await?;
    Ok(Json(Value::Array(events.iter().map(shapes::event).collect())))
}

async fn act(state: &AppState, raw: &str, action: OperatorAction) -> Result<Json<Value>, ApiError> {
    let key = key(raw)?;
    let t = orch_engine::ops::apply(state.store.as_ref(), &state.config, &key, action, state.clock.now())
        .await
        .map_err(|e| match e {
            OpError::NoSuchItem(k) => ApiError::NotFound(format!("no item {k}")),
            e @ (OpError::Refused { .. } | OpError::Busy(_)) => ApiError::Conflict(e.to_string()),
            OpError::Store(e) => e.into(),
        })?;
    Ok(Json(shapes::transition(&key, action, &t)))
}

/// Runs the item's current stage again.
#[utoipa::path(post, path = "/items/{key}/retry", operation_id = "retryItem", tag = "items", params(("key" = String, Path, description = "The item's key, e.g. SHOP-12")), security(("bearer" = [])),
    responses(crate::schema::ActionResponses))]
pub(crate) async fn retry(State(state): State<AppState>, Path(raw): Path<String>) -> Result<Json<Value>, ApiError> {
    act(&state, &raw, OperatorAction::Retry).await
}

/// Cancels the item and its open jobs.
#[utoipa::path(post, path = "/items/{key}/cancel", operation_id = "cancelItem", tag = "items", params(("key" = String, Path, description = "The item's key, e.g. SHOP-12")), security(("bearer" = [])),
    responses(crate::schema::ActionResponses))]
pub(crate) async fn cancel(State(state): State<AppState>, Path(raw): Path<String>) -> Result<Json<Value>, ApiError> {
    act(&state, &raw, OperatorAction::Cancel).await
}

/// Moves the item to its repo's full-cycle track.
#[utoipa::path(post, path = "/items/{key}/escalate", operation_id = "escalateItem", tag = "items", params(("key" = String, Path, description = "The item's key, e.g. SHOP-12")), security(("bearer" = [])),
    responses(crate::schema::ActionResponses))]
pub(crate) async fn escalate(State(state): State<AppState>, Path(raw): Path<String>) -> Result<Json<Value>, ApiError> {
    act(&state, &raw, OperatorAction::Escalate).await
}

/// Lets an item waiting for approval go on.
#[utoipa::path(post, path = "/items/{key}/approve", operation_id = "approveItem", tag = "items", params(("key" = String, Path, description = "The item's key, e.g. SHOP-12")), security(("bearer" = [])),
    responses(crate::schema::ActionResponses))]
pub(crate) async fn approve(State(state): State<AppState>, Path(raw): Path<String>) -> Result<Json<Value>, ApiError> {
    act(&state, &raw, OperatorAction::Approve).await
}
