//! `GET /openapi.json`: the API's OpenAPI document, generated from the handlers'
//! `#[utoipa::path]` annotations and the shapes' `ToSchema` derives as the router
//! is built (`utoipa_axum`), so a route cannot be served without being described.
//!
//! No UI is served: the document is for tools (schemathesis in `scripts/test`,
//! client generators), and nothing is downloaded at run time.
//!
//! The document is open even with `[server] auth_reads = true`: it is the same for
//! every deployment of this version and holds no data.

use std::sync::Arc;

use axum::http::header;
use axum::routing::{MethodRouter, get};
use utoipa::Modify;
use utoipa::OpenApi;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};

/// The name of the bearer-token security scheme in the document.
pub(crate) const BEARER: &str = "bearer";

/// The document's frame: title, version, tags and the security scheme; the paths
/// and schemas are added by the routes as the router is built.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "orch",
        description = "orch's HTTP API: the queue with its reaper block, work items and their operator \
                       actions, jobs and their logs. Errors are JSON {\"error\", \"field\"}. With \
                       ORCH_SERVER_TOKEN set, mutations (and, with [server] auth_reads, reads) need \
                       `Authorization: Bearer <token>`."
    ),
    modifiers(&BearerScheme),
    // The actions' outcome is named by `schema::ActionResponses`, whose derive
    // does not register the schemas it refers to the way a route's does.
    components(schemas(crate::shapes::TransitionShape)),
    tags(
        (name = "health", description = "Probes for load balancers and supervisors"),
        (name = "queue", description = "What the deployment is doing"),
        (name = "items", description = "Work items and the operator actions on them"),
        (name = "jobs", description = "One attempt of one stage, and its agent's log"),
    )
)]
pub(crate) struct ApiDoc;

struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(BEARER, SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
    }
}

/// `GET /openapi.json`, serving `doc` rendered once, when the router is built.
pub(crate) fn route<S: Clone + Send + Sync + 'static>(doc: &utoipa::openapi::OpenApi) -> MethodRouter<S> {
    // Rendering a document of plain strings and maps cannot fail; should it, the
    // route says so as a JSON error instead of a half document.
    let body: Arc<str> = match serde_json::to_string(doc) {
        Ok(text) => Arc::from(text),
        Err(e) => {
            Arc::from(serde_json::json!({"error": format!("the OpenAPI document did not render: {e}")}).to_string())
        }
    };
    get(move || {
        let body = Arc::clone(&body);
        async move { ([(header::CONTENT_TYPE, "application/json")], body.to_string()) }
    })
}
