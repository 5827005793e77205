//! The dashboard's pages through the real router (no socket, no browser), on
//! SQLite and PostgreSQL: hostile text from items and agents is escaped, every
//! page carries the strict Content-Security-Policy, bad filters are a 400 page
//! naming the filter, and the log page shows agent output as inert text. The
//! browser-level behaviour is `crates/orch-cli/tests/dashboard.rs`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use orch_core::EventKind;
use orch_core::Timestamp;
use orch_engine::{Clock, ManualClock};
use orch_server::{AppState, CONTENT_SECURITY_POLICY, router};
use orch_store::{ExitInfo, NewEvent, RunInfo, Store};
use orch_test_support::{FAST_REAPER, PgDatabase, config_text};
use serde_json::json;
use tower::ServiceExt as _;

use orch_test_support::Backend;

const HOSTILE: &str = r#"<script>window.__xss=1</script><img src=x onerror="alert(1)"> & 'q'"#;

struct Fixture {
    dir: tempfile::TempDir,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    app: Router,
    _pg: Option<PgDatabase>,
}

impl Fixture {
    async fn new(backend: Backend) -> Self {
        Self::with(backend, &[], None).await
    }

    /// With environment overrides of the config and a bearer token.
    async fn with(backend: Backend, env: &[(&str, &str)], token: Option<&str>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let text = config_text("", FAST_REAPER);
        let path = dir.path().join("orch.toml");
        std::fs::write(&path, &text).unwrap();
        let env: BTreeMap<String, String> = env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        let config = orch_core::config::load(&path, &text, &env).unwrap_or_else(|e| panic!("{e}"));
        let (url, pg) = backend.store_url(dir.path(), "orch_dash");
        let store = orch_store::open(&url).await.unwrap();
        let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(Timestamp::from_millis(1_700_000_000_000)));
        let app = router(
            AppState::new(Arc::clone(&store), Arc::new(config), Arc::clone(&clock))
                .with_token(token.map(str::to_owned)),
        );
        Self { dir, store, clock, app, _pg: pg }
    }

    async fn get(&self, uri: &str) -> (StatusCode, axum::http::HeaderMap, String) {
        let res = self.app.clone().oneshot(Request::get(uri).body(Body::empty()).unwrap()).await.unwrap();
        let status = res.status();
        let headers = res.headers().clone();
        let bytes = axum::body::to_bytes(res.into_body(), usize::MAX).await.unwrap();
        (status, headers, String::from_utf8_lossy(&bytes).into_owned())
    }

    /// A page: asserts the status, that it is HTML, and that it carries the CSP.
    async fn page(&self, uri: &str, status: StatusCode) -> String {
        let (s, h, body) = self.get(uri).await;
        assert_eq!(s, status, "{uri}: {body}");
        assert!(h[header::CONTENT_TYPE].to_str().unwrap().starts_with("text/html"), "{uri} is HTML");
        assert_eq!(h[header::CONTENT_SECURITY_POLICY], CONTENT_SECURITY_POLICY, "{uri} carries the CSP");
        assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        body
    }

    async fn add(&self, title: &str) -> String {
        let req = Request::post("/items")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(json!({"repo": "shop", "kind": "bug", "title": title}).to_string()))
            .unwrap();
        let res = self.app.clone().oneshot(req).await.unwrap();
        assert_eq!(res.status(), StatusCode::CREATED);
        let bytes = axum::body::to_bytes(res.into_body(), usize::MAX).await.unwrap();
        serde_json::from_slice::<serde_json::Value>(&bytes).unwrap()["key"].as_str().unwrap().to_owned()
    }
}

/// No raw markup of the hostile title survives, and its escaped form is there.
fn assert_escaped(page: &str) {
    assert!(!page.contains("<script>window.__xss"), "raw script in the page");
    assert!(!page.contains("<img src=x"), "raw img in the page");
    assert!(page.contains("&lt;script&gt;window.__xss=1&lt;/script&gt;&lt;img src=x onerror=&quot;alert(1)&quot;&gt;"));
}

orch_test_support::on_both_backends!(
    pages_escape_hostile_titles_and_carry_the_csp,
    board_filters_refuse_unknown_values_naming_the_filter,
    job_page_shows_agent_output_as_inert_text,
    assets_are_embedded_with_their_types,
    health_charts_count_only_the_last_hour_of_a_long_log,
);

/// Precondition: an item whose title is markup. The board, its item page and the
/// health page show it escaped, each with the CSP; the card sits in its stage's
/// column with its status.
async fn pages_escape_hostile_titles_and_carry_the_csp(backend: Backend) {
    let f = Fixture::new(backend).await;
    let key = f.add(HOSTILE).await;
    let board = f.page("/", StatusCode::OK).await;
    assert_escaped(&board);
    assert!(board.contains("data-stage=\"development\""));
    assert!(board.contains(&format!("data-key=\"{key}\" data-status=\"queued\"")), "{board}");
    assert!(board.contains("id=\"done-count\" data-count=\"0\""));
    let item = f.page(&format!("/ui/items/{key}"), StatusCode::OK).await;
    assert_escaped(&item);
    assert!(item.contains("data-action=\"retry\"") && item.contains("data-live=\"item="));
    assert!(item.contains("data-kind=\"item.created\""), "the timeline has the creation");
    let health = f.page("/ui/health", StatusCode::OK).await;
    assert!(health.contains("id=\"reaper\"") && health.contains("id=\"chart-throughput\""));
    let missing = f.page("/ui/items/SHOP-999", StatusCode::NOT_FOUND).await;
    assert!(missing.contains("no item SHOP-999"));
    f.page("/ui/items/%3Cscript%3E", StatusCode::NOT_FOUND).await;
    // The JSON API is unchanged beside the pages.
    let (s, h, _) = f.get(&format!("/items/{key}")).await;
    assert_eq!(s, StatusCode::OK);
    assert!(h[header::CONTENT_TYPE].to_str().unwrap().starts_with("application/json"));
}

/// Precondition: items of one repo. A filter value the config or the model does
/// not know is a 400 page that names the filter; a known one narrows the board.
async fn board_filters_refuse_unknown_values_naming_the_filter(backend: Backend) {
    let f = Fixture::new(backend).await;
    let key = f.add("Cart loses items").await;
    let bad = f.page("/?status=%3Cb%3Enope", StatusCode::BAD_REQUEST).await;
    assert!(bad.contains("filter status") && bad.contains("&lt;b&gt;nope"), "{bad}");
    assert!(f.page("/?repo=elsewhere", StatusCode::BAD_REQUEST).await.contains("filter repo: no repo elsewhere"));
    assert!(f.page("/?kind=epic", StatusCode::BAD_REQUEST).await.contains("filter kind"));
    assert!(
        f.page("/?status=queued&repo=shop&kind=bug", StatusCode::OK).await.contains(&format!("data-key=\"{key}\""))
    );
    assert!(!f.page("/?status=blocked", StatusCode::OK).await.contains(&format!("data-key=\"{key}\"")));
    // Empty values (the form's "any") are no filter.
    assert!(f.page("/?status=&repo=&kind=", StatusCode::OK).await.contains(&format!("data-key=\"{key}\"")));
}

/// Precondition: a job whose agent wrote colour codes and markup into its log.
/// While it runs the page follows the log over SSE; once it finished the page
/// shows the log stripped of control sequences and escaped.
async fn job_page_shows_agent_output_as_inert_text(backend: Backend) {
    let f = Fixture::new(backend).await;
    f.add("Logs").await;
    let now = f.clock.now();
    let claimed = f.store.claim_jobs("n", 1, now, Duration::from_secs(30)).await.unwrap();
    let job = &claimed[0];
    // Claimed, its agent not started: no log to follow yet, the page waits for it.
    let claimed_page = f.page(&format!("/ui/jobs/{}", job.id), StatusCode::OK).await;
    assert!(claimed_page.contains("Not started yet") && claimed_page.contains("data-live=\"item=SHOP-1\""));
    assert!(!claimed_page.contains("data-follow"));
    let log = f.dir.path().join("job.log");
    std::fs::write(&log, "\u{1b}[1;31mred\u{1b}[0m <script>window.__xss=2</script>\n").unwrap();
    let run = RunInfo { pid: 1, pgid: 1, proc_start: None, log_path: log.display().to_string() };
    f.store.record_started(job.id, job.epoch, run, now).await.unwrap();
    let running = f.page(&format!("/ui/jobs/{}", job.id), StatusCode::OK).await;
    assert!(running.contains(&format!("data-follow=\"/jobs/{}/log?follow=1\"", job.id)), "{running}");
    let usage = orch_core::Usage {
        turns: 2,
        input_tokens: 1_000,
        output_tokens: 200,
        cache_read_tokens: 30,
        cache_write_tokens: 4,
        cost_usd: Some(0.0123),
    };
    let exit = ExitInfo { exit_code: Some(0), reason: None, verdict: None, usage: Some(usage) };
    f.store.record_finished(job.id, job.epoch, exit, now).await.unwrap();
    // Finishing is still followed; a job that ended is shown whole. Cancel the
    // item to end the job without a finalizer.
    let req = Request::post("/items/SHOP-1/cancel").body(Body::empty()).unwrap();
    assert_eq!(f.app.clone().oneshot(req).await.unwrap().status(), StatusCode::OK);
    let ended = f.page(&format!("/ui/jobs/{}", job.id), StatusCode::OK).await;
    assert!(!ended.contains("data-follow"), "{ended}");
    assert!(ended.contains("red &lt;script&gt;window.__xss=2&lt;/script&gt;"), "{ended}");
    assert!(!ended.contains('\u{1b}'));
    // The item page shows the run's measured tokens and cost.
    let item = f.page("/ui/items/SHOP-1", StatusCode::OK).await;
    assert!(item.contains("<td>1234</td><td>$0.0123</td>"), "{item}");
    f.page("/ui/jobs/99999", StatusCode::NOT_FOUND).await;
    f.page("/ui/jobs/x", StatusCode::NOT_FOUND).await;
}

/// Precondition: none. The script, stylesheet and icon come from the binary with
/// their content types; an unknown asset is a 404.
async fn assets_are_embedded_with_their_types(backend: Backend) {
    let f = Fixture::new(backend).await;
    for (path, kind, needle) in [
        ("/ui/assets/dash.js", "text/javascript", "EventSource"),
        ("/ui/assets/dash.css", "text/css", "prefers-color-scheme: dark"),
        ("/ui/assets/favicon.svg", "image/svg+xml", "<svg"),
    ] {
        let (s, h, body) = f.get(path).await;
        assert_eq!(s, StatusCode::OK, "{path}");
        assert!(h[header::CONTENT_TYPE].to_str().unwrap().starts_with(kind), "{path}");
        assert!(body.contains(needle), "{path}");
    }
    f.page("/ui/assets/..%2F..%2Fetc%2Fpasswd", StatusCode::NOT_FOUND).await;
    f.page("/ui/assets/nope.js", StatusCode::NOT_FOUND).await;
    assert!(f.page("/ui/nope/deeper", StatusCode::NOT_FOUND).await.contains("no page /ui/nope/deeper"));
}

/// Precondition: an event log of thousands of older events and a few in the last
/// hour. The throughput chart counts exactly the (settled) moves of the last
/// hour: the search for the hour's start (by sequence number, over
/// `events_since`) lands on the right event however long the log is.
async fn health_charts_count_only_the_last_hour_of_a_long_log(backend: Backend) {
    let f = Fixture::new(backend).await;
    let key: orch_core::ItemKey = f.add("Busy").await.parse().unwrap();
    let now = f.clock.now();
    let advanced = || {
        let mut e = NewEvent::new(key.clone(), EventKind::ItemAdvanced);
        e.from = Some("development".into());
        e.to = Some("testing".into());
        e
    };
    // 3,000 moves between 2 h and 1 h ago, in batches at successive times.
    for batch in 0..30_u64 {
        let at = now.sub(Duration::from_secs(7_200 - batch * 100));
        f.store.append_events(&vec![advanced(); 100], at).await.unwrap();
    }
    // One just outside the hour, then three inside it.
    f.store.append_events(&[advanced()], now.sub(Duration::from_secs(3_601))).await.unwrap();
    for ago_s in [3_500, 1_800, 60] {
        f.store.append_events(&[advanced()], now.sub(Duration::from_secs(ago_s))).await.unwrap();
    }
    // What the store hands out as settled: on SQLite every event at once; on
    // PostgreSQL those older than every write transaction still open (see
    // docs/STORE.md), so a long write elsewhere can hold recent ones back. The
    // chart must count exactly the settled ones of the hour, found by its search.
    // The settled set only grows, so the page's count lies between what is
    // settled just before and just after it renders.
    let in_hour = || async {
        let settled = f.store.events_since(0, 10_000).await.unwrap();
        settled.iter().filter(|e| e.kind == "item.advanced" && e.at >= now.sub(Duration::from_secs(3_600))).count()
    };
    let before = in_hour().await;
    let health = f.page("/ui/health", StatusCode::OK).await;
    let after = in_hour().await;
    if matches!(backend, Backend::Sqlite) {
        assert_eq!((before, after), (3, 3));
    }
    let shown = (before..=after).find(|n| health.contains(&format!("last hour ({n} in all)")));
    assert!(shown.is_some(), "the chart counts between {before} and {after} moves: {health}");
}

/// Precondition: a token and `[server] auth_reads`. A browser cannot send the
/// token with a page or an event stream, so every page refuses (403, saying
/// why) instead of showing what the API keeps behind the token; the assets,
/// which hold no data, stay open. Without `auth_reads` the pages are open.
#[tokio::test]
async fn pages_refuse_while_reads_need_the_token() {
    let f = Fixture::with(Backend::Sqlite, &[("ORCH_SERVER_AUTH_READS", "true")], Some("s3cret")).await;
    for uri in ["/", "/ui/items/SHOP-1", "/ui/jobs/1", "/ui/health", "/ui/nope"] {
        let page = f.page(uri, StatusCode::FORBIDDEN).await;
        assert!(page.contains("auth_reads"), "{uri}: {page}");
    }
    let (s, _, _) = f.get("/ui/assets/dash.js").await;
    assert_eq!(s, StatusCode::OK);
    let open = Fixture::with(Backend::Sqlite, &[], Some("s3cret")).await;
    open.page("/", StatusCode::OK).await;
}
