//! The reaper block of `GET /queue` is cluster-wide and survives restarts: two
//! nodes on one store each reap a job their dead owner left, and every node's
//! `/queue` (and `orch queue`'s document, with no node) shows both; a node
//! started afresh on a reopened store still shows them. On SQLite and
//! PostgreSQL.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use orch_core::Timestamp;
use orch_engine::{Clock, ManualClock, Node, NodeOptions};
use orch_server::{AppState, router};
use orch_store::Store;
use orch_test_support::{FAST_REAPER, PgDatabase, config_text};
use serde_json::{Value, json};
use tower::ServiceExt as _;

use orch_test_support::Backend;

struct World {
    dir: tempfile::TempDir,
    url: String,
    config: Arc<orch_core::config::Config>,
    clock: ManualClock,
    _pg: Option<PgDatabase>,
}

impl World {
    fn new(backend: Backend) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let text = config_text("", FAST_REAPER);
        let path = dir.path().join("orch.toml");
        std::fs::write(&path, &text).unwrap();
        let config = orch_core::config::load(&path, &text, &BTreeMap::new()).unwrap_or_else(|e| panic!("{e}"));
        let (url, pg) = backend.store_url(dir.path(), "orch_reaper_counters");
        let clock = ManualClock::new(Timestamp::from_millis(1_700_000_000_000));
        Self { dir, url, config: Arc::new(config), clock, _pg: pg }
    }

    fn node(&self, store: &Arc<dyn Store>, id: &str) -> Node {
        let clock: Arc<dyn Clock> = Arc::new(self.clock.clone());
        let opts = NodeOptions::new(id, self.dir.path().join(format!("data-{id}")));
        Node::new(Arc::clone(store), Arc::clone(&self.config), clock, opts)
    }

    async fn queue(&self, store: &Arc<dyn Store>, node: Option<Node>) -> Value {
        let clock: Arc<dyn Clock> = Arc::new(self.clock.clone());
        let mut state = AppState::new(Arc::clone(store), Arc::clone(&self.config), clock);
        if let Some(node) = node {
            state = state.with_node(node);
        }
        let res = router(state).oneshot(Request::get("/queue").body(Body::empty()).unwrap()).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        serde_json::from_slice(&axum::body::to_bytes(res.into_body(), usize::MAX).await.unwrap()).unwrap()
    }

    /// Files an item whose job a node that then dies (`ghost`) claims: after the
    /// lease runs out, the job is Tier-1's to reap.
    async fn orphan_a_job(&self, store: &Arc<dyn Store>, title: &str) {
        let new = orch_store::NewItem {
            repo: "shop".into(),
            prefix: orch_core::KeyPrefix::new("SHOP").unwrap(),
            kind: orch_core::ItemKind::Bug,
            title: title.into(),
            body: String::new(),
            state: orch_core::ItemState::new(
                orch_core::TrackName::new("quick"),
                orch_core::StageName::new("development"),
            ),
        };
        store.create_item(new, self.clock.now()).await.unwrap();
        let claimed = store.claim_jobs("ghost", 1, self.clock.now(), Duration::from_secs(1)).await.unwrap();
        assert_eq!(claimed.len(), 1);
        self.clock.advance(Duration::from_secs(2));
    }
}

async fn reaper_counters_add_up_across_nodes_and_survive_restart(backend: Backend) {
    let w = World::new(backend);
    let store = orch_store::open(&w.url).await.unwrap();
    let a = w.node(&store, "node-a");
    let b = w.node(&store, "node-b");

    w.orphan_a_job(&store, "first").await;
    assert_eq!(a.reaper_pass().await.unwrap().tier1_reaped, 1);
    let pass_a = w.clock.now();
    w.orphan_a_job(&store, "second").await;
    assert_eq!(b.reaper_pass().await.unwrap().tier1_reaped, 1);
    let pass_b = w.clock.now();
    assert_eq!((a.metrics().reaped_tier1, b.metrics().reaped_tier1), (1, 1), "each node counted its own");

    for node in [Some(a.clone()), Some(b.clone()), None] {
        let q = w.queue(&store, node).await;
        let reaper = &q["reaper"];
        assert_eq!(reaper["reaped_total"], json!({"tier1": 2, "tier2": 0, "tier3": 0}), "{q}");
        assert_eq!(reaper["finalizer_defers_total"], 0);
        assert_eq!(reaper["last_pass_at"], pass_b.to_rfc3339(), "the latest pass of any node");
        assert_eq!(q["counters_from"], "cluster");
    }
    assert!(pass_a < pass_b);

    // A restart: every handle dropped, the store reopened, a fresh node.
    drop((a, b, store));
    let store = orch_store::open(&w.url).await.unwrap();
    let a2 = w.node(&store, "node-a");
    assert_eq!(a2.metrics().reaped_tier1, 0, "the new process's own counters start at zero");
    let q = w.queue(&store, Some(a2.clone())).await;
    assert_eq!(q["reaper"]["reaped_total"]["tier1"], 2, "the cluster's totals survived: {q}");
    assert_eq!(q["reaper"]["last_pass_at"], pass_b.to_rfc3339());
    w.clock.advance(Duration::from_secs(1));
    a2.reaper_pass().await.unwrap();
    let q = w.queue(&store, Some(a2)).await;
    assert_eq!(q["reaper"]["last_pass_at"], w.clock.now().to_rfc3339(), "a new pass moves last_pass_at on");
    assert_eq!(q["reaper"]["reaped_total"]["tier1"], 2);
}

/// A finishing job whose finalizer holds a live lease counts in
/// `finalizer_owned`, whichever node serves `/queue`; once its lease has run
/// out it no longer does.
async fn finalizer_owned_counts_live_finishing_leases(backend: Backend) {
    let w = World::new(backend);
    let store = orch_store::open(&w.url).await.unwrap();
    w.orphan_a_job(&store, "slow finalizer").await;
    let job = store.claim_jobs("ghost", 1, w.clock.now(), Duration::from_secs(1)).await.unwrap();
    assert!(job.is_empty(), "the one job is still running under ghost");
    let running = store.expired_running(w.clock.now(), 10).await.unwrap().remove(0);
    let taken = store
        .take_over(
            running.id,
            running.epoch,
            "finalizer",
            w.clock.now(),
            Duration::from_secs(30),
            orch_store::TakeOver::IfLeaseExpired,
            "test",
        )
        .await
        .unwrap()
        .unwrap();
    let exit = orch_store::ExitInfo { exit_code: Some(0), ..orch_store::ExitInfo::default() };
    store.record_finished(taken.id, taken.epoch, exit, w.clock.now()).await.unwrap();
    let q = w.queue(&store, None).await;
    assert_eq!(q["reaper"]["finalizer_owned"], 1, "{q}");
    w.clock.advance(Duration::from_secs(31));
    assert_eq!(w.queue(&store, None).await["reaper"]["finalizer_owned"], 0);
}

orch_test_support::on_both_backends!(
    reaper_counters_add_up_across_nodes_and_survive_restart,
    finalizer_owned_counts_live_finishing_leases,
);
