//! `GET /jobs/{id}/log` following and ranges through the real router, against
//! hostile logs: a log the agent replaced with a link ends a follow with
//! `event: error`; a FIFO is refused for a range; a follow of an ended job sends
//! every line, an unterminated last one too, then `event: end`; bad follow
//! parameters are 422. (The live case, lines arriving while a real agent runs,
//! is `orch-cli/tests/http_stream.rs`.)

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use orch_core::Timestamp;
use orch_engine::{Clock, ManualClock};
use orch_server::{AppState, router};
use orch_store::{RunInfo, Store};
use orch_test_support::{FAST_REAPER, config_text};
use tower::ServiceExt as _;

struct Api {
    dir: tempfile::TempDir,
    store: Arc<dyn Store>,
    app: Router,
}

impl Api {
    async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let text = config_text("", FAST_REAPER);
        let path = dir.path().join("orch.toml");
        std::fs::write(&path, &text).unwrap();
        let config = orch_core::config::load(&path, &text, &BTreeMap::new()).unwrap_or_else(|e| panic!("{e}"));
        let store = orch_store::open(&format!("sqlite://{}", dir.path().join("orch.db").display())).await.unwrap();
        let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(Timestamp::from_millis(1_700_000_000_000)));
        let app = router(AppState::new(Arc::clone(&store), Arc::new(config), clock));
        Self { dir, store, app }
    }

    /// A running job whose log is at `log` (what the agent may have replaced).
    async fn job_with_log(&self, log: &std::path::Path) -> (String, i64) {
        let body = r#"{"repo":"shop","kind":"bug","title":"t"}"#;
        let req = Request::post("/items").header(header::CONTENT_TYPE, "application/json").body(Body::from(body));
        let res = self.app.clone().oneshot(req.unwrap()).await.unwrap();
        assert_eq!(res.status(), StatusCode::CREATED);
        let now = Timestamp::from_millis(1_700_000_000_000);
        let job = self.store.claim_jobs("n", 1, now, Duration::from_secs(30)).await.unwrap().remove(0);
        let run = RunInfo { pid: 1, pgid: 1, proc_start: None, log_path: log.display().to_string() };
        self.store.record_started(job.id, job.epoch, run, now).await.unwrap();
        (job.item.to_string(), job.id.0)
    }

    async fn get(&self, uri: &str, headers: &[(&str, &str)]) -> (StatusCode, axum::http::HeaderMap, String) {
        let mut req = Request::get(uri);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let res = self.app.clone().oneshot(req.body(Body::empty()).unwrap()).await.unwrap();
        let (status, headers) = (res.status(), res.headers().clone());
        let body = tokio::time::timeout(Duration::from_secs(30), axum::body::to_bytes(res.into_body(), usize::MAX))
            .await
            .expect("the response ended within 30 s")
            .unwrap();
        (status, headers, String::from_utf8_lossy(&body).into_owned())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follow_of_an_ended_job_sends_every_line_then_end() {
    let api = Api::new().await;
    let log = api.dir.path().join("job.log");
    std::fs::write(&log, "one\r\ntwo\nthree, unterminated").unwrap();
    let (key, id) = api.job_with_log(&log).await;
    let req = Request::post(format!("/items/{key}/cancel")).body(Body::empty()).unwrap();
    assert_eq!(api.app.clone().oneshot(req).await.unwrap().status(), StatusCode::OK);
    let (status, headers, body) = api.get(&format!("/jobs/{id}/log?follow=1"), &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "text/event-stream");
    assert_eq!(
        body,
        "id: 5\ndata: one\n\nid: 9\ndata: two\n\nid: 28\ndata: three, unterminated\n\n\
         event: end\ndata: {\"status\":\"cancelled\"}\n\n"
    );
    let (_, _, resumed) =
        api.get(&format!("/jobs/{id}/log"), &[("accept", "text/event-stream"), ("last-event-id", "9")]).await;
    assert!(resumed.starts_with("id: 28\ndata: three, unterminated\n\nevent: end\n"), "{resumed}");
    for (uri, hdr, field) in [
        (format!("/jobs/{id}/log?follow=maybe"), None, "follow"),
        (format!("/jobs/{id}/log?follow=1"), Some(("last-event-id", "x")), "Last-Event-ID"),
    ] {
        let headers: Vec<(&str, &str)> = hdr.into_iter().collect();
        let (status, _, body) = api.get(&uri, &headers).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{uri}: {body}");
        assert!(body.contains(&format!("\"field\":\"{field}\"")), "{body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_replaced_by_a_link_ends_a_follow_with_an_error() {
    let api = Api::new().await;
    let secret = api.dir.path().join("secret");
    std::fs::write(&secret, "not for agents\n").unwrap();
    let log = api.dir.path().join("job.log");
    std::os::unix::fs::symlink(&secret, &log).unwrap();
    let (_, id) = api.job_with_log(&log).await;
    let (status, _, body) = api.get(&format!("/jobs/{id}/log?follow=1"), &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.starts_with("event: error\ndata: {\"error\":"), "{body}");
    assert!(body.contains("symbolic link") && !body.contains("not for agents"), "{body}");
    let (status, _, body) = api.get(&format!("/jobs/{id}/log"), &[("range", "bytes=0-3")]).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifo_log_is_refused_at_once_for_a_range() {
    let api = Api::new().await;
    let log = api.dir.path().join("job.log");
    nix::unistd::mkfifo(&log, nix::sys::stat::Mode::S_IRWXU).unwrap();
    let (_, id) = api.job_with_log(&log).await;
    let (status, _, body) = api.get(&format!("/jobs/{id}/log"), &[("range", "bytes=-10")]).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(body.contains("FIFO"), "{body}");
    // An unsupported range unit is ignored: the plain answer (here the same 409).
    let (status, _, _) = api.get(&format!("/jobs/{id}/log"), &[("range", "lines=1-2")]).await;
    assert_eq!(status, StatusCode::CONFLICT);
}
