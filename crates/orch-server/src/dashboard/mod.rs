//! The dashboard (DESIGN §8 `GET /`): the board, item pages, job logs and the
//! health page, rendered on the server from the store and kept live by one
//! small script of our own that follows `GET /events` and `GET /jobs/{id}/log`
//! over SSE.
//!
//! Its routes live under `/` and `/ui/…`, beside the JSON API's `/items/…` and
//! `/jobs/…`, and only read: every change goes through the JSON API (the item
//! page's buttons call it from the browser, with the operator's token when one
//! is set), so the dashboard has no rules and no write path of its own.
//!
//! Security: everything from items, agents and logs is escaped by [`html`]; the
//! assets are embedded in the binary; every page is sent with a strict
//! Content-Security-Policy (scripts and styles from this origin only, no inline
//! code, no framing, connections to this origin only), so a hostile title or
//! log line cannot run code even if escaping were ever missed.

mod assets;
mod board;
mod charts;
mod health;
mod html;
mod item;
mod job;
mod window;

use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;

use crate::AppState;

/// The policy every dashboard response carries: only this origin's script,
/// stylesheet, icon and connections (the charts are inline SVG markup, which
/// needs no source), no inline code, no framing, forms only to this origin.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The dashboard's routes, to be merged into the API's router.
pub(crate) fn routes(state: &AppState) -> Router<AppState> {
    Router::new()
        .route("/", get(board::page))
        .route("/ui/items/{key}", get(item::page))
        .route("/ui/jobs/{id}", get(job::page))
        .route("/ui/health", get(health::page))
        .route("/ui/assets/{name}", get(assets::asset))
        // Any other /ui/ path is a page that does not exist: say so as a page.
        .route("/ui/{*rest}", get(no_page))
        .layer(axum::middleware::from_fn_with_state(state.clone(), reads_allowed))
        .layer(axum::middleware::map_response(secure))
}

/// With `[server] auth_reads` and a token, reads need `Authorization: Bearer`,
/// which a browser cannot send when it opens a page or an `EventSource`: the
/// pages refuse, saying why, rather than show what the API would not (the
/// assets hold no data and stay open). Signing the browser in is future work.
async fn reads_allowed(
    axum::extract::State(state): axum::extract::State<AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if state.token.is_some() && state.auth_reads && !req.uri().path().starts_with("/ui/assets/") {
        return PageError {
            status: StatusCode::FORBIDDEN,
            message: "the dashboard is off while [server] auth_reads is set: a browser cannot send the bearer \
                      token with a page or an event stream. Use the JSON API with the token, or turn auth_reads \
                      off on a trusted network"
                .into(),
        }
        .into_response();
    }
    next.run(req).await
}

async fn no_page(uri: axum::http::Uri) -> PageError {
    PageError::not_found(format!("no page {}", uri.path()))
}

/// Adds the Content-Security-Policy and its companions to every response.
async fn secure(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// A page that could not be shown, as an HTML page saying why.
#[derive(Debug)]
pub(crate) struct PageError {
    status: StatusCode,
    message: String,
}

impl PageError {
    fn not_found(message: impl Into<String>) -> Self {
        Self { status: StatusCode::NOT_FOUND, message: message.into() }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self { status: StatusCode::BAD_REQUEST, message: message.into() }
    }
}

impl From<orch_store::Error> for PageError {
    fn from(e: orch_store::Error) -> Self {
        match e {
            orch_store::Error::Unavailable { .. } => {
                Self { status: StatusCode::SERVICE_UNAVAILABLE, message: "the store cannot be reached".into() }
            }
            other => {
                tracing::error!(error = %other, "dashboard page failed");
                Self {
                    status: StatusCode::INTERNAL_SERVER_ERROR,
                    message: "internal error; the server's log has the cause".into(),
                }
            }
        }
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let body = format!(
            "<h1>{}</h1><p class=\"error\">{}</p><p><a href=\"/\">Back to the board</a></p>",
            self.status.as_u16(),
            html::esc(&self.message)
        );
        (self.status, Html(html::page("Error", html::Nav::Other, None, None, &body))).into_response()
    }
}
