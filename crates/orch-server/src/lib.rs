//! orch's HTTP API (DESIGN §8): `GET /queue` with the reaper block, items and
//! their operator actions, jobs and their logs (ranges, live follow), every
//! event as Server-Sent Events, `/metrics`, health and readiness.
//!
//! [`router`] builds the whole API from an [`AppState`], so tests drive it with
//! `tower::ServiceExt::oneshot` and no socket; `orch serve` binds it on
//! `server.listen` beside its node and stops accepting when the node's shutdown
//! token fires.
//!
//! Architecture invariants:
//! - Every error is JSON `{"error": …, "field": …}` through one [`ApiError`]; a
//!   client's mistake is a 4xx and never a 500 or a panic; an internal error is a
//!   generic 500 whose cause is logged, never sent.
//! - The API has no rules of its own: items are checked by
//!   `orch_engine::ops::new_item` and changed by `orch_engine::ops::apply`, the
//!   same functions the CLI calls, and documents are built by [`shapes`] and
//!   [`queue::document`], which the CLI's `--json` prints too.
//! - With a token configured every mutation (any method but GET/HEAD/OPTIONS)
//!   needs `Authorization: Bearer <token>`, compared in time independent of the
//!   given value; [`check_exposure`] refuses an open non-loopback listener.
//! - Request bodies are bounded ([`MAX_BODY_BYTES`]), list pages are bounded, and
//!   agent-writable logs are read through `orch_engine::untrusted` (no links
//!   followed, bounded, off the runtime's threads).

mod access;
mod auth;
mod coalesce;
mod error;
mod events;
mod health;
mod items;
mod jobs;
mod logs;
mod openapi;
mod prometheus;
pub mod queue;
pub mod schema;
pub mod shapes;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use orch_core::config::Config;
use orch_engine::{Clock, Node};
use orch_store::Store;
use tokio_util::sync::CancellationToken;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use auth::check_exposure;
pub use error::ApiError;
pub use jobs::MAX_LOG_BYTES;
pub use prometheus::upkeep as metrics_upkeep;

/// The largest request body accepted; a larger one is refused with 413 before it
/// is read whole. Items are a title and a body of text: 1 MiB is generous.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// What every handler reads: the store, the config, the clock, and the node the
/// server runs beside (for live counters), if any.
#[derive(Clone)]
pub struct AppState {
    store: Arc<dyn Store>,
    config: Arc<Config>,
    clock: Arc<dyn Clock>,
    node: Option<Node>,
    /// The bearer token mutations need; `None` leaves them open.
    token: Option<Arc<str>>,
    /// Fires when the server stops: open event streams end cleanly.
    shutdown: CancellationToken,
    /// What the event streams share.
    events: Arc<events::Hub>,
    /// Whether reads need the token too (`[server] auth_reads`).
    auth_reads: bool,
    /// `GET /queue`'s document, built once for concurrent requests.
    queue: Arc<coalesce::Coalesced>,
}

impl AppState {
    /// A state with no node (`/readyz` answers for the store alone), no token
    /// (mutations open), and streams that end only with their clients.
    pub fn new(store: Arc<dyn Store>, config: Arc<Config>, clock: Arc<dyn Clock>) -> Self {
        let auth_reads = config.server.auth_reads;
        Self {
            store,
            config,
            clock,
            node: None,
            token: None,
            shutdown: CancellationToken::new(),
            events: Arc::default(),
            auth_reads,
            queue: Arc::default(),
        }
    }

    /// Makes `/readyz` wait for `node`'s registration, judges leases in
    /// `GET /queue` with its offset to the store's clock, and ends open streams
    /// when it shuts down.
    #[must_use]
    pub fn with_node(mut self, node: Node) -> Self {
        self.shutdown = node.shutdown_token();
        self.node = Some(node);
        self
    }

    /// Ends open streams (`/events`, log follows) when `token` fires; `with_node`
    /// uses the node's shutdown token.
    #[must_use]
    pub fn with_shutdown(mut self, token: CancellationToken) -> Self {
        self.shutdown = token;
        self
    }

    /// Requires `Authorization: Bearer <token>` on every mutation. An empty token
    /// counts as none: it would let an empty `Bearer ` header through.
    #[must_use]
    pub fn with_token(mut self, token: Option<String>) -> Self {
        self.token = token.filter(|t| !t.is_empty()).map(Arc::from);
        self
    }
}

/// The documented routes: each handler's `#[utoipa::path]` adds its operation to
/// the document as it adds its route to the router, so neither can lack the other.
fn documented() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .routes(routes!(queue::get_queue))
        .routes(routes!(items::list, items::create))
        .routes(routes!(items::show))
        .routes(routes!(items::events))
        .routes(routes!(items::retry))
        .routes(routes!(items::cancel))
        .routes(routes!(items::escalate))
        .routes(routes!(items::approve))
        .routes(routes!(jobs::show))
        .routes(routes!(jobs::log))
        .routes(routes!(events::stream))
        .routes(routes!(prometheus::get_metrics))
}

/// The API's OpenAPI document, as `GET /openapi.json` serves it.
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    documented().split_for_parts().1
}

/// The whole API over `state`.
pub fn router(state: AppState) -> Router {
    // Installed before the node records anything, so no early count is lost.
    prometheus::handle();
    let (routes, doc) = documented().split_for_parts();
    routes
        .route("/openapi.json", openapi::route(&doc))
        .fallback(error::unknown_route)
        .layer(axum::middleware::from_fn_with_state(state.clone(), auth::require_token))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(RequestBodyLimitLayer::new(MAX_BODY_BYTES))
        // Whatever a layer below answers on its own (405 from the router, 413
        // from the body limit) leaves as JSON too.
        .layer(axum::middleware::map_response(error::json_errors))
        // Outermost: every request gets an id (the client's, if it sent a sane
        // one), echoed on the response and named in its access log line.
        .layer(PropagateRequestIdLayer::new(access::REQUEST_ID))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(access::span)
                .on_request(())
                .on_response(access::log_response)
                // 5xx are logged once, with their cause, by `ApiError`.
                .on_failure(()),
        )
        .layer(SetRequestIdLayer::new(access::REQUEST_ID, access::RandomId))
        .layer(axum::middleware::from_fn(access::drop_unfit_request_id))
        .with_state(state)
}

/// Whether every address is a loopback one (what `check_exposure` allows open).
fn all_loopback(addrs: &[SocketAddr]) -> bool {
    !addrs.is_empty() && addrs.iter().all(|a| a.ip().is_loopback())
}
