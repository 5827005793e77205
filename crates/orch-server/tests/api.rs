//! The API through its real router (`tower::ServiceExt::oneshot`, no socket), on
//! SQLite and PostgreSQL: every route, its error paths, and the bearer token.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use orch_core::Timestamp;
use orch_engine::{Clock, ManualClock, Node, NodeOptions};
use orch_server::{AppState, router};
use orch_store::{RunInfo, Store};
use orch_test_support::{FAST_REAPER, PgDatabase, config_text};
use serde_json::{Value, json};
use tower::ServiceExt as _;

use orch_test_support::Backend;

/// A store, a config and the router over them.
struct Api {
    dir: tempfile::TempDir,
    store: Arc<dyn Store>,
    config: Arc<orch_core::config::Config>,
    clock: Arc<dyn Clock>,
    _pg: Option<PgDatabase>,
}

/// A response: status, headers, body as text.
struct Reply {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    text: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }

    /// Asserts the status and that the body is the error shape; returns it.
    fn error(&self, status: StatusCode) -> Value {
        assert_eq!(self.status, status, "{}", self.text);
        let v = self.json();
        assert!(v["error"].is_string(), "no error message: {v}");
        v
    }
}

impl Api {
    async fn new(backend: Backend) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let text = config_text("", FAST_REAPER);
        let path = dir.path().join("orch.toml");
        std::fs::write(&path, &text).unwrap();
        let config = orch_core::config::load(&path, &text, &BTreeMap::new()).unwrap_or_else(|e| panic!("{e}"));
        let (url, pg) = backend.store_url(dir.path(), "orch_server");
        let store = orch_store::open(&url).await.unwrap();
        let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(Timestamp::from_millis(1_700_000_000_000)));
        Self { dir, store, config: Arc::new(config), clock, _pg: pg }
    }

    fn state(&self) -> AppState {
        AppState::new(Arc::clone(&self.store), Arc::clone(&self.config), Arc::clone(&self.clock))
    }

    fn app(&self) -> Router {
        router(self.state())
    }

    fn node(&self) -> Node {
        let opts = NodeOptions::new("node-api", self.dir.path().join("data"));
        Node::new(Arc::clone(&self.store), Arc::clone(&self.config), Arc::clone(&self.clock), opts)
    }
}

async fn send(app: &Router, req: Request<Body>) -> Reply {
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    let bytes = axum::body::to_bytes(res.into_body(), usize::MAX).await.unwrap();
    Reply { status, headers, text: String::from_utf8_lossy(&bytes).into_owned() }
}

async fn get(app: &Router, uri: &str) -> Reply {
    send(app, Request::get(uri).body(Body::empty()).unwrap()).await
}

async fn post(app: &Router, uri: &str, body: &str) -> Reply {
    post_as(app, uri, body, None).await
}

async fn post_as(app: &Router, uri: &str, body: &str, token: Option<&str>) -> Reply {
    let mut req = Request::post(uri).header(header::CONTENT_TYPE, "application/json");
    if let Some(t) = token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    send(app, req.body(Body::from(body.to_owned())).unwrap()).await
}

async fn add(app: &Router, title: &str) -> String {
    let r = post(app, "/items", &json!({"repo": "shop", "kind": "bug", "title": title}).to_string()).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    r.json()["key"].as_str().unwrap().to_owned()
}

orch_test_support::on_both_backends!(
    health_and_readiness_answer,
    readyz_waits_for_the_node_to_register,
    queue_has_the_cli_document_and_exactly_the_reaper_keys,
    queue_serves_the_nodes_live_counters,
    items_are_filed_with_location_and_read_back,
    item_list_filters_and_pages_by_cursor,
    item_validation_is_422_naming_the_field,
    client_mistakes_are_json_4xx_never_500,
    unknown_items_and_jobs_are_404,
    actions_apply_or_are_refused_with_409,
    job_and_its_log_tail_are_served,
    mutations_need_the_token_when_one_is_set,
);

async fn health_and_readiness_answer(b: Backend) {
    let api = Api::new(b).await;
    let app = api.app();
    let r = get(&app, "/healthz").await;
    assert_eq!((r.status, r.json()), (StatusCode::OK, json!({"status": "ok"})));
    let r = get(&app, "/readyz").await;
    assert_eq!((r.status, r.json()), (StatusCode::OK, json!({"status": "ready"})));
}

/// Beside a node, `/readyz` is 503 with the reason until the node has registered.
async fn readyz_waits_for_the_node_to_register(b: Backend) {
    let api = Api::new(b).await;
    let node = api.node();
    let app = router(api.state().with_node(node.clone()));
    let v = get(&app, "/readyz").await.error(StatusCode::SERVICE_UNAVAILABLE);
    assert!(v["error"].as_str().unwrap().contains("node-api has not registered"), "{v}");
    let stop = node.shutdown_token();
    let running = tokio::spawn(async move { node.run().await });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while get(&app, "/readyz").await.status != StatusCode::OK {
        assert!(tokio::time::Instant::now() < deadline, "the node never became ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.cancel();
    running.await.unwrap().unwrap();
}

const REAPER_KEYS: [&str; 8] = [
    "finalize_grace_s",
    "finalizer_defers_total",
    "finalizer_liveness_enabled",
    "finalizer_owned",
    "interval_s",
    "last_pass_at",
    "max_running_s",
    "reaped_total",
];

/// Without a node the document is `orch queue --json`'s, with the cluster's
/// counters from the store (zero, no pass yet).
async fn queue_has_the_cli_document_and_exactly_the_reaper_keys(b: Backend) {
    let api = Api::new(b).await;
    let app = api.app();
    add(&app, "one").await;
    let r = get(&app, "/queue").await;
    assert_eq!(r.status, StatusCode::OK);
    let q = r.json();
    let same = orch_server::queue::document(api.store.as_ref(), &api.config, api.clock.now()).await.unwrap();
    assert_eq!(q, same);
    assert_eq!(q["items_by_status"]["queued"], 1);
    assert_eq!(q["items_by_stage"]["development"], 1);
    let reaper = q["reaper"].as_object().unwrap();
    assert_eq!(reaper.keys().map(String::as_str).collect::<Vec<_>>(), REAPER_KEYS);
    assert_eq!(reaper["interval_s"], json!(0.2));
    assert_eq!(reaper["finalize_grace_s"], json!(1.0));
    assert_eq!(reaper["max_running_s"], json!(60.0));
    assert_eq!(reaper["finalizer_liveness_enabled"], json!(true));
    assert_eq!(reaper["finalizer_defers_total"], 0);
    assert_eq!(reaper["finalizer_owned"], 0);
    assert_eq!(reaper["reaped_total"], json!({"tier1": 0, "tier2": 0, "tier3": 0}));
    assert!(reaper["last_pass_at"].is_null(), "no pass yet: {}", reaper["last_pass_at"]);
    assert_eq!(q["counters_from"], "cluster");
}

/// Beside a node, the reaper block carries the store's counters, which that
/// node's passes feed: its pass shows up as `last_pass_at`.
async fn queue_serves_the_nodes_live_counters(b: Backend) {
    let api = Api::new(b).await;
    let node = api.node();
    let app = router(api.state().with_node(node.clone()));
    node.reaper_pass().await.unwrap();
    let q = get(&app, "/queue").await.json();
    let reaper = &q["reaper"];
    assert_eq!(reaper.as_object().unwrap().keys().map(String::as_str).collect::<Vec<_>>(), REAPER_KEYS);
    assert_eq!(q["counters_from"], "cluster");
    assert_eq!(reaper["finalizer_defers_total"], 0);
    assert_eq!(reaper["finalizer_owned"], 0);
    assert_eq!(reaper["reaped_total"], json!({"tier1": 0, "tier2": 0, "tier3": 0}));
    let at = node.metrics().last_pass_at_ms;
    assert!(at > 0, "a pass was run");
    assert_eq!(reaper["last_pass_at"], Timestamp::from_millis(at).to_rfc3339());
}

async fn items_are_filed_with_location_and_read_back(b: Backend) {
    let api = Api::new(b).await;
    let app = api.app();
    let body = json!({"repo": "shop", "kind": "feature", "title": "dark mode", "body": "please", "track": "quick"});
    let r = post(&app, "/items", &body.to_string()).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.headers[header::LOCATION], "/items/SHOP-1");
    let created = r.json();
    assert_eq!(
        (&created["key"], &created["kind"], &created["track"], &created["stage"], &created["status"]),
        (&json!("SHOP-1"), &json!("feature"), &json!("quick"), &json!("development"), &json!("queued"))
    );
    assert_eq!(created["body"], "please");
    let shown = get(&app, "/items/SHOP-1").await;
    assert_eq!(shown.status, StatusCode::OK);
    let shown = shown.json();
    assert_eq!(shown["title"], "dark mode");
    assert_eq!(shown["jobs"].as_array().unwrap().len(), 1);
    assert_eq!(shown["jobs"][0]["status"], "queued");
    let events = get(&app, "/items/SHOP-1/events").await.json();
    let kinds: Vec<&str> = events.as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["item.created", "job.queued"]);
    // Defaults: no body, the repo's track for the kind (features: full-cycle).
    let r = post(&app, "/items", r#"{"repo":"shop","kind":"feature","title":"t","body":null}"#).await;
    assert_eq!((r.json()["track"].as_str(), r.json()["stage"].as_str()), (Some("full-cycle"), Some("analysis")));
}

async fn item_list_filters_and_pages_by_cursor(b: Backend) {
    let api = Api::new(b).await;
    let app = api.app();
    for i in 0..11 {
        add(&app, &format!("bug {i}")).await;
    }
    post(&app, "/items", r#"{"repo":"shop","kind":"chore","title":"c"}"#).await;
    post(&app, "/items/SHOP-2/cancel", "").await;
    let keys = |v: &Value| {
        v["items"].as_array().unwrap().iter().map(|i| i["key"].as_str().unwrap().to_owned()).collect::<Vec<_>>()
    };
    // Pages of 5 in key order (SHOP-10 after SHOP-9), each `next` the last key.
    let mut seen = Vec::new();
    let mut uri = "/items?limit=5".to_owned();
    loop {
        let page = get(&app, &uri).await.json();
        seen.extend(keys(&page));
        match page["next"].as_str() {
            Some(next) => uri = format!("/items?limit=5&cursor={next}"),
            None => break,
        }
    }
    assert_eq!(seen, (1..=12).map(|n| format!("SHOP-{n}")).collect::<Vec<_>>());
    assert_eq!(keys(&get(&app, "/items?kind=chore").await.json()), ["SHOP-12"]);
    assert_eq!(keys(&get(&app, "/items?status=cancelled").await.json()), ["SHOP-2"]);
    assert_eq!(
        get(&app, "/items?status=queued&repo=shop&stage=development").await.json()["items"].as_array().unwrap().len(),
        11
    );
    assert!(keys(&get(&app, "/items?repo=nope").await.json()).is_empty());
    let page = get(&app, "/items?limit=12").await.json();
    assert!(page["next"].is_null(), "an exact last page has no next: {page}");
    for (query, field) in [
        ("status=sleeping", "status"),
        ("kind=epic", "kind"),
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("limit=ten", "limit"),
        ("cursor=not-a-key", "cursor"),
    ] {
        let v = get(&app, &format!("/items?{query}")).await.error(StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(v["field"], field, "{query}: {v}");
    }
}

async fn item_validation_is_422_naming_the_field(b: Backend) {
    let api = Api::new(b).await;
    let app = api.app();
    for (body, field, says) in [
        (json!({"kind": "bug", "title": "t"}), "repo", "repo is required"),
        (json!({"repo": "nope", "kind": "bug", "title": "t"}), "repo", "unknown repo \"nope\""),
        (json!({"repo": "shop", "kind": "epic", "title": "t"}), "kind", "epic"),
        (json!({"repo": "shop", "title": "t"}), "kind", "kind is required"),
        (json!({"repo": "shop", "kind": "bug"}), "title", "title is required"),
        (json!({"repo": "shop", "kind": "bug", "title": "  "}), "title", "must not be empty"),
        (json!({"repo": "shop", "kind": "bug", "title": 7}), "title", "must be a string"),
        (json!({"repo": "shop", "kind": "bug", "title": "t", "track": "slow"}), "track", "unknown track \"slow\""),
        (json!({"repo": "shop", "kind": "bug", "title": "t", "titel": "x"}), "titel", "unknown field"),
    ] {
        let v = post(&app, "/items", &body.to_string()).await.error(StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(v["field"], field, "{body}: {v}");
        assert!(v["error"].as_str().unwrap().contains(says), "{body}: {v}");
    }
    let v = post(&app, "/items", "[1, 2]").await.error(StatusCode::UNPROCESSABLE_ENTITY);
    assert!(v.get("field").is_none(), "{v}");
    assert!(get(&app, "/items").await.json()["items"].as_array().unwrap().is_empty(), "nothing was filed");
}

async fn client_mistakes_are_json_4xx_never_500(b: Backend) {
    let api = Api::new(b).await;
    let app = api.app();
    let v = post(&app, "/items", "{\"repo\": ").await.error(StatusCode::BAD_REQUEST);
    assert!(v["error"].as_str().unwrap().contains("not valid JSON"), "{v}");
    post(&app, "/items", "").await.error(StatusCode::BAD_REQUEST);
    // Over 1 MiB: refused whether the length is declared or streamed.
    let big =
        format!("{{\"repo\":\"shop\",\"kind\":\"bug\",\"title\":\"t\",\"body\":\"{}\"}}", "x".repeat(1024 * 1024));
    post(&app, "/items", &big).await.error(StatusCode::PAYLOAD_TOO_LARGE);
    let stream = futures_like_stream(big.into_bytes());
    let req = Request::post("/items").body(stream).unwrap();
    send(&app, req).await.error(StatusCode::PAYLOAD_TOO_LARGE);
    // Wrong method: 405 with Allow; unknown route: 404.
    let r = send(&app, Request::delete("/items").body(Body::empty()).unwrap()).await;
    r.error(StatusCode::METHOD_NOT_ALLOWED);
    assert!(r.headers.contains_key(header::ALLOW));
    get(&app, "/items/SHOP-1/retry").await.error(StatusCode::METHOD_NOT_ALLOWED);
    get(&app, "/nope").await.error(StatusCode::NOT_FOUND);
    post(&app, "/items/SHOP-1/explode", "").await.error(StatusCode::NOT_FOUND);
    let r = get(&app, "/items?limit=%ZZ").await;
    assert!(r.status.is_client_error(), "{}: {}", r.status, r.text);
    get(&app, "/jobs/1/log?tail=-3").await.error(StatusCode::UNPROCESSABLE_ENTITY);
    // Past the int64 the document declares (schemathesis found this one).
    let e = get(&app, "/jobs/1/log?tail=9223372036854775808").await.error(StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(e["field"], "tail", "{e}");
}

/// A body whose length is not declared: the limit applies as it streams.
fn futures_like_stream(bytes: Vec<u8>) -> Body {
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = bytes.chunks(64 * 1024).map(|c| Ok(c.to_vec())).collect();
    Body::from_stream(futures::stream::iter(chunks))
}

async fn unknown_items_and_jobs_are_404(b: Backend) {
    let api = Api::new(b).await;
    let app = api.app();
    for uri in ["/items/SHOP-9", "/items/SHOP-9/events", "/items/garbage", "/jobs/9", "/jobs/x", "/jobs/9/log"] {
        let v = get(&app, uri).await.error(StatusCode::NOT_FOUND);
        assert!(v["error"].as_str().unwrap().starts_with("no "), "{uri}: {v}");
    }
    for action in ["retry", "cancel", "escalate", "approve"] {
        post(&app, &format!("/items/SHOP-9/{action}"), "").await.error(StatusCode::NOT_FOUND);
    }
}

async fn actions_apply_or_are_refused_with_409(b: Backend) {
    let api = Api::new(b).await;
    let app = api.app();
    let key = add(&app, "x").await;
    let v = post(&app, &format!("/items/{key}/approve"), "").await.error(StatusCode::CONFLICT);
    assert!(v["error"].as_str().unwrap().contains("cannot approve"), "{v}");
    let r = post(&app, &format!("/items/{key}/escalate"), "").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let t = r.json();
    assert_eq!(
        (&t["action"], &t["track"], &t["stage"]),
        (&json!("escalate"), &json!("full-cycle"), &json!("analysis"))
    );
    let r = post(&app, &format!("/items/{key}/cancel"), "").await;
    assert_eq!((r.status, r.json()["status"].as_str()), (StatusCode::OK, Some("cancelled")));
    for action in ["retry", "cancel", "escalate", "approve"] {
        let v = post(&app, &format!("/items/{key}/{action}"), "").await.error(StatusCode::CONFLICT);
        assert!(v["error"].as_str().unwrap().contains(&format!("cannot {action}")), "{v}");
    }
    assert_eq!(get(&app, &format!("/items/{key}")).await.json()["status"], "cancelled");
}

async fn job_and_its_log_tail_are_served(b: Backend) {
    let api = Api::new(b).await;
    let app = api.app();
    add(&app, "x").await;
    let job = get(&app, "/jobs/1").await;
    assert_eq!(job.status, StatusCode::OK);
    assert_eq!((job.json()["item"].as_str(), job.json()["status"].as_str()), (Some("SHOP-1"), Some("queued")));
    let v = get(&app, "/jobs/1/log").await.error(StatusCode::NOT_FOUND);
    assert!(v["error"].as_str().unwrap().contains("no log yet"), "{v}");
    // The job starts with its log in the data dir; the agent writes to it.
    let now = api.clock.now();
    let claimed = api.store.claim_jobs("n", 1, now, Duration::from_secs(30)).await.unwrap();
    let log = api.dir.path().join("job-1.log");
    let run = RunInfo { pid: 1, pgid: 1, proc_start: None, log_path: log.display().to_string() };
    api.store.record_started(claimed[0].id, claimed[0].epoch, run, now).await.unwrap();
    get(&app, "/jobs/1/log").await.error(StatusCode::NOT_FOUND);
    std::fs::write(&log, "line one\nline two\n").unwrap();
    let r = get(&app, "/jobs/1/log").await;
    assert_eq!((r.status, r.text.as_str()), (StatusCode::OK, "line one\nline two\n"));
    assert!(r.headers[header::CONTENT_TYPE].to_str().unwrap().starts_with("text/plain"));
    assert_eq!(get(&app, "/jobs/1/log?tail=9").await.text, "line two\n");
    assert_eq!(get(&app, "/jobs/1/log?tail=0").await.text, "");
    // An agent that swaps its log for a link is not followed.
    std::fs::remove_file(&log).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", &log).unwrap();
    let v = get(&app, "/jobs/1/log").await.error(StatusCode::CONFLICT);
    assert!(v["error"].as_str().unwrap().contains("symbolic link"), "{v}");
}

async fn mutations_need_the_token_when_one_is_set(b: Backend) {
    let api = Api::new(b).await;
    let app = router(api.state().with_token(Some("s3cret".into())));
    let body = json!({"repo": "shop", "kind": "bug", "title": "t"}).to_string();
    for token in [None, Some("wrong"), Some("s3cre"), Some("s3cretX"), Some("")] {
        let r = post_as(&app, "/items", &body, token).await;
        r.error(StatusCode::UNAUTHORIZED);
        assert_eq!(r.headers[header::WWW_AUTHENTICATE], "Bearer");
    }
    let r = send(
        &app,
        Request::post("/items").header(header::AUTHORIZATION, "Basic s3cret").body(Body::from(body.clone())).unwrap(),
    )
    .await;
    r.error(StatusCode::UNAUTHORIZED);
    assert_eq!(post_as(&app, "/items", &body, Some("s3cret")).await.status, StatusCode::CREATED);
    for action in ["retry", "cancel", "escalate", "approve"] {
        let uri = format!("/items/SHOP-1/{action}");
        post_as(&app, &uri, "", None).await.error(StatusCode::UNAUTHORIZED);
        post_as(&app, &uri, "", Some("wrong")).await.error(StatusCode::UNAUTHORIZED);
        let right = post_as(&app, &uri, "", Some("s3cret")).await;
        assert!(matches!(right.status, StatusCode::OK | StatusCode::CONFLICT), "{action}: {}", right.text);
    }
    // Reads stay open.
    assert_eq!(get(&app, "/items/SHOP-1").await.status, StatusCode::OK);
    assert_eq!(get(&app, "/queue").await.status, StatusCode::OK);
    // An empty token configures nothing (it would let `Bearer ` through).
    let open = router(api.state().with_token(Some(String::new())));
    assert_eq!(post_as(&open, "/items", &body, None).await.status, StatusCode::CREATED);
}
