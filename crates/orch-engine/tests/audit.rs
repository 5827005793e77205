//! `audit_store` over a real store, SQLite and PostgreSQL: it pages through more
//! items than one page holds, across two key prefixes, checks every event exactly
//! once, and pins an injected overlap (I3) and a fenced-out notice on the right item.
//! And over what the engine really writes: an infrastructure failure retried in
//! place is no breach.

mod common;

use std::time::Duration;

use common::*;
use orch_core::{EventKind, ItemKind, ItemState, ItemStatus, KeyPrefix, StageName, TrackName};
use orch_engine::audit::audit_store;
use orch_store::{NewEvent, NewItem};
use serde_json::json;
use tokio::task::JoinSet;

/// More than two pages of `audit_store`'s 500 items, split over two prefixes so
/// the key order crosses from one repo to the next in the middle of a page.
const ITEMS_PER_PREFIX: usize = 550;

async fn file_items(h: &Harness, prefix: &'static str) {
    let mut set = JoinSet::new();
    for worker in 0..8 {
        let store = h.store.clone();
        let now = h.clock.now_ts();
        set.spawn(async move {
            for _ in (worker..ITEMS_PER_PREFIX).step_by(8) {
                let new = NewItem {
                    repo: "shop".into(),
                    prefix: KeyPrefix::new(prefix).unwrap(),
                    kind: ItemKind::Bug,
                    title: "t".into(),
                    body: String::new(),
                    state: ItemState::new(TrackName::new("quick"), StageName::new("development")),
                };
                store.create_item(new, now).await.unwrap();
            }
        });
    }
    set.join_all().await;
}

/// Precondition: an empty store. Files the items, then injects into SHOP-7 a run
/// of epoch 2 that started before epoch 1's processes were dead, and into AAA-3 a
/// fenced-out owner whose processes were dead in time.
async fn audit_store_checks_every_item_once_and_pins_the_overlap(backend: Backend) {
    let h = &Harness::new(backend, "").await;
    file_items(h, "SHOP").await;
    file_items(h, "AAA").await;
    let t0 = h.clock.now_ts();
    let at = |ms: u64| t0.add(Duration::from_millis(ms));
    let overlapped = "SHOP-7".parse().unwrap();
    let job = h.jobs(&overlapped).await[0].id;
    let mut start = NewEvent::new(overlapped.clone(), EventKind::JobStarted);
    (start.job, start.epoch) = (Some(job), Some(2));
    h.store.append_events(&[start], at(2_000)).await.unwrap();
    let mut late = NewEvent::new(overlapped.clone(), EventKind::JobFencedOut);
    (late.job, late.epoch) = (Some(job), Some(1));
    late.data = json!({ "node": "node-a", "step": "agent", "killed_at": at(3_000).as_millis() });
    h.store.append_events(&[late], at(3_500)).await.unwrap();
    let fine = "AAA-3".parse().unwrap();
    let fine_job = h.jobs(&fine).await[0].id;
    let mut in_time = NewEvent::new(fine, EventKind::JobFencedOut);
    (in_time.job, in_time.epoch) = (Some(fine_job), Some(1));
    in_time.data = json!({ "node": "node-b", "step": "commit", "killed_at": at(1_000).as_millis() });
    h.store.append_events(&[in_time], at(1_000)).await.unwrap();

    let report = audit_store(&*h.store, &h.config).await.unwrap();

    let all = h.store.events_since(0, 1_000_000).await.unwrap();
    assert_eq!(report.items_checked, 2 * ITEMS_PER_PREFIX as u64);
    assert_eq!(report.events_checked, all.len() as u64, "every event checked exactly once");
    let seq_of = |kind: &str, key: &str| {
        all.iter().find(|e| e.kind == kind && e.item.to_string() == key).map(|e| e.seq).unwrap()
    };
    assert_eq!(report.breaches_total, 1, "{:#?}", report.breaches);
    let b = &report.breaches[0];
    assert_eq!((b.invariant, b.item.as_str()), ("I3", "SHOP-7"));
    assert_eq!(b.events, vec![seq_of("job.started", "SHOP-7"), seq_of("job.fenced_out", "SHOP-7")]);
    assert!(b.message.contains(&format!("job {job}: run of epoch 2")) && b.message.contains("epoch 1's"), "{b:?}");
    let fenced: Vec<(&str, Option<&str>)> =
        report.notices.iter().map(|n| (n.item.as_str(), n.node.as_deref())).collect();
    assert_eq!(fenced, [("AAA-3", Some("node-b")), ("SHOP-7", Some("node-a"))], "in key order");
}

backend_tests!(
    audit_store_checks_every_item_once_and_pins_the_overlap,
    an_infrastructure_failure_retried_in_place_is_no_breach
);

/// A gate that cannot start fails the job as an infrastructure error; the engine
/// retries the stage in place, recording `item.rolled_back` from the stage to
/// itself, which the audit must not mistake for a rollback along `on_fail`.
async fn an_infrastructure_failure_retried_in_place_is_no_breach(backend: Backend) {
    let h = Harness::new(
        backend,
        "[[edges]]\nfrom = \"development\"\nto = \"testing\"\ngates = [\"missing\"]\non_fail = \"development\"\n\
         [gates.missing]\ncommand = [\"./gates/not-there.sh\"]\ntimeout_s = 5\n\
         [stages.development]\nrole = \"developer\"\nmax_attempts = 2\n",
    )
    .await;
    let node = h.node("node-a");
    let run = h.start(&node);
    let key = h.add_item(ItemKind::Bug).await;
    h.wait_status(&key, ItemStatus::Blocked).await;
    node.shutdown_token().cancel();
    run.await.unwrap();

    let events = h.events(&key).await;
    let retry = events.iter().find(|e| e.kind == "item.rolled_back").expect("the stage was retried");
    assert_eq!((retry.from.as_deref(), retry.to.as_deref()), (Some("development"), Some("development")));
    assert!(retry.reason.as_deref().is_some_and(|r| r.starts_with("infrastructure:")), "{retry:?}");
    h.assert_audit_clean().await;
}
