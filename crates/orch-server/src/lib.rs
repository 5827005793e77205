//! orch's HTTP API (DESIGN §8): `GET /queue` with the reaper block, items and
//! their operator actions, jobs and their logs (ranges, live follow), every
//! event as Server-Sent Events, `/metrics`, health and readiness; and the
//! dashboard (`/`, `/ui/…`; the `dashboard` module, docs/DASHBOARD.md).
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

mod auth;
mod dashboard;
mod error;
mod events;
mod health;
mod items;
mod jobs;
mod logs;
mod prometheus;
pub mod queue;
pub mod shapes;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use orch_core::config::Config;
use orch_engine::{Clock, Node};
use orch_store::Store;
use tokio_util::sync::CancellationToken;
use tower_http::limit::RequestBodyLimitLayer;

pub use auth::check_exposure;
pub use dashboard::CONTENT_SECURITY_POLICY;
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
}

impl AppState {
    /// A state with no node (`/readyz` answers for the store alone), no token
    /// (mutations open), and streams that end only with their clients.
    pub fn new(store: Arc<dyn Store>, config: Arc<Config>, clock: Arc<dyn Clock>) -> Self {
        Self {
            store,
            config,
            clock,
            node: None,
            token: None,
            shutdown: CancellationToken::new(),
            events: Arc::default(),
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

/// The whole API over `state`.
pub fn router(state: AppState) -> Router {
    // Installed before the node records anything, so no early count is lost.
    prometheus::handle();
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/queue", get(queue::get_queue))
        .route("/items", get(items::list).post(items::create))
        .route("/items/{key}", get(items::show))
        .route("/items/{key}/events", get(items::events))
        .route("/items/{key}/retry", post(items::retry))
        .route("/items/{key}/cancel", post(items::cancel))
        .route("/items/{key}/escalate", post(items::escalate))
        .route("/items/{key}/approve", post(items::approve))
        .route("/jobs/{id}", get(jobs::show))
        .route("/jobs/{id}/log", get(jobs::log))
        .route("/events", get(events::stream))
        .route("/metrics", get(prometheus::get_metrics))
        .fallback(error::unknown_route)
        .layer(axum::middleware::from_fn_with_state(state.clone(), auth::require_token))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(RequestBodyLimitLayer::new(MAX_BODY_BYTES))
        // Outermost: whatever a layer below answers on its own (405 from the
        // router, 413 from the body limit) leaves as JSON too.
        .layer(axum::middleware::map_response(error::json_errors))
        // The dashboard's pages, outside the JSON error layer: they answer HTML.
        .merge(dashboard::routes())
        .with_state(state)
}

/// Whether every address is a loopback one (what `check_exposure` allows open).
fn all_loopback(addrs: &[SocketAddr]) -> bool {
    !addrs.is_empty() && addrs.iter().all(|a| a.ip().is_loopback())
}
