//! The API's one error type: every failure leaves as JSON `{"error": …, "field":
//! …}` with a status saying whose mistake it was. Client mistakes are 4xx and are
//! not logged as errors; an internal error is logged with its cause and answered
//! with a generic 500, so nothing about the store leaks to a client.

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// Why a request failed.
#[derive(Debug)]
pub enum ApiError {
    /// 400: the request cannot be parsed (malformed JSON, a bad query string).
    BadRequest(String),
    /// 401: a mutation without the right bearer token.
    Unauthorized,
    /// 404: no such item, job or route.
    NotFound(String),
    /// 409: the item's state does not allow the action.
    Conflict(String),
    /// 413: the body is over `MAX_BODY_BYTES`.
    TooLarge,
    /// 422: well-formed but invalid, naming the field when there is one.
    Invalid { field: Option<String>, message: String },
    /// 503: the store cannot be reached, or the node is not ready.
    Unavailable(String),
    /// 500: anything else; the cause is logged, never sent.
    Internal(String),
}

impl ApiError {
    pub(crate) fn invalid(field: &str, message: impl Into<String>) -> Self {
        Self::Invalid { field: Some(field.to_owned()), message: message.into() }
    }

    fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = match self {
            Self::BadRequest(m) | Self::NotFound(m) | Self::Conflict(m) | Self::Unavailable(m) => json!({"error": m}),
            Self::Unauthorized => {
                json!({"error": "this request needs the header Authorization: Bearer <ORCH_SERVER_TOKEN>"})
            }
            Self::TooLarge => json!({"error": format!("the request body is over {} bytes", crate::MAX_BODY_BYTES)}),
            Self::Invalid { field: Some(f), message } => json!({"error": message, "field": f}),
            Self::Invalid { field: None, message } => json!({"error": message}),
            Self::Internal(cause) => {
                tracing::error!(error = %cause, "request failed");
                json!({"error": "internal error; the server's log has the cause"})
            }
        };
        let mut response = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<orch_store::Error> for ApiError {
    fn from(e: orch_store::Error) -> Self {
        match e {
            orch_store::Error::NotFound { what } => Self::NotFound(format!("{what} not found")),
            orch_store::Error::Invalid(m) => Self::Invalid { field: None, message: m },
            orch_store::Error::Unavailable { .. } => Self::Unavailable("the store cannot be reached".into()),
            other => Self::Internal(other.to_string()),
        }
    }
}

impl From<BytesRejection> for ApiError {
    fn from(r: BytesRejection) -> Self {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE { Self::TooLarge } else { Self::BadRequest(r.body_text()) }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        Self::BadRequest(r.body_text())
    }
}

/// The fallback: a path the API does not have.
pub(crate) async fn unknown_route(uri: axum::http::Uri) -> ApiError {
    ApiError::NotFound(format!("no route {}", uri.path()))
}

/// Turns an error answered below the handlers (405 from the router, 413 from the
/// body limit) into the JSON shape, keeping its status and headers (`Allow`).
pub(crate) async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let message = match status {
        StatusCode::METHOD_NOT_ALLOWED => "method not allowed on this route".to_owned(),
        StatusCode::PAYLOAD_TOO_LARGE => format!("the request body is over {} bytes", crate::MAX_BODY_BYTES),
        s => s.canonical_reason().unwrap_or("error").to_lowercase(),
    };
    let (mut parts, _) = response.into_parts();
    let body = json!({"error": message}).to_string();
    parts.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(body))
}
