//! The behaviour every `Store` backend must show. Each spec takes a fresh, empty,
//! migrated store (`TestDb`) and states any further precondition in its doc comment;
//! `main.rs` instantiates every spec once per backend.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use orch_core::{EventKind, ItemKey, ItemState, ItemStatus, JobStatus, StageName, TrackName};
use orch_store::{
    CommitOutcome, Error, ExitInfo, GateResult, ItemFilter, Job, JobFinal, JobId, NewEvent, Page, RunInfo, Store,
    TakeOver, TransitionCommit,
};
use serde_json::json;
use tokio::task::JoinSet;

use crate::support::{T0, TTL, TestDb, at, new_item};

pub(crate) fn run_info(pid: i32) -> RunInfo {
    RunInfo { pid, pgid: pid, proc_start: Some(12345), log_path: format!("/tmp/log-{pid}") }
}

fn gate(name: &str, passed: bool) -> GateResult {
    GateResult {
        gate: name.to_owned(),
        passed,
        exit_code: Some(if passed { 0 } else { 1 }),
        metric: Some(91.5),
        duration_ms: 1200,
        reason: (!passed).then(|| "tests failed".to_owned()),
        sha: None,
    }
}

/// The transition that advances `key` from `development` to `testing`, ending `job`.
pub(crate) fn advance(key: &ItemKey, version: i64, job: Option<(JobId, i64)>) -> TransitionCommit {
    let mut next = ItemState::new(TrackName::new("quick"), StageName::new("testing"));
    next.attempts.insert(StageName::new("development"), 1);
    next.version = version + 1;
    let mut ev = NewEvent::new(key.clone(), EventKind::ItemAdvanced);
    ev.from = Some("development".into());
    ev.to = Some("testing".into());
    ev.data = json!({ "gates": ["retest"] });
    TransitionCommit {
        item: key.clone(),
        expected_version: version,
        job: job.map(|(id, epoch)| JobFinal {
            id,
            epoch,
            status: JobStatus::Done,
            reason: None,
            verdict: Some(json!({ "verdict": "pass", "summary": "ok" })),
            run_end: None,
        }),
        next,
        cancel_active_jobs: false,
        events: vec![ev],
        enqueue: Some((StageName::new("testing"), 1)),
        claim_next: None,
    }
}

/// An operator's cancel of `key` at `version`, ending every job in flight.
fn cancel(key: &ItemKey, version: i64) -> TransitionCommit {
    let mut next = ItemState::new(TrackName::new("quick"), StageName::new("development"));
    next.status = ItemStatus::Cancelled;
    next.version = version + 1;
    TransitionCommit {
        item: key.clone(),
        expected_version: version,
        job: None,
        next,
        cancel_active_jobs: true,
        events: vec![NewEvent::new(key.clone(), EventKind::ItemCancelled)],
        enqueue: None,
        claim_next: None,
    }
}

/// Creates `n` items of prefix `p` and claims all their jobs for `node` at `T0`.
pub(crate) async fn claimed(store: &dyn Store, p: &str, n: usize, node: &str) -> Vec<Job> {
    for i in 0..n {
        store.create_item(new_item(p, &format!("item {i}")), T0).await.unwrap();
    }
    let jobs = store.claim_jobs(node, u32::try_from(n).unwrap(), T0, TTL).await.unwrap();
    assert_eq!(jobs.len(), n);
    jobs
}

fn key(s: &str) -> ItemKey {
    s.parse().unwrap()
}

pub(crate) fn kinds(events: &[orch_store::Event]) -> Vec<&str> {
    events.iter().map(|e| e.kind.as_str()).collect()
}

fn is_fenced<T: std::fmt::Debug>(r: Result<T, Error>) -> bool {
    matches!(r, Err(Error::FencedOut { .. }))
}

/// Creating an item allocates `PREFIX-1`, stores what was asked, appends
/// `item.created` and `job.queued`, and queues attempt 1 of the first stage.
pub(crate) async fn create_item_queues_first_job(db: &TestDb) {
    let store = &*db.store;
    let item = store.create_item(new_item("SHOP", "login fails"), T0).await.unwrap();
    assert_eq!(item.key.to_string(), "SHOP-1");
    assert_eq!(item.status, ItemStatus::Queued);
    assert_eq!(item.version, 1);
    let stored = store.get_item(&item.key).await.unwrap().unwrap();
    assert_eq!(stored, item);
    let job = store.active_job(&item.key).await.unwrap().unwrap();
    assert_eq!((job.stage.as_str(), job.attempt, job.status, job.epoch), ("development", 1, JobStatus::Queued, 0));
    assert_eq!(job.owner, None);
    assert_eq!(job.queued_at, T0);
    let events = store.events_for_item(&item.key).await.unwrap();
    assert_eq!(kinds(&events), ["item.created", "job.queued"]);
    assert_eq!(events[1].job, Some(job.id));
    assert!(store.get_item(&key("SHOP-2")).await.unwrap().is_none());
    assert_eq!(store.jobs_for_item(&item.key).await.unwrap(), vec![job]);
}

/// Keys are unique and gap-free per prefix when 8 tasks create items at once.
pub(crate) async fn keys_unique_and_gap_free_under_concurrency(db: &TestDb) {
    let mut tasks = JoinSet::new();
    for t in 0..8 {
        let store = db.store.clone();
        tasks.spawn(async move {
            let mut keys = Vec::new();
            for i in 0..15 {
                let prefix = if i % 3 == 0 { "OPS" } else { "SHOP" };
                keys.push(store.create_item(new_item(prefix, &format!("t{t} i{i}")), T0).await.unwrap().key);
            }
            keys
        });
    }
    let keys: Vec<ItemKey> = tasks.join_all().await.into_iter().flatten().collect();
    assert_gap_free(&keys, &[("SHOP", 80), ("OPS", 40)]);
}

fn assert_gap_free(keys: &[ItemKey], expected: &[(&str, u64)]) {
    let distinct: BTreeSet<&ItemKey> = keys.iter().collect();
    assert_eq!(distinct.len(), keys.len(), "a key was handed out twice");
    for (prefix, n) in expected {
        let mut numbers: Vec<u64> =
            keys.iter().filter(|k| k.prefix().as_str() == *prefix).map(|k| k.number().get()).collect();
        numbers.sort_unstable();
        assert_eq!(numbers, (1..=*n).collect::<Vec<_>>(), "keys of {prefix} are not 1..={n}");
    }
}

/// Two separate `open`s of one database (two processes or nodes) still allocate
/// unique, gap-free keys.
pub(crate) async fn keys_gap_free_across_two_opens(db: &TestDb) {
    let other = db.reopen().await;
    let mut tasks = JoinSet::new();
    for t in 0..8 {
        let store = if t % 2 == 0 { db.store.clone() } else { other.clone() };
        tasks.spawn(async move {
            let mut keys = Vec::new();
            for i in 0..10 {
                keys.push(store.create_item(new_item("SHOP", &format!("t{t} i{i}")), T0).await.unwrap().key);
            }
            keys
        });
    }
    let keys: Vec<ItemKey> = tasks.join_all().await.into_iter().flatten().collect();
    assert_gap_free(&keys, &[("SHOP", 80)]);
}

/// 8 concurrent claimers over 1,000 queued jobs: every job is claimed exactly once,
/// with epoch 1, and its item is `running`.
pub(crate) async fn concurrent_claims_take_each_job_once(db: &TestDb) {
    let mut creators = JoinSet::new();
    for t in 0..8 {
        let store = db.store.clone();
        creators.spawn(async move {
            for i in 0..125 {
                store.create_item(new_item("SHOP", &format!("t{t} i{i}")), T0).await.unwrap();
            }
        });
    }
    creators.join_all().await;
    let mut claimers = JoinSet::new();
    for c in 0..8 {
        let store = db.store.clone();
        claimers.spawn(async move {
            let node = format!("node-{c}");
            let mut mine = Vec::new();
            loop {
                let jobs = store.claim_jobs(&node, 7, at(1), TTL).await.unwrap();
                if jobs.is_empty() {
                    return mine;
                }
                for j in &jobs {
                    assert_eq!((j.status, j.epoch, j.owner.as_deref()), (JobStatus::Running, 1, Some(node.as_str())));
                }
                mine.extend(jobs.into_iter().map(|j| j.id));
            }
        });
    }
    let all: Vec<JobId> = claimers.join_all().await.into_iter().flatten().collect();
    let distinct: BTreeSet<JobId> = all.iter().copied().collect();
    assert_eq!(all.len(), 1000, "claims: {}", all.len());
    assert_eq!(distinct.len(), 1000, "a job was claimed twice");
    let stats = db.store.queue_stats().await.unwrap();
    assert_eq!(stats.items_by_status["running"], 1000);
    assert_eq!(stats.jobs_by_status["running"], 1000);
    assert_eq!(stats.jobs_by_status["queued"], 0);
}

/// A claim takes the oldest queued jobs first, at most `limit`, sets owner, lease,
/// epoch + 1 and started_at, and marks the item running; an empty queue claims nothing.
pub(crate) async fn claim_takes_oldest_first_and_sets_lease(db: &TestDb) {
    let store = &*db.store;
    assert!(store.claim_jobs("a", 5, T0, TTL).await.unwrap().is_empty());
    for i in 0..3 {
        store.create_item(new_item("SHOP", &format!("i{i}")), at(i * 10)).await.unwrap();
    }
    let jobs = store.claim_jobs("a", 2, at(100), TTL).await.unwrap();
    let keys: Vec<String> = jobs.iter().map(|j| j.item.to_string()).collect();
    assert_eq!(keys, ["SHOP-1", "SHOP-2"]);
    let j = &jobs[0];
    assert_eq!(j.lease_expires_at, Some(at(100 + 30_000)));
    assert_eq!(j.heartbeat_at, Some(at(100)));
    assert_eq!(j.started_at, Some(at(100)));
    assert_eq!(j.epoch, 1);
    assert_eq!(store.get_item(&key("SHOP-1")).await.unwrap().unwrap().status, ItemStatus::Running);
    assert_eq!(store.get_item(&key("SHOP-3")).await.unwrap().unwrap().status, ItemStatus::Queued);
    assert_eq!(store.get_job(j.id).await.unwrap().as_ref(), Some(j));
    assert!(store.claim_jobs("a", 0, at(100), TTL).await.unwrap().is_empty());
}

/// After a take-over (epoch 1 → 2) every write with epoch 1 changes nothing and
/// reports fenced-out: record_started, record_finished, gate result, renew,
/// commit_transition and release.
pub(crate) async fn stale_epoch_writes_are_fenced_out(db: &TestDb) {
    let store = &*db.store;
    let job = claimed(store, "SHOP", 1, "a").await.remove(0);
    store.take_over(job.id, 1, "b", at(31_000), TTL, TakeOver::IfLeaseExpired, "lease expired").await.unwrap().unwrap();
    let job_before = store.get_job(job.id).await.unwrap();
    let item_before = store.get_item(&job.item).await.unwrap();
    let events_before = store.events_for_item(&job.item).await.unwrap();

    assert!(is_fenced(store.record_started(job.id, 1, run_info(7), at(32_000)).await));
    assert!(is_fenced(
        store
            .record_finished(
                job.id,
                1,
                ExitInfo { exit_code: Some(0), reason: None, verdict: None, usage: None },
                at(32_000)
            )
            .await
    ));
    assert!(is_fenced(store.record_gate_result(job.id, 1, gate("retest", true), at(32_000)).await));
    assert_eq!(store.renew_leases("a", &[(job.id, 1)], at(32_000), TTL).await.unwrap(), vec![]);
    assert_eq!(
        store.commit_transition(advance(&job.item, 1, Some((job.id, 1))), at(32_000)).await.unwrap(),
        CommitOutcome::FencedOut
    );
    assert!(is_fenced(store.release_job(job.id, 1, "shutdown", at(32_000)).await));
    // The new owner's renewal does not count for the old owner either.
    assert_eq!(store.renew_leases("a", &[(job.id, 2)], at(32_000), TTL).await.unwrap(), vec![]);

    assert_eq!(store.get_job(job.id).await.unwrap(), job_before);
    assert_eq!(store.get_item(&job.item).await.unwrap(), item_before);
    assert_eq!(store.events_for_item(&job.item).await.unwrap(), events_before);
    assert_eq!(store.active_job(&job.item).await.unwrap().map(|j| j.epoch), Some(2));
}

/// A commit whose `expected_version` is stale is a `Conflict` and writes nothing,
/// even though its job epoch is current.
pub(crate) async fn commit_from_stale_version_conflicts(db: &TestDb) {
    let store = &*db.store;
    let job = claimed(store, "SHOP", 1, "a").await.remove(0);
    // An operator moves the item on (version 1 → 2) without touching the job.
    let mut hold = cancel(&job.item, 1);
    hold.cancel_active_jobs = false;
    hold.next.status = ItemStatus::Running;
    hold.events = vec![NewEvent::new(job.item.clone(), EventKind::ItemRetried)];
    assert_eq!(store.commit_transition(hold, T0).await.unwrap(), CommitOutcome::Applied { enqueued: None });
    let job_before = store.get_job(job.id).await.unwrap();
    let events_before = store.events_for_item(&job.item).await.unwrap();
    let out = store.commit_transition(advance(&job.item, 1, Some((job.id, 1))), at(5)).await.unwrap();
    assert_eq!(out, CommitOutcome::Conflict);
    assert_eq!(store.get_job(job.id).await.unwrap(), job_before);
    assert_eq!(store.events_for_item(&job.item).await.unwrap(), events_before);
    let item = store.get_item(&job.item).await.unwrap().unwrap();
    assert_eq!((item.version, item.stage.as_str()), (2, "development"));
    assert_eq!(store.jobs_for_item(&job.item).await.unwrap().len(), 1);
}

/// With the clock driven by the test: a lease is live up to and including its
/// expiry instant and expired after it; another node then takes the job over
/// (epoch + 1), the old owner is fenced, and the new one carries on.
pub(crate) async fn lease_expiry_and_take_over(db: &TestDb) {
    let store = &*db.store;
    let job = claimed(store, "SHOP", 1, "a").await.remove(0);
    store.record_started(job.id, 1, run_info(42), at(10)).await.unwrap();
    assert_eq!(store.renew_leases("a", &[(job.id, 1)], at(10_000), TTL).await.unwrap(), vec![job.id]);
    let expiry = at(40_000);
    assert_eq!(store.get_job(job.id).await.unwrap().unwrap().lease_expires_at, Some(expiry));
    assert!(store.expired_running(at(39_999), 10).await.unwrap().is_empty());
    assert!(store.expired_running(expiry, 10).await.unwrap().is_empty());
    let expired = store.expired_running(at(40_001), 10).await.unwrap();
    assert_eq!(expired.iter().map(|j| j.id).collect::<Vec<_>>(), vec![job.id]);

    let early = store.take_over(job.id, 1, "b", expiry, TTL, TakeOver::IfLeaseExpired, "too early").await.unwrap();
    assert!(early.is_none(), "a lease is not taken over while it is live");
    let taken = store
        .take_over(job.id, 1, "b", at(40_001), TTL, TakeOver::IfLeaseExpired, "lease expired")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((taken.epoch, taken.owner.as_deref(), taken.status), (2, Some("b"), JobStatus::Running));
    assert_eq!(taken.lease_expires_at, Some(at(70_001)));
    assert_eq!(taken.pid, Some(42), "take-over keeps the run's process fields");
    assert!(store.expired_running(at(40_002), 10).await.unwrap().is_empty());
    assert!(store.take_over(job.id, 1, "c", at(40_002), TTL, TakeOver::Force, "late").await.unwrap().is_none());

    assert!(store.renew_leases("a", &[(job.id, 1)], at(40_002), TTL).await.unwrap().is_empty());
    assert!(is_fenced(
        store
            .record_finished(
                job.id,
                1,
                ExitInfo { exit_code: Some(0), reason: None, verdict: None, usage: None },
                at(40_003)
            )
            .await
    ));
    store
        .record_finished(
            job.id,
            2,
            ExitInfo { exit_code: None, reason: Some("lost".into()), verdict: None, usage: None },
            at(40_003),
        )
        .await
        .unwrap();
    let events = store.events_for_item(&job.item).await.unwrap();
    let took = events.iter().find(|e| e.kind == "reaper.took_over").unwrap();
    assert_eq!((took.from.as_deref(), took.to.as_deref(), took.epoch), (Some("a"), Some("b"), Some(2)));
    assert_eq!(took.reason.as_deref(), Some("lease expired"));
    assert_eq!(store.jobs_owned_by("b").await.unwrap().len(), 1);
    assert!(store.jobs_owned_by("a").await.unwrap().is_empty());
}

/// Two nodes race to take over the same job from the same epoch: exactly one wins.
pub(crate) async fn take_over_race_has_one_winner(db: &TestDb) {
    let jobs = claimed(&*db.store, "SHOP", 20, "a").await;
    for job in jobs {
        let mut racers = JoinSet::new();
        for node in ["b", "c"] {
            let store = db.store.clone();
            racers.spawn(async move {
                store.take_over(job.id, 1, node, at(31_000), TTL, TakeOver::IfLeaseExpired, "race").await.unwrap()
            });
        }
        let wins: Vec<Job> = racers.join_all().await.into_iter().flatten().collect();
        assert_eq!(wins.len(), 1, "job {} had {} winners", job.id, wins.len());
        let now = db.store.get_job(job.id).await.unwrap().unwrap();
        assert_eq!((now.epoch, now.owner), (2, wins[0].owner.clone()));
    }
}

/// A full stage: events come back in append order with increasing seqs, carry
/// item/job/epoch, the transition event holds the pre-transition version, and
/// `events_since` pages through the same log.
pub(crate) async fn events_are_ordered_and_filled(db: &TestDb) {
    let store = &*db.store;
    let job = claimed(store, "SHOP", 1, "a").await.remove(0);
    let other = store.create_item(new_item("SHOP", "other"), at(1)).await.unwrap();
    store.record_started(job.id, 1, run_info(9), at(2)).await.unwrap();
    let verdict = json!({ "verdict": "pass", "summary": "ok" });
    let exit = ExitInfo { exit_code: Some(0), reason: None, verdict: Some(verdict.clone()), usage: None };
    store.record_finished(job.id, 1, exit, at(3)).await.unwrap();
    let finished = store.get_job(job.id).await.unwrap().unwrap();
    assert_eq!(finished.verdict, Some(verdict), "the verdict is kept in the job row for any finalizer");
    store.record_gate_result(job.id, 1, gate("retest", true), at(4)).await.unwrap();
    store.record_gate_result(job.id, 1, gate("coverage", false), at(5)).await.unwrap();
    let out = store.commit_transition(advance(&job.item, 1, Some((job.id, 1))), at(6)).await.unwrap();
    let CommitOutcome::Applied { enqueued: Some(next) } = out else { panic!("{out:?}") };
    let mut extra = NewEvent::new(job.item.clone(), EventKind::ReaperDeferred);
    extra.reason = Some("lease live".into());
    store.append_events(&[extra], at(7)).await.unwrap();

    let events = store.events_for_item(&job.item).await.unwrap();
    assert_eq!(
        kinds(&events),
        [
            "item.created",
            "job.queued",
            "job.started",
            "job.finished",
            "gate.passed",
            "gate.failed",
            "item.advanced",
            "job.queued",
            "reaper.deferred"
        ]
    );
    assert!(events.windows(2).all(|w| w[0].seq < w[1].seq));
    assert!(events.iter().all(|e| e.item == job.item));
    let advanced = &events[6];
    assert_eq!((advanced.job, advanced.epoch), (Some(job.id), Some(1)));
    assert_eq!(advanced.data, json!({ "gates": ["retest"], "version": 1 }));
    assert_eq!((advanced.from.as_deref(), advanced.to.as_deref()), (Some("development"), Some("testing")));
    assert_eq!(advanced.at, at(6));
    assert_eq!(events[7].job, Some(next));
    assert_eq!(events[5].reason.as_deref(), Some("tests failed"));
    assert_eq!(events[5].data["gate"], json!("coverage"));

    let all = events_since_settled(store, events.len() + 2).await;
    assert!(all.windows(2).all(|w| w[0].seq < w[1].seq));
    assert!(all.iter().any(|e| e.item == other.key));
    let page = store.events_since(all[2].seq, 3).await.unwrap();
    assert_eq!(page, all[3..6].to_vec());
    assert!(store.events_since(all.last().unwrap().seq, 10).await.unwrap().is_empty());
}

/// Reads the whole log once it holds `n` events. PostgreSQL hands an event out only
/// once no transaction that could still commit a lower seq is running on the server
/// (other tests' included), which may take a few milliseconds.
async fn events_since_settled(store: &dyn Store, n: usize) -> Vec<orch_store::Event> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let all = store.events_since(0, 1000).await.unwrap();
        if all.len() >= n || tokio::time::Instant::now() > deadline {
            assert_eq!(all.len(), n, "events_since(0) after the writes settled");
            return all;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A commit that ends its job and enqueues the next stage: the job is done with its
/// verdict, the item is at the next version and stage, a queued job exists with
/// `job.queued`, and the work signal fires.
pub(crate) async fn commit_with_enqueue_creates_next_job(db: &TestDb) {
    let store = &*db.store;
    let job = claimed(store, "SHOP", 1, "a").await.remove(0);
    store
        .record_finished(job.id, 1, ExitInfo { exit_code: Some(0), reason: None, verdict: None, usage: None }, at(1))
        .await
        .unwrap();
    let signal = store.work_signal();
    let woken = signal.notified();
    tokio::pin!(woken);
    woken.as_mut().enable();
    let out = store.commit_transition(advance(&job.item, 1, Some((job.id, 1))), at(2)).await.unwrap();
    let CommitOutcome::Applied { enqueued: Some(next) } = out else { panic!("{out:?}") };
    tokio::time::timeout(Duration::from_secs(5), woken).await.expect("work signal fired after enqueue");

    let done = store.get_job(job.id).await.unwrap().unwrap();
    assert_eq!(done.status, JobStatus::Done);
    assert_eq!(done.verdict, Some(json!({ "verdict": "pass", "summary": "ok" })));
    assert_eq!(done.finished_at, Some(at(1)), "finished_at is the agent's exit, kept");
    assert_eq!(done.lease_expires_at, None);
    let item = store.get_item(&job.item).await.unwrap().unwrap();
    assert_eq!((item.version, item.stage.as_str(), item.status), (2, "testing", ItemStatus::Queued));
    assert_eq!(item.attempts.get("development"), Some(&1));
    let active = store.active_job(&job.item).await.unwrap().unwrap();
    assert_eq!(
        (active.id, active.stage.as_str(), active.attempt, active.status),
        (next, "testing", 1, JobStatus::Queued)
    );
    assert_eq!(store.jobs_for_item(&job.item).await.unwrap().len(), 2);
    let claimed_next = store.claim_jobs("b", 10, at(3), TTL).await.unwrap();
    assert_eq!(claimed_next.iter().map(|j| j.id).collect::<Vec<_>>(), vec![next]);
}

/// An operator transition with `cancel_active_jobs` cancels the running job, bumps
/// its epoch (the old owner is fenced) and appends `job.cancelled`.
pub(crate) async fn cancel_active_jobs_cancels_and_fences(db: &TestDb) {
    let store = &*db.store;
    let job = claimed(store, "SHOP", 1, "a").await.remove(0);
    let out = store.commit_transition(cancel(&job.item, 1), at(5)).await.unwrap();
    assert_eq!(out, CommitOutcome::Applied { enqueued: None });
    let now = store.get_job(job.id).await.unwrap().unwrap();
    assert_eq!((now.status, now.epoch), (JobStatus::Cancelled, 2));
    assert!(store.active_job(&job.item).await.unwrap().is_none());
    assert!(store.renew_leases("a", &[(job.id, 1)], at(6), TTL).await.unwrap().is_empty());
    let late = store.commit_transition(advance(&job.item, 1, Some((job.id, 1))), at(6)).await.unwrap();
    assert_eq!(late, CommitOutcome::FencedOut);
    let events = store.events_for_item(&job.item).await.unwrap();
    let tail: Vec<&str> = kinds(&events).into_iter().rev().take(2).collect();
    assert_eq!(tail, ["item.cancelled", "job.cancelled"]);
    let cancelled = events.iter().find(|e| e.kind == "job.cancelled").unwrap();
    assert_eq!((cancelled.job, cancelled.epoch), (Some(job.id), Some(2)));
    assert_eq!(store.get_item(&job.item).await.unwrap().unwrap().status, ItemStatus::Cancelled);
    assert!(store.jobs_owned_by("a").await.unwrap().is_empty());
}

/// Releasing a running job requeues it: queued, no owner, epoch + 1, run fields
/// cleared, item queued, `job.released`; the next claim bumps the epoch again and
/// the releaser's stale epoch is fenced.
pub(crate) async fn release_job_requeues(db: &TestDb) {
    let store = &*db.store;
    let job = claimed(store, "SHOP", 1, "a").await.remove(0);
    store.record_started(job.id, 1, run_info(5), at(1)).await.unwrap();
    let signal = store.work_signal();
    let woken = signal.notified();
    tokio::pin!(woken);
    woken.as_mut().enable();
    store.release_job(job.id, 1, "shutting down", at(2)).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), woken).await.expect("work signal fired after release");
    let j = store.get_job(job.id).await.unwrap().unwrap();
    assert_eq!((j.status, j.epoch, j.owner.as_deref()), (JobStatus::Queued, 2, None));
    assert_eq!(
        (j.pid, j.pgid, j.started_at, j.lease_expires_at, j.log_path.as_deref()),
        (None, None, None, None, None)
    );
    assert_eq!(store.get_item(&job.item).await.unwrap().unwrap().status, ItemStatus::Queued);
    let events = store.events_for_item(&job.item).await.unwrap();
    let released = events.last().unwrap();
    assert_eq!(
        (released.kind.as_str(), released.epoch, released.reason.as_deref()),
        ("job.released", Some(2), Some("shutting down"))
    );
    assert!(is_fenced(store.release_job(job.id, 1, "again", at(3)).await));
    let again = store.claim_jobs("b", 1, at(4), TTL).await.unwrap();
    assert_eq!((again[0].id, again[0].epoch), (job.id, 3));
}

/// The three reaper queries return exactly the jobs strictly past their boundary,
/// oldest first, within `limit`; `jobs_owned_by` lists running and finishing jobs.
pub(crate) async fn reaper_queries_respect_boundaries(db: &TestDb) {
    let store = &*db.store;
    // Three jobs claimed 1 s apart by node a; the second finishes.
    let mut jobs = Vec::new();
    for i in 0..3 {
        store.create_item(new_item("SHOP", &format!("i{i}")), T0).await.unwrap();
        jobs.extend(store.claim_jobs("a", 1, at(i * 1000), TTL).await.unwrap());
    }
    store
        .record_finished(
            jobs[1].id,
            1,
            ExitInfo { exit_code: Some(0), reason: None, verdict: None, usage: None },
            at(5_000),
        )
        .await
        .unwrap();
    let ids = |v: Vec<Job>| v.into_iter().map(|j| j.id).collect::<Vec<_>>();
    // Leases: job0 expires at 30_000, job2 at 32_000 (job1 is finishing: not tier 1).
    assert_eq!(ids(store.expired_running(at(30_000), 10).await.unwrap()), vec![]);
    assert_eq!(ids(store.expired_running(at(30_001), 10).await.unwrap()), vec![jobs[0].id]);
    assert_eq!(ids(store.expired_running(at(40_000), 10).await.unwrap()), vec![jobs[0].id, jobs[2].id]);
    assert_eq!(ids(store.expired_running(at(40_000), 1).await.unwrap()), vec![jobs[0].id]);
    // Tier 2 looks at finished_at only.
    assert_eq!(ids(store.stale_finishing(at(5_000), 10).await.unwrap()), vec![]);
    assert_eq!(ids(store.stale_finishing(at(5_001), 10).await.unwrap()), vec![jobs[1].id]);
    // Tier 3: started_at of running and finishing jobs.
    assert_eq!(ids(store.overdue(at(0), 10).await.unwrap()), vec![]);
    assert_eq!(ids(store.overdue(at(1_001), 10).await.unwrap()), vec![jobs[0].id, jobs[1].id]);
    assert_eq!(ids(store.overdue(at(9_999), 2).await.unwrap()), vec![jobs[0].id, jobs[1].id]);
    assert_eq!(ids(store.overdue(at(9_999), 10).await.unwrap()), vec![jobs[0].id, jobs[1].id, jobs[2].id]);
    assert_eq!(ids(store.jobs_owned_by("a").await.unwrap()), vec![jobs[0].id, jobs[1].id, jobs[2].id]);
    assert!(store.jobs_owned_by("b").await.unwrap().is_empty());
    // Ended jobs are in none of them.
    store.commit_transition(advance(&jobs[1].item, 1, Some((jobs[1].id, 1))), at(6_000)).await.unwrap();
    assert_eq!(ids(store.stale_finishing(at(99_999), 10).await.unwrap()), vec![]);
    assert_eq!(ids(store.overdue(at(99_999), 10).await.unwrap()), vec![jobs[0].id, jobs[2].id]);
    // A queued job is in none of them either.
    assert_eq!(store.expired_running(at(999_999), 10).await.unwrap().len(), 2);
}

/// `queue_stats` counts items and jobs per status (zeros included), open items per
/// stage, and lists exactly the running and finishing jobs.
pub(crate) async fn queue_stats_counts(db: &TestDb) {
    let store = &*db.store;
    let empty = store.queue_stats().await.unwrap();
    assert_eq!(empty.items_by_status.len(), ItemStatus::ALL.len());
    assert!(empty.items_by_status.values().all(|n| *n == 0));
    assert_eq!(empty.jobs_by_status.len(), JobStatus::ALL.len());
    assert!(empty.active_jobs.is_empty());
    let jobs = claimed(store, "SHOP", 2, "a").await;
    store.create_item(new_item("SHOP", "queued"), T0).await.unwrap();
    store.create_item(new_item("SHOP", "to cancel"), T0).await.unwrap();
    store.commit_transition(cancel(&key("SHOP-4"), 1), at(1)).await.unwrap();
    store
        .record_finished(
            jobs[0].id,
            1,
            ExitInfo { exit_code: Some(0), reason: None, verdict: None, usage: None },
            at(1),
        )
        .await
        .unwrap();
    let s = store.queue_stats().await.unwrap();
    let expect_items: BTreeMap<String, i64> =
        [("queued", 1), ("running", 2), ("waiting_approval", 0), ("blocked", 0), ("done", 0), ("cancelled", 1)]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
    assert_eq!(s.items_by_status, expect_items);
    assert_eq!(s.items_by_stage, BTreeMap::from([("development".to_owned(), 3)]));
    let expect_jobs: BTreeMap<String, i64> =
        [("queued", 1), ("running", 1), ("finishing", 1), ("done", 0), ("failed", 0), ("cancelled", 1)]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
    assert_eq!(s.jobs_by_status, expect_jobs);
    let active: BTreeSet<JobId> = s.active_jobs.iter().map(|j| j.id).collect();
    assert_eq!(active, jobs.iter().map(|j| j.id).collect());
}

/// `list_items` orders by prefix then number (numerically), filters by repo, stage
/// status and kind, and pages with offset/limit or a keyset cursor (`after`).
pub(crate) async fn list_items_filters_and_pages(db: &TestDb) {
    let store = &*db.store;
    for i in 0..11 {
        store.create_item(new_item("SHOP", &format!("s{i}")), T0).await.unwrap();
    }
    for i in 0..2 {
        store.create_item(new_item("API", &format!("a{i}")), T0).await.unwrap();
    }
    store.claim_jobs("a", 1, T0, TTL).await.unwrap(); // SHOP-1 runs
    let keys = |v: Vec<orch_store::Item>| v.into_iter().map(|i| i.key.to_string()).collect::<Vec<_>>();
    let all = keys(store.list_items(&ItemFilter::default(), Page::default()).await.unwrap());
    let mut expected = vec!["API-1".to_owned(), "API-2".to_owned()];
    expected.extend((1..=11).map(|n| format!("SHOP-{n}")));
    assert_eq!(all, expected);
    let page = keys(store.list_items(&ItemFilter::default(), Page { offset: 2, limit: 3 }).await.unwrap());
    assert_eq!(page, ["SHOP-1", "SHOP-2", "SHOP-3"]);
    let past = store.list_items(&ItemFilter::default(), Page { offset: 100, limit: 3 }).await.unwrap();
    assert!(past.is_empty());
    let api = ItemFilter { repo: Some("repo-api".into()), ..ItemFilter::default() };
    assert_eq!(keys(store.list_items(&api, Page::default()).await.unwrap()), ["API-1", "API-2"]);
    let running = ItemFilter { status: Some(ItemStatus::Running), ..ItemFilter::default() };
    assert_eq!(keys(store.list_items(&running, Page::default()).await.unwrap()), ["SHOP-1"]);
    let testing = ItemFilter { stage: Some(StageName::new("testing")), ..ItemFilter::default() };
    assert!(store.list_items(&testing, Page::default()).await.unwrap().is_empty());
    let both = ItemFilter {
        repo: Some("repo-shop".into()),
        stage: Some(StageName::new("development")),
        status: Some(ItemStatus::Queued),
        ..ItemFilter::default()
    };
    assert_eq!(store.list_items(&both, Page { offset: 0, limit: 2 }).await.unwrap().len(), 2);
    // Kind filter and keyset cursor: numbers compare as numbers (SHOP-10 after
    // SHOP-9), and a cursor in one prefix continues into the next.
    let features = ItemFilter { kind: Some(orch_core::ItemKind::Feature), ..ItemFilter::default() };
    assert!(store.list_items(&features, Page::default()).await.unwrap().is_empty());
    let bugs = ItemFilter { kind: Some(orch_core::ItemKind::Bug), ..ItemFilter::default() };
    assert_eq!(store.list_items(&bugs, Page::default()).await.unwrap().len(), 13);
    let after = |k: &str| ItemFilter { after: Some(k.parse().unwrap()), ..ItemFilter::default() };
    let next = keys(store.list_items(&after("SHOP-9"), Page::default()).await.unwrap());
    assert_eq!(next, ["SHOP-10", "SHOP-11"]);
    let next = keys(store.list_items(&after("API-2"), Page { offset: 0, limit: 2 }).await.unwrap());
    assert_eq!(next, ["SHOP-1", "SHOP-2"]);
    assert!(store.list_items(&after("SHOP-11"), Page::default()).await.unwrap().is_empty());
}

/// `set_branch` records the branch and bumps `updated_at`; an unknown key is NotFound.
pub(crate) async fn set_branch_records_branch(db: &TestDb) {
    let store = &*db.store;
    let item = store.create_item(new_item("SHOP", "b"), T0).await.unwrap();
    store.set_branch(&item.key, "feature/SHOP-1-bug-b", at(9)).await.unwrap();
    let got = store.get_item(&item.key).await.unwrap().unwrap();
    assert_eq!((got.branch.as_deref(), got.updated_at, got.version), (Some("feature/SHOP-1-bug-b"), at(9), 1));
    assert!(matches!(store.set_branch(&key("SHOP-9"), "x", T0).await, Err(Error::NotFound { .. })));
}

/// Leases renew in one call for the owner's current epochs only, and report which
/// were renewed; other nodes cannot renew them.
pub(crate) async fn renew_leases_reports_renewed_ids(db: &TestDb) {
    let store = &*db.store;
    let jobs = claimed(store, "SHOP", 3, "a").await;
    let ask: Vec<(JobId, i64)> = jobs.iter().map(|j| (j.id, 1)).chain([(JobId(999_999), 1)]).collect();
    let renewed = store.renew_leases("a", &ask, at(20_000), TTL).await.unwrap();
    assert_eq!(renewed, jobs.iter().map(|j| j.id).collect::<Vec<_>>());
    for j in &jobs {
        let now = store.get_job(j.id).await.unwrap().unwrap();
        assert_eq!((now.lease_expires_at, now.heartbeat_at), (Some(at(50_000)), Some(at(20_000))));
    }
    assert!(store.renew_leases("b", &ask, at(20_000), TTL).await.unwrap().is_empty());
    assert!(store.renew_leases("a", &[], at(20_000), TTL).await.unwrap().is_empty());
    // A request naming a job twice (an old and the current epoch) renews it once.
    let twice = store.renew_leases("a", &[(jobs[1].id, 0), (jobs[1].id, 1)], at(20_500), TTL).await.unwrap();
    assert_eq!(twice, vec![jobs[1].id]);
    // Finishing jobs keep their lease while the finalizer works.
    store
        .record_finished(
            jobs[0].id,
            1,
            ExitInfo { exit_code: Some(0), reason: None, verdict: None, usage: None },
            at(21_000),
        )
        .await
        .unwrap();
    assert_eq!(store.renew_leases("a", &[(jobs[0].id, 1)], at(22_000), TTL).await.unwrap(), vec![jobs[0].id]);
}

/// The store refuses what would break its invariants, writing nothing: a second
/// active job for one item, a next version other than expected + 1, a job final
/// status that has not ended, a job of another item, and writes to missing rows.
pub(crate) async fn refuses_invalid_requests(db: &TestDb) {
    let store = &*db.store;
    let job = claimed(store, "SHOP", 1, "a").await.remove(0);
    let other = store.create_item(new_item("SHOP", "other"), T0).await.unwrap();
    let events_before = events_since_settled(store, 4).await;

    // An enqueue while the item's job is still active (no cancel asked).
    let dup = advance(&job.item, 1, None);
    assert!(matches!(store.commit_transition(dup, at(1)).await, Err(Error::Invalid(_))));
    let mut bad_version = advance(&job.item, 1, Some((job.id, 1)));
    bad_version.next.version = 5;
    assert!(matches!(store.commit_transition(bad_version, at(1)).await, Err(Error::Invalid(_))));
    let mut not_ended = advance(&job.item, 1, Some((job.id, 1)));
    if let Some(j) = not_ended.job.as_mut() {
        j.status = JobStatus::Finishing;
    }
    assert!(matches!(store.commit_transition(not_ended, at(1)).await, Err(Error::Invalid(_))));
    let wrong_item = advance(&other.key, 1, Some((job.id, 1)));
    assert!(matches!(store.commit_transition(wrong_item, at(1)).await, Err(Error::Invalid(_))));
    let missing_job = advance(&job.item, 1, Some((JobId(777_777), 1)));
    assert!(matches!(store.commit_transition(missing_job, at(1)).await, Err(Error::NotFound { .. })));
    assert!(matches!(store.commit_transition(cancel(&key("SHOP-99"), 1), at(1)).await, Err(Error::NotFound { .. })));
    assert!(matches!(store.record_started(JobId(777_777), 1, run_info(1), at(1)).await, Err(Error::NotFound { .. })));
    assert!(matches!(
        store.take_over(JobId(777_777), 1, "b", at(1), TTL, TakeOver::Force, "x").await,
        Err(Error::NotFound { .. })
    ));

    assert_eq!(events_since_settled(store, events_before.len()).await, events_before);
    assert_eq!(store.get_job(job.id).await.unwrap().unwrap().status, JobStatus::Running);
    assert_eq!(store.get_item(&job.item).await.unwrap().unwrap().version, 1);
}

/// After a mixed history (jobs done, failed and cancelled; items done, cancelled and
/// open) the counts `queue_stats` reports, part live and part trigger-kept, equal
/// a brute-force count of every row.
pub(crate) async fn queue_stats_agree_with_a_full_count(db: &TestDb) {
    let store = &*db.store;
    let jobs = claimed(store, "SHOP", 6, "a").await;
    for (i, job) in jobs.iter().enumerate() {
        let key = &job.item;
        match i % 3 {
            // Advance (job done, next job queued), then finish the next stage too.
            0 => {
                let out = store.commit_transition(advance(key, 1, Some((job.id, 1))), at(1)).await.unwrap();
                let CommitOutcome::Applied { enqueued: Some(_) } = out else { panic!("{out:?}") };
            }
            // The job fails and the item is blocked.
            1 => {
                let mut c = advance(key, 1, Some((job.id, 1)));
                c.enqueue = None;
                c.next.status = ItemStatus::Blocked;
                if let Some(j) = c.job.as_mut() {
                    j.status = JobStatus::Failed;
                }
                store.commit_transition(c, at(1)).await.unwrap();
            }
            // An operator cancels the item and its running job.
            _ => {
                store.commit_transition(cancel(key, 1), at(1)).await.unwrap();
            }
        }
    }
    // Finish one advanced item completely: its testing job ends done, item done.
    let next = store.claim_jobs("b", 1, at(2), TTL).await.unwrap().remove(0);
    let mut done = advance(&next.item, 2, Some((next.id, next.epoch)));
    done.enqueue = None;
    done.next.status = ItemStatus::Done;
    done.next.version = 3;
    store.commit_transition(done, at(3)).await.unwrap();

    let stats = store.queue_stats().await.unwrap();
    let items = store.list_items(&ItemFilter::default(), Page { offset: 0, limit: 1000 }).await.unwrap();
    let mut want_items: BTreeMap<String, i64> = ItemStatus::ALL.iter().map(|s| (s.as_str().to_owned(), 0)).collect();
    let mut want_jobs: BTreeMap<String, i64> = JobStatus::ALL.iter().map(|s| (s.as_str().to_owned(), 0)).collect();
    for item in &items {
        *want_items.entry(item.status.as_str().to_owned()).or_default() += 1;
        for job in store.jobs_for_item(&item.key).await.unwrap() {
            *want_jobs.entry(job.status.as_str().to_owned()).or_default() += 1;
        }
    }
    assert_eq!(stats.items_by_status, want_items);
    assert_eq!(stats.jobs_by_status, want_jobs);
    assert!(want_items["done"] == 1 && want_items["cancelled"] == 2 && want_items["blocked"] == 2, "{want_items:?}");
    assert!(want_jobs["done"] == 3 && want_jobs["failed"] == 2 && want_jobs["cancelled"] == 2, "{want_jobs:?}");
}
