//! A seeded crash-and-restart soak (TigerBeetle's VOPR in miniature), on SQLite and
//! on PostgreSQL: two nodes share a store and run items whose agents are slow,
//! flaky, or fail; nodes are crashed (like `kill -9`: their agent groups survive
//! them) and restarted at random moments. After every step the event log must pass `audit` (I1–I4); at the
//! end every item is terminal, every job ended, and no agent process remains.
//! The seed is printed; `ORCH_SEED=n` replays the same schedule of crashes.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use orch_core::{ItemKind, ItemStatus};
use orch_engine::SystemClock;
use rand::{Rng, SeedableRng};

const CHAOS_REAPER: &str =
    "interval_s = 0.2\nfinalize_grace_s = 1\nmax_running_s = 40\nlease_ttl_s = 1\nheartbeat_s = 0.1\n";

const FLAKY_EDGE: &str = r#"
[[edges]]
from = "testing"
to = "deploy-staging"
gates = ["flaky"]
on_fail = "development"

[gates.flaky]
command = ["./gates/flaky.sh"]
timeout_s = 10

[stages.development]
role = "developer"
max_attempts = 4
"#;

async fn chaos_crashes_and_restarts_keep_every_invariant(backend: Backend) {
    soak(Harness::from_text(backend, config_text(FLAKY_EDGE, CHAOS_REAPER)).await).await;
}

backend_tests!(chaos_crashes_and_restarts_keep_every_invariant);

async fn soak(h: Harness) {
    let seed: u64 = std::env::var("ORCH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    println!("chaos seed: ORCH_SEED={seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);

    let pids = h.path().join("pids");
    std::fs::create_dir_all(&pids).unwrap();
    std::fs::create_dir_all(h.path().join("gates")).unwrap();
    let record = format!("echo $$ > \"{}/$ORCH_JOB_ID.$$\"", pids.display());
    // Every third item's developer fails its first attempt; every run takes a moment.
    h.agent(
        "developer",
        &format!(
            "{record}\nsleep 0.2\nn=${{ORCH_ITEM#SHOP-}}\n\
             if [ $((n % 3)) -eq 0 ] && [ \"$ORCH_ATTEMPT\" = 1 ]; then exit 1; fi\n{PASS}"
        ),
    );
    h.agent("tester", &format!("{record}\nsleep 0.1\n{PASS}"));
    h.agent("deployer", &format!("{record}\nsleep 0.1\n{PASS}"));
    // Red on every other run of an item's gate.
    script(
        &h.path().join("gates"),
        "flaky.sh",
        &format!(
            "{record}\nsleep 0.1\nif [ -f flaky ]; then rm flaky; exit 0; fi\ntouch flaky\necho 'flaky: 1 failed'\nexit 1"
        ),
    );

    let opts = |id: &str| {
        let mut o = h.node_opts(id);
        o.run_reaper = true;
        o
    };
    let clock: Arc<dyn orch_engine::Clock> = Arc::new(SystemClock);
    let ids = ["node-a", "node-b"];
    let mut nodes: Vec<Option<CrashableNode>> =
        ids.iter().map(|id| Some(CrashableNode::start_with(&h, opts(id), clock.clone()))).collect();

    let mut keys = Vec::new();
    for _ in 0..8 {
        keys.push(h.add_item(ItemKind::Bug).await);
    }
    for step in 0..20 {
        let which = rng.random_range(0..ids.len());
        match nodes[which].take() {
            Some(node) if rng.random_bool(0.6) => {
                node.crash();
                println!("step {step}: crashed {}", ids[which]);
            }
            Some(node) => nodes[which] = Some(node),
            None => {
                nodes[which] = Some(CrashableNode::start_with(&h, opts(ids[which]), clock.clone()));
                println!("step {step}: restarted {}", ids[which]);
            }
        }
        if nodes.iter().all(Option::is_none) {
            nodes[0] = Some(CrashableNode::start_with(&h, opts(ids[0]), clock.clone()));
        }
        if step % 4 == 0 {
            keys.push(h.add_item(if rng.random_bool(0.5) { ItemKind::Bug } else { ItemKind::Chore }).await);
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(50..600))).await;
        h.assert_audit_clean().await;
    }

    // Let the survivors (and restarted nodes) settle everything.
    for (i, slot) in nodes.iter_mut().enumerate() {
        if slot.is_none() {
            *slot = Some(CrashableNode::start_with(&h, opts(ids[i]), clock.clone()));
        }
    }
    for key in &keys {
        let store = h.store.clone();
        let k = key.clone();
        wait_for(&format!("{key} to end (seed {seed})"), || {
            let store = store.clone();
            let k = k.clone();
            async move {
                let item = store.get_item(&k).await.unwrap()?;
                matches!(item.status, ItemStatus::Done | ItemStatus::Blocked).then_some(())
            }
        })
        .await;
    }
    for key in &keys {
        for job in h.jobs(key).await {
            assert!(job.status.is_ended(), "seed {seed}: job {} of {key} is {}", job.id, job.status);
        }
    }
    for node in nodes.into_iter().flatten() {
        node.crash();
    }
    h.assert_audit_clean().await;
    // No agent or gate process may outlive its job.
    for entry in std::fs::read_dir(&pids).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        let pid: i32 = name.rsplit('.').next().unwrap().parse().unwrap();
        wait_for(
            &format!("process {pid} ({name}) to be gone (seed {seed})"),
            || async move { (!alive(pid)).then_some(()) },
        )
        .await;
    }
}
