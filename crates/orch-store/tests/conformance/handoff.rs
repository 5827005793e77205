//! The one-write stage hand-off (issue 13): a transition that also records its
//! job's run (`RunEnd`) and claims the next stage's job for the committer
//! (`ClaimNext`) writes exactly what the separate calls would have, or nothing.

use orch_core::{ItemStatus, JobStatus, StageName, Usage};
use orch_store::{ClaimNext, CommitOutcome, Error, ExitInfo, NewEvent, RunEnd, TakeOver, TransitionCommit};
use serde_json::json;

use crate::specs::{advance, claimed, kinds, run_info};
use crate::support::{TTL, TestDb, at};

const USAGE: Usage = Usage {
    turns: 2,
    input_tokens: 120,
    output_tokens: 30,
    cache_read_tokens: 0,
    cache_write_tokens: 0,
    cost_usd: Some(0.001),
};

/// `advance` (development -> testing) for a job at epoch 1 that also stands for
/// `record_started` and `record_finished`, claiming `testing` for `node`.
pub(crate) fn handoff(job: &orch_store::Job, version: i64, node: Option<&str>) -> TransitionCommit {
    let mut commit = advance(&job.item, version, Some((job.id, 1)));
    let exit = ExitInfo { exit_code: Some(0), ..ExitInfo::default() };
    let started = NewEvent::job_started(job.item.clone(), job.id, 1, &run_info(7));
    let finished = NewEvent::job_finished(job.item.clone(), job.id, 1, &exit);
    commit.events.splice(0..0, [started, finished]);
    if let Some(final_) = commit.job.as_mut() {
        final_.run_end = Some(RunEnd { run: Some(run_info(7)), exit_code: Some(0), usage: Some(USAGE) });
    }
    commit.claim_next = node.map(|n| ClaimNext { node: n.to_owned(), lease_ttl: TTL });
    commit
}

/// Applied: the ended job carries the run's fields; the next job is `running`
/// for the committer exactly as `ClaimNext::claimed_job` describes, renewable,
/// recoverable by the reaper once its lease runs out, and claimable by nobody
/// else; the item is `running`; the events are those of the separate calls.
pub(crate) async fn one_write_handoff_records_the_run_and_claims_the_next_job(db: &TestDb) {
    let store = &*db.store;
    let job = claimed(store, "SHOP", 1, "a").await.remove(0);
    let claim = ClaimNext { node: "a".into(), lease_ttl: TTL };
    let out = store.commit_transition(handoff(&job, 1, Some("a")), at(2)).await.unwrap();
    let CommitOutcome::Applied { enqueued: Some(next) } = out else { panic!("{out:?}") };

    let ended = store.get_job(job.id).await.unwrap().unwrap();
    assert_eq!((ended.status, ended.exit_code, ended.usage), (JobStatus::Done, Some(0), Some(USAGE)));
    assert_eq!((ended.pid, ended.pgid, ended.proc_start), (Some(7), Some(7), Some(12345)));
    assert_eq!(ended.log_path.as_deref(), Some("/tmp/log-7"));
    assert_eq!((ended.finished_at, ended.lease_expires_at), (Some(at(2)), None));

    let expected = claim.claimed_job(next, &job.item, &StageName::new("testing"), 1, at(2));
    assert_eq!(store.get_job(next).await.unwrap().unwrap(), expected);
    let item = store.get_item(&job.item).await.unwrap().unwrap();
    assert_eq!((item.version, item.stage.as_str(), item.status), (2, "testing", ItemStatus::Running));

    let events = store.events_for_item(&job.item).await.unwrap();
    assert_eq!(
        kinds(&events),
        ["item.created", "job.queued", "job.started", "job.finished", "item.advanced", "job.queued"]
    );
    let (started, finished, queued) = (&events[2], &events[3], &events[5]);
    assert_eq!((started.job, started.epoch), (Some(job.id), Some(1)));
    assert_eq!(started.data, json!({ "pid": 7, "pgid": 7, "log_path": "/tmp/log-7" }), "as record_started writes it");
    assert_eq!((finished.job, finished.data.clone()), (Some(job.id), json!({ "exit_code": 0 })));
    assert_eq!((queued.job, queued.epoch, queued.to.as_deref()), (Some(next), Some(0), Some("testing")));

    assert!(store.claim_jobs("b", 10, at(3), TTL).await.unwrap().is_empty(), "a claimed job is nobody else's");
    assert_eq!(store.renew_leases("a", &[(next, 1)], at(3), TTL).await.unwrap(), vec![next]);
    assert_eq!(store.jobs_owned_by("a").await.unwrap().iter().map(|j| j.id).collect::<Vec<_>>(), vec![next]);
    let lapsed = at(3).add(TTL).add(std::time::Duration::from_millis(1));
    assert_eq!(store.expired_running(lapsed, 10).await.unwrap().iter().map(|j| j.id).collect::<Vec<_>>(), vec![next]);
    store.record_started(next, 1, run_info(8), at(4)).await.unwrap();
    let stats = store.queue_stats().await.unwrap();
    assert_eq!(stats.jobs_by_status.get("running").copied(), Some(1));
    assert_eq!(stats.jobs_by_status.get("queued").copied(), Some(0));
}

/// A committer whose job was taken over, or whose item moved on, writes nothing:
/// no run fields, no next job, no events, the item as it was.
pub(crate) async fn fenced_or_conflicting_handoff_writes_nothing(db: &TestDb) {
    let store = &*db.store;
    let jobs = claimed(store, "SHOP", 2, "a").await;
    let (taken, stale) = (&jobs[0], &jobs[1]);

    store.take_over(taken.id, 1, "b", at(1), TTL, TakeOver::Force, "test").await.unwrap().unwrap();
    let before = store.events_for_item(&taken.item).await.unwrap();
    let out = store.commit_transition(handoff(taken, 1, Some("a")), at(2)).await.unwrap();
    assert_eq!(out, CommitOutcome::FencedOut);
    let row = store.get_job(taken.id).await.unwrap().unwrap();
    assert_eq!((row.status, row.owner.as_deref(), row.exit_code, row.pid), (JobStatus::Running, Some("b"), None, None));
    assert_eq!(store.events_for_item(&taken.item).await.unwrap().len(), before.len());
    assert_eq!(store.jobs_for_item(&taken.item).await.unwrap().len(), 1);

    let before = store.events_for_item(&stale.item).await.unwrap();
    let out = store.commit_transition(handoff(stale, 5, Some("a")), at(2)).await.unwrap();
    assert_eq!(out, CommitOutcome::Conflict);
    let row = store.get_job(stale.id).await.unwrap().unwrap();
    assert_eq!((row.status, row.exit_code, row.usage, row.pid), (JobStatus::Running, None, None, None));
    assert_eq!(store.events_for_item(&stale.item).await.unwrap().len(), before.len());
    assert_eq!(store.jobs_for_item(&stale.item).await.unwrap().len(), 1);
    let item = store.get_item(&stale.item).await.unwrap().unwrap();
    assert_eq!((item.version, item.status), (1, ItemStatus::Running));
    assert!(store.jobs_owned_by("a").await.unwrap().iter().all(|j| j.id == stale.id));
}

/// Without `claim_next` the run is still recorded and the next job is queued for
/// any node; `claim_next` with nothing to enqueue, or with an operator's cancel,
/// is refused naming the item, writing nothing.
pub(crate) async fn handoff_without_claim_queues_and_bad_claims_are_refused(db: &TestDb) {
    let store = &*db.store;
    let jobs = claimed(store, "SHOP", 2, "a").await;
    let out = store.commit_transition(handoff(&jobs[0], 1, None), at(2)).await.unwrap();
    let CommitOutcome::Applied { enqueued: Some(next) } = out else { panic!("{out:?}") };
    assert_eq!(store.get_job(jobs[0].id).await.unwrap().unwrap().exit_code, Some(0));
    assert_eq!(store.get_job(next).await.unwrap().unwrap().status, JobStatus::Queued);
    assert_eq!(store.get_item(&jobs[0].item).await.unwrap().unwrap().status, ItemStatus::Queued);

    let mut nothing_to_claim = handoff(&jobs[1], 1, Some("a"));
    nothing_to_claim.enqueue = None;
    let mut with_cancel = handoff(&jobs[1], 1, Some("a"));
    with_cancel.cancel_active_jobs = true;
    for bad in [nothing_to_claim, with_cancel] {
        let err = store.commit_transition(bad, at(3)).await.unwrap_err();
        assert!(matches!(&err, Error::Invalid(why) if why.contains("SHOP-2") && why.contains("claim_next")), "{err:?}");
    }
    assert_eq!(store.get_job(jobs[1].id).await.unwrap().unwrap().status, JobStatus::Running);
    assert_eq!(store.jobs_for_item(&jobs[1].item).await.unwrap().len(), 1);
}
