//! The API's outer surface through its real router (no socket): the OpenAPI
//! document it serves and how it matches what the handlers send, `[server]
//! auth_reads`, and request ids.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use orch_core::Timestamp;
use orch_engine::{Clock, ManualClock, Node, NodeOptions};
use orch_server::{AppState, router};
use orch_store::Store;
use orch_test_support::{FAST_REAPER, config_text};
use serde_json::{Value, json};
use tower::ServiceExt as _;

struct Api {
    dir: tempfile::TempDir,
    store: Arc<dyn Store>,
    config: Arc<orch_core::config::Config>,
    clock: Arc<dyn Clock>,
}

impl Api {
    /// A SQLite deployment; `env` is the `ORCH_*` overrides the config is read with.
    async fn new(env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let text = config_text("", FAST_REAPER);
        let path = dir.path().join("orch.toml");
        std::fs::write(&path, &text).unwrap();
        let env: BTreeMap<String, String> = env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        let config = orch_core::config::load(&path, &text, &env).unwrap_or_else(|e| panic!("{e}"));
        let store = orch_store::open(&format!("sqlite://{}", dir.path().join("orch.db").display())).await.unwrap();
        let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(Timestamp::from_millis(1_700_000_000_000)));
        Self { dir, store, config: Arc::new(config), clock }
    }

    fn state(&self) -> AppState {
        AppState::new(Arc::clone(&self.store), Arc::clone(&self.config), Arc::clone(&self.clock))
    }

    fn node(&self) -> Node {
        let opts = NodeOptions::new("node-surface", self.dir.path().join("data"));
        Node::new(Arc::clone(&self.store), Arc::clone(&self.config), Arc::clone(&self.clock), opts)
    }
}

struct Reply {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    text: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }
}

async fn send(app: &Router, req: Request<Body>) -> Reply {
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    let bytes = axum::body::to_bytes(res.into_body(), usize::MAX).await.unwrap();
    Reply { status, headers, text: String::from_utf8_lossy(&bytes).into_owned() }
}

async fn call(app: &Router, method: &str, uri: &str, token: Option<&str>) -> Reply {
    let mut req = Request::builder().method(method).uri(uri).header(header::CONTENT_TYPE, "application/json");
    if let Some(t) = token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let body = if uri == "/items" && method == "POST" {
        json!({"repo": "shop", "kind": "bug", "title": "t"}).to_string()
    } else {
        String::new()
    };
    send(app, req.body(Body::from(body)).unwrap()).await
}

/// Resolves `{"$ref": "#/components/schemas/X"}` against the document.
fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"].as_str() {
        Some(r) => {
            let name = r.trim_start_matches("#/components/schemas/");
            resolve(doc, &doc["components"]["schemas"][name])
        }
        None => schema,
    }
}

/// The property names a schema declares, following `allOf` (flattened structs)
/// and `oneOf` with null (optional fields).
fn properties(doc: &Value, schema: &Value) -> BTreeSet<String> {
    let schema = resolve(doc, schema);
    let mut names: BTreeSet<String> =
        schema["properties"].as_object().map(|p| p.keys().cloned().collect()).unwrap_or_default();
    for key in ["allOf", "oneOf", "anyOf"] {
        for part in schema[key].as_array().into_iter().flatten() {
            names.extend(properties(doc, part));
        }
    }
    names
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object().unwrap_or_else(|| panic!("not an object: {v}")).keys().cloned().collect()
}

/// The 200 schema of `method path` in the document.
fn ok_schema<'a>(doc: &'a Value, path: &str, method: &str) -> &'a Value {
    let s = &doc["paths"][path][method]["responses"]["200"]["content"]["application/json"]["schema"];
    assert!(!s.is_null(), "{method} {path} has no JSON 200 schema");
    s
}

#[tokio::test]
async fn openapi_document_describes_every_route_and_its_errors() {
    let api = Api::new(&[]).await;
    let r = call(&router(api.state()), "GET", "/openapi.json", None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.headers[header::CONTENT_TYPE].to_str().unwrap().starts_with("application/json"));
    let doc = r.json();
    assert_eq!(doc, serde_json::to_value(orch_server::openapi_document()).unwrap());
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{}", doc["openapi"]);
    let mut routes = BTreeSet::new();
    let mut ids = BTreeSet::new();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            routes.insert(format!("{} {path}", method.to_uppercase()));
            let id = op["operationId"].as_str().unwrap_or_else(|| panic!("{method} {path}: no operationId"));
            assert!(ids.insert(id.to_owned()), "operationId {id} is used twice");
            for (status, response) in op["responses"].as_object().unwrap() {
                if status.starts_with('4') || status.starts_with('5') {
                    let schema = &response["content"]["application/json"]["schema"];
                    assert_eq!(schema["$ref"], "#/components/schemas/Error", "{method} {path} {status}");
                }
            }
            let statuses: Vec<&String> = op["responses"].as_object().unwrap().keys().collect();
            if path != "/healthz" {
                assert!(statuses.iter().any(|s| s.starts_with('4') || *s == "503"), "{method} {path}: no error");
            }
        }
    }
    let expected: BTreeSet<String> = [
        "GET /healthz",
        "GET /readyz",
        "GET /queue",
        "GET /items",
        "POST /items",
        "GET /items/{key}",
        "GET /items/{key}/events",
        "POST /items/{key}/retry",
        "POST /items/{key}/cancel",
        "POST /items/{key}/escalate",
        "POST /items/{key}/approve",
        "GET /jobs/{id}",
        "GET /jobs/{id}/log",
        "GET /events",
        "GET /metrics",
    ]
    .map(str::to_owned)
    .into();
    assert_eq!(routes, expected);
    let error = &doc["components"]["schemas"]["Error"];
    assert_eq!(keys(&error["properties"]), ["error", "field"].map(str::to_owned).into());
    assert_eq!(error["required"], json!(["error"]));
    assert_eq!(doc["components"]["securitySchemes"]["bearer"], json!({"type": "http", "scheme": "bearer"}));
    let status = &doc["components"]["schemas"]["Item"]["properties"]["status"]["enum"];
    assert_eq!(status, &json!(["queued", "running", "waiting_approval", "blocked", "done", "cancelled"]));
}

/// What the handlers send has exactly the fields the document declares: the
/// queue document (built as JSON, beside a node so the counters are set), an item
/// with its jobs and pull request, a job, an event, a page, an action's outcome.
#[tokio::test]
async fn answers_have_exactly_the_documented_fields() {
    let api = Api::new(&[]).await;
    let node = api.node();
    let app = router(api.state().with_node(node.clone()));
    let doc = call(&app, "GET", "/openapi.json", None).await.json();
    let created = call(&app, "POST", "/items", None).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    assert_eq!(
        keys(&created.json()),
        properties(&doc, &doc["paths"]["/items"]["post"]["responses"]["201"]["content"]["application/json"]["schema"])
    );
    // A job another node holds (no process of ours), so the queue lists one, and
    // a registered node.
    let now = api.clock.now();
    let job = api.store.claim_jobs("elsewhere", 1, now, std::time::Duration::from_secs(3600)).await.unwrap();
    assert_eq!(job.len(), 1);
    node.reaper_pass().await.unwrap();
    let stop = node.shutdown_token();
    let running = tokio::spawn({
        let node = node.clone();
        async move { node.run().await }
    });
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    while call(&app, "GET", "/readyz", None).await.status != StatusCode::OK {
        assert!(tokio::time::Instant::now() < deadline, "the node never registered");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let q = call(&app, "GET", "/queue", None).await.json();
    stop.cancel();
    running.await.unwrap().unwrap();
    let queue = ok_schema(&doc, "/queue", "get");
    assert_eq!(keys(&q), properties(&doc, queue));
    let qs = resolve(&doc, queue);
    assert_eq!(keys(&q["reaper"]), properties(&doc, &qs["properties"]["reaper"]));
    assert_eq!(keys(&q["lease"]), properties(&doc, &qs["properties"]["lease"]));
    assert!(!q["reaper"]["reaped_total"].is_null(), "{q}");
    let reaped = resolve(&doc, &qs["properties"]["reaper"]);
    assert_eq!(keys(&q["reaper"]["reaped_total"]), properties(&doc, &reaped["properties"]["reaped_total"]));
    assert_eq!(keys(&q["running"][0]), properties(&doc, &qs["properties"]["running"]["items"]));
    assert_eq!(keys(&q["nodes"][0]), properties(&doc, &qs["properties"]["nodes"]["items"]));

    let item = call(&app, "GET", "/items/SHOP-1", None).await.json();
    assert_eq!(keys(&item), properties(&doc, ok_schema(&doc, "/items/{key}", "get")));
    assert_eq!(keys(&item["jobs"][0]), properties(&doc, ok_schema(&doc, "/jobs/{id}", "get")));
    let page = call(&app, "GET", "/items", None).await.json();
    assert_eq!(keys(&page), properties(&doc, ok_schema(&doc, "/items", "get")));
    let events = call(&app, "GET", "/items/SHOP-1/events", None).await.json();
    let event = &ok_schema(&doc, "/items/{key}/events", "get")["items"];
    assert_eq!(keys(&events[0]), properties(&doc, event));
    let cancelled = call(&app, "POST", "/items/SHOP-1/cancel", None).await;
    assert_eq!(cancelled.status, StatusCode::OK, "{}", cancelled.text);
    assert_eq!(keys(&cancelled.json()), properties(&doc, ok_schema(&doc, "/items/{key}/cancel", "post")));
}

#[tokio::test]
async fn auth_reads_puts_reads_behind_the_token_but_not_the_probes() {
    let reads = ["/queue", "/items", "/items/SHOP-1", "/items/SHOP-1/events", "/jobs/1", "/jobs/1/log"];
    // Off (the default): reads open, mutations need the token.
    let api = Api::new(&[]).await;
    let app = router(api.state().with_token(Some("s3cret".into())));
    assert_eq!(call(&app, "POST", "/items", Some("s3cret")).await.status, StatusCode::CREATED);
    for uri in reads {
        let r = call(&app, "GET", uri, None).await;
        assert_ne!(r.status, StatusCode::UNAUTHORIZED, "{uri}: {}", r.text);
    }
    assert_eq!(call(&app, "POST", "/items", None).await.status, StatusCode::UNAUTHORIZED);

    // On, through the environment override like every scalar key.
    let api = Api::new(&[("ORCH_SERVER_AUTH_READS", "true")]).await;
    assert!(api.config.server.auth_reads);
    let app = router(api.state().with_token(Some("s3cret".into())));
    assert_eq!(call(&app, "POST", "/items", Some("s3cret")).await.status, StatusCode::CREATED);
    for uri in reads {
        for token in [None, Some("wrong"), Some("")] {
            let r = call(&app, "GET", uri, token).await;
            assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{uri} {token:?}: {}", r.text);
            assert!(r.json()["error"].as_str().unwrap().contains("Authorization: Bearer"), "{}", r.text);
            assert_eq!(r.headers[header::WWW_AUTHENTICATE], "Bearer");
        }
        let r = call(&app, "GET", uri, Some("s3cret")).await;
        assert_ne!(r.status, StatusCode::UNAUTHORIZED, "{uri}: {}", r.text);
    }
    // An unknown route is not an oracle for what exists: 401 before 404.
    assert_eq!(call(&app, "GET", "/nope", None).await.status, StatusCode::UNAUTHORIZED);
    for open in ["/healthz", "/readyz", "/openapi.json"] {
        assert_eq!(call(&app, "GET", open, None).await.status, StatusCode::OK, "{open}");
    }
    // Mutations still need it, as before.
    for uri in
        ["/items", "/items/SHOP-1/retry", "/items/SHOP-1/cancel", "/items/SHOP-1/escalate", "/items/SHOP-1/approve"]
    {
        assert_eq!(call(&app, "POST", uri, None).await.status, StatusCode::UNAUTHORIZED, "{uri}");
        assert_eq!(call(&app, "POST", uri, Some("nope")).await.status, StatusCode::UNAUTHORIZED, "{uri}");
    }
}

#[tokio::test]
async fn auth_reads_must_be_a_boolean() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!("[server]\nauth_reads = \"yes\"\n{}", config_text("", FAST_REAPER));
    let path = dir.path().join("orch.toml");
    let err = orch_core::config::load(&path, &text, &BTreeMap::new()).unwrap_err().to_string();
    assert!(err.contains("server.auth_reads") && err.contains("boolean"), "{err}");
    let env = BTreeMap::from([("ORCH_SERVER_AUTH_READS".to_owned(), "maybe".to_owned())]);
    let err = orch_core::config::load(&path, &config_text("", FAST_REAPER), &env).unwrap_err().to_string();
    assert!(err.contains("ORCH_SERVER_AUTH_READS") && err.contains("boolean"), "{err}");
}

#[tokio::test]
async fn every_response_carries_a_request_id_and_echoes_a_fit_one() {
    let api = Api::new(&[]).await;
    let app = router(api.state().with_token(Some("s3cret".into())));
    let id_of = |r: &Reply| r.headers.get("x-request-id").map(|v| v.to_str().unwrap().to_owned());
    // Made here when absent: on answers, errors, 401s and unknown routes alike.
    let mut seen = BTreeSet::new();
    for (method, uri) in [("GET", "/healthz"), ("GET", "/items/SHOP-9"), ("POST", "/items"), ("GET", "/nope")] {
        let r = call(&app, method, uri, None).await;
        let id = id_of(&r).unwrap_or_else(|| panic!("{method} {uri}: no x-request-id"));
        assert!(!id.is_empty() && id.len() <= 128, "{id}");
        assert!(seen.insert(id), "ids repeat");
    }
    // A client's fit id is echoed.
    let given = |id: &str| Request::get("/items/SHOP-9").header("x-request-id", id).body(Body::empty()).unwrap();
    let r = send(&app, given("trace-42.abc")).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(id_of(&r).as_deref(), Some("trace-42.abc"));
    // An unfit one (spaces, too long) is replaced, never echoed.
    for bad in ["two words".to_owned(), "x".repeat(129)] {
        let r = send(&app, given(&bad)).await;
        let id = id_of(&r).unwrap();
        assert_ne!(id, bad);
        assert!(!id.is_empty() && id.len() <= 128);
    }
    // The error body keeps its shape.
    assert_eq!(keys(&r.json()), ["error"].map(str::to_owned).into());
}
