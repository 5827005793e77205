//! The event stream (`event_head`, `event_position`, `events_after`) and the
//! reaper's cluster-wide counters, on every backend.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use orch_core::{EventKind, ItemKey, JobStatus};
use orch_store::{EventPosition, NewEvent, PositionedEvent, ReaperPassCounts, Store};
use tokio::task::JoinSet;

use crate::support::{T0, TTL, TestDb, at, new_item};

/// Reads every settled event after `from` in pages of `page`, until the head.
async fn drain(store: &dyn Store, mut from: EventPosition, item: Option<&ItemKey>, page: u32) -> Vec<PositionedEvent> {
    let mut out = Vec::new();
    loop {
        let got = store.events_after(from, item, page).await.unwrap();
        let Some(last) = got.last() else { return out };
        from = last.position;
        out.extend(got);
    }
}

/// Waits until `events_after(START)` holds `n` events (PostgreSQL hands an event
/// out only once older transactions have ended, a few milliseconds at most).
async fn settled(store: &dyn Store, n: usize) -> Vec<PositionedEvent> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let all = drain(store, EventPosition::START, None, 1000).await;
        if all.len() >= n || tokio::time::Instant::now() > deadline {
            assert_eq!(all.len(), n, "events settled within 30 s");
            return all;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// An empty store: the head is `START`, nothing follows it, and no seq has a
/// position. After three items (six events): pages of two give the same events
/// as one read, positions increase, a seq's position resumes right after it, the
/// item filter keeps one item's events, and the head is the last event.
pub(crate) async fn events_after_pages_resumes_and_filters(db: &TestDb) {
    let store = &*db.store;
    assert_eq!(store.event_head().await.unwrap(), EventPosition::START);
    assert!(store.events_after(EventPosition::START, None, 10).await.unwrap().is_empty());
    assert_eq!(store.event_position(1).await.unwrap(), None);
    let mut keys = Vec::new();
    for i in 0..3 {
        keys.push(store.create_item(new_item("SHOP", &format!("item {i}")), at(i)).await.unwrap().key);
    }
    let all = settled(store, 6).await;
    assert!(all.windows(2).all(|w| w[0].position < w[1].position && w[0].event.seq < w[1].event.seq));
    assert_eq!(drain(store, EventPosition::START, None, 2).await, all);
    let resume = store.event_position(all[2].event.seq).await.unwrap().expect("a position for a stored seq");
    assert_eq!(resume, all[2].position);
    assert_eq!(resume.seq(), all[2].event.seq);
    assert_eq!(drain(store, resume, None, 2).await, all[3..].to_vec());
    let only: Vec<_> = all.iter().filter(|p| p.event.item == keys[1]).cloned().collect();
    assert_eq!(only.len(), 2);
    assert_eq!(drain(store, EventPosition::START, Some(&keys[1]), 1).await, only);
    assert_eq!(store.event_head().await.unwrap(), all[5].position);
    assert!(store.events_after(all[5].position, None, 10).await.unwrap().is_empty());
}

/// 16 writers append events concurrently while a reader tails the stream from
/// `START`, resuming from the last position it got: when the writers are done
/// and the stream has settled, the reader has every event exactly once, in
/// increasing positions.
pub(crate) async fn tailing_reader_gets_every_event_once_under_16_writers(db: &TestDb) {
    let store: Arc<dyn Store> = Arc::clone(&db.store);
    let mut writers = JoinSet::new();
    for w in 0..16 {
        let store = Arc::clone(&store);
        writers.spawn(async move {
            let key = store.create_item(new_item("SHOP", &format!("writer {w}")), T0).await.unwrap().key;
            for i in 0..20 {
                let mut e = NewEvent::new(key.clone(), EventKind::ReaperDeferred);
                e.reason = Some(format!("{w}/{i}"));
                store.append_events(&[e], at(i)).await.unwrap();
            }
        });
    }
    let expected = 16 * (2 + 20);
    let mut got: Vec<PositionedEvent> = Vec::new();
    let mut cursor = EventPosition::START;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while got.len() < expected && tokio::time::Instant::now() < deadline {
        let page = store.events_after(cursor, None, 7).await.unwrap();
        if let Some(last) = page.last() {
            cursor = last.position;
        } else {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        got.extend(page);
    }
    while writers.join_next().await.is_some() {}
    let seqs: BTreeSet<i64> = got.iter().map(|p| p.event.seq).collect();
    assert_eq!(seqs.len(), got.len(), "no event delivered twice");
    assert!(got.windows(2).all(|w| w[0].position < w[1].position), "positions only increase");
    let all = settled(&*store, expected).await;
    assert_eq!(got, all, "the tailing reader got exactly the settled log");
}

/// Counters start at zero with no pass recorded; two passes (as from two
/// nodes) add up, `last_pass_at` keeps the later pass even when an earlier one is
/// recorded last, the totals survive reopening the store, and `finalizer_owned`
/// counts `finishing` jobs whose lease is live at `now` only.
pub(crate) async fn reaper_totals_add_up_and_survive_reopen(db: &TestDb) {
    let store = &*db.store;
    let zero = store.reaper_totals(T0).await.unwrap();
    assert_eq!(zero, orch_store::ReaperTotals::default());
    let a = ReaperPassCounts { finalizer_defers: 2, reaped_tier1: 1, reaped_tier2: 0, reaped_tier3: 3 };
    let b = ReaperPassCounts { finalizer_defers: 5, reaped_tier1: 0, reaped_tier2: 4, reaped_tier3: 1 };
    store.record_reaper_pass(a, at(2_000)).await.unwrap();
    store.record_reaper_pass(b, at(1_000)).await.unwrap();
    let t = store.reaper_totals(T0).await.unwrap();
    assert_eq!(
        (t.finalizer_defers_total, t.reaped_tier1, t.reaped_tier2, t.reaped_tier3, t.last_pass_at),
        (7, 1, 4, 4, Some(at(2_000)))
    );
    let reopened = db.reopen().await;
    assert_eq!(reopened.reaper_totals(T0).await.unwrap(), t);

    for i in 0..3 {
        store.create_item(new_item("SHOP", &format!("item {i}")), T0).await.unwrap();
    }
    let jobs = store.claim_jobs("n1", 3, T0, TTL).await.unwrap();
    for j in &jobs[..2] {
        let exit = orch_store::ExitInfo { exit_code: Some(0), ..orch_store::ExitInfo::default() };
        store.record_finished(j.id, j.epoch, exit, at(1)).await.unwrap();
    }
    assert_eq!(store.get_job(jobs[0].id).await.unwrap().unwrap().status, JobStatus::Finishing);
    assert_eq!(store.reaper_totals(at(10)).await.unwrap().finalizer_owned, 2, "two finishing under live leases");
    let after_ttl = at(i64::try_from(TTL.as_millis()).unwrap() + 1);
    assert_eq!(store.reaper_totals(after_ttl).await.unwrap().finalizer_owned, 0, "leases expired");
}
