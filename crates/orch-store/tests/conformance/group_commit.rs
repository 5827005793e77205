//! PostgreSQL group commit (issue 13): transitions that queue up while a commit
//! is in flight go to the server as one statement, and each keeps exactly the
//! outcome it would have had alone: applied (with its next job queued or claimed),
//! fenced out, conflict, not found, or its own error, with nothing of it written
//! unless applied.

use std::time::Duration;

use orch_core::{ItemStatus, JobStatus, StageName};
use orch_store::{ClaimNext, CommitOutcome, Error, JobId, TakeOver, TransitionCommit};
use sqlx::Connection;
use tokio::sync::mpsc;

use crate::handoff::handoff;
use crate::specs::{advance, claimed, kinds};
use crate::support::{TTL, TestDb, at};

/// What a transition is expected to come back with.
#[derive(Debug)]
enum Want {
    Queued,
    Claimed,
    Fenced,
    Conflict,
    NoSuchJob,
    SecondActiveJob,
}

/// Item 1's commit is held on a row lock while twelve others queue behind it;
/// released, the twelve go as one group, which hits a second active job (item
/// 13), so the group falls back to one statement each: every transition's
/// outcome and rows are exactly its own. Then the same without the bad one, and
/// the applied ones share one transaction (one group).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn grouped_transitions_keep_their_own_outcomes() {
    for with_bad in [true, false] {
        grouped_case(with_bad).await;
    }
}

async fn grouped_case(with_bad: bool) {
    let db = TestDb::postgres().await;
    let store = db.store.clone();
    let jobs = claimed(&*store, "SHOP", 13, "a").await;
    for j in &jobs[8..10] {
        store.take_over(j.id, 1, "b", at(1), TTL, TakeOver::Force, "test").await.unwrap().unwrap();
    }
    let mut plan: Vec<(TransitionCommit, Want)> = Vec::new();
    for j in &jobs[1..5] {
        plan.push((advance(&j.item, 1, Some((j.id, 1))), Want::Queued));
    }
    for j in &jobs[5..8] {
        plan.push((handoff(j, 1, Some("a")), Want::Claimed));
    }
    for j in &jobs[8..10] {
        plan.push((advance(&j.item, 1, Some((j.id, 1))), Want::Fenced));
    }
    plan.push((advance(&jobs[10].item, 5, Some((jobs[10].id, 1))), Want::Conflict));
    plan.push((advance(&jobs[11].item, 1, Some((JobId(999_999), 1))), Want::NoSuchJob));
    if with_bad {
        // No job to end while the item's job still runs: a second active job.
        plan.push((advance(&jobs[12].item, 1, None), Want::SecondActiveJob));
    }

    // Hold item 1's row so its commit blocks in the committer.
    let mut holder = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let mut tx = holder.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM items WHERE key = 'SHOP-1' FOR UPDATE").execute(&mut *tx).await.unwrap();
    let first = {
        let (store, c) = (store.clone(), advance(&jobs[0].item, 1, Some((jobs[0].id, 1))));
        tokio::spawn(async move { store.commit_transition(c, at(2)).await })
    };
    let mut watcher = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(&mut watcher)
        .await
        .unwrap();
        if waiting > 0 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "item 1's commit never waited on the row lock");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // Each task reports once its transition is in the committer's queue (its
    // call has been polled once), so all are queued before the lock goes.
    let (sent, mut queued) = mpsc::unbounded_channel();
    let mut tasks = Vec::new();
    for (commit, want) in plan {
        let (store, sent) = (store.clone(), sent.clone());
        tasks.push(tokio::spawn(async move {
            let key = commit.item.clone();
            let call = store.commit_transition(commit, at(3));
            tokio::pin!(call);
            let out = tokio::select! {
                biased;
                out = &mut call => Some(out),
                () = std::future::ready(()) => None,
            };
            sent.send(()).unwrap();
            let out = match out {
                Some(out) => out,
                None => call.await,
            };
            (key, want, out)
        }));
    }
    drop(sent);
    let expected = tasks.len();
    for _ in 0..expected {
        queued.recv().await.unwrap();
    }
    tx.commit().await.unwrap();
    assert!(matches!(first.await.unwrap().unwrap(), CommitOutcome::Applied { enqueued: Some(_) }));

    let mut applied_items = Vec::new();
    for task in tasks {
        let (key, want, out) = task.await.unwrap();
        let job = jobs.iter().find(|j| j.item == key).unwrap();
        let events = store.events_for_item(&key).await.unwrap();
        match (want, out) {
            (Want::Queued, Ok(CommitOutcome::Applied { enqueued: Some(next) })) => {
                let next = store.get_job(next).await.unwrap().unwrap();
                assert_eq!((next.status, next.stage.as_str(), next.owner), (JobStatus::Queued, "testing", None));
                assert_eq!(store.get_job(job.id).await.unwrap().unwrap().status, JobStatus::Done);
                assert_eq!(kinds(&events), ["item.created", "job.queued", "item.advanced", "job.queued"]);
                assert_eq!(store.get_item(&key).await.unwrap().unwrap().status, ItemStatus::Queued);
                applied_items.push(key.to_string());
            }
            (Want::Claimed, Ok(CommitOutcome::Applied { enqueued: Some(next) })) => {
                let row = store.get_job(next).await.unwrap().unwrap();
                let claim = ClaimNext { node: "a".into(), lease_ttl: TTL };
                let now = row.queued_at;
                assert_eq!(row, claim.claimed_job(next, &key, &StageName::new("testing"), 1, now));
                let ended = store.get_job(job.id).await.unwrap().unwrap();
                assert_eq!((ended.status, ended.exit_code, ended.pid), (JobStatus::Done, Some(0), Some(7)));
                assert_eq!(
                    kinds(&events),
                    ["item.created", "job.queued", "job.started", "job.finished", "item.advanced", "job.queued"]
                );
                assert_eq!(store.get_item(&key).await.unwrap().unwrap().status, ItemStatus::Running);
                applied_items.push(key.to_string());
            }
            (Want::Fenced, Ok(CommitOutcome::FencedOut)) => {
                let row = store.get_job(job.id).await.unwrap().unwrap();
                assert_eq!((row.status, row.owner.as_deref()), (JobStatus::Running, Some("b")), "{key}");
                assert_eq!(kinds(&events), ["item.created", "job.queued", "reaper.took_over"], "{key}");
                assert_eq!(store.get_item(&key).await.unwrap().unwrap().version, 1);
            }
            (Want::Conflict, Ok(CommitOutcome::Conflict)) => {
                let row = store.get_job(job.id).await.unwrap().unwrap();
                assert_eq!((row.status, row.exit_code), (JobStatus::Running, None), "{key}: left as it was");
                assert_eq!(kinds(&events), ["item.created", "job.queued"], "{key}");
                assert_eq!(store.get_item(&key).await.unwrap().unwrap().version, 1);
            }
            (Want::NoSuchJob, Err(Error::NotFound { what })) => {
                assert_eq!(what, "job 999999");
                assert_eq!(kinds(&events), ["item.created", "job.queued"], "{key}");
            }
            (Want::SecondActiveJob, Err(Error::Invalid(why))) => {
                assert!(why.contains(&key.to_string()) && why.contains("has not ended"), "{why}");
                assert_eq!(kinds(&events), ["item.created", "job.queued"], "{key}");
                assert_eq!(store.jobs_for_item(&key).await.unwrap().len(), 1);
            }
            (want, out) => panic!("{key}: wanted {want:?}, got {out:?}"),
        }
    }
    assert_eq!(applied_items.len(), 7);
    // Without the bad transition the group went as one statement: one transaction
    // wrote every applied item's events.
    let xids: i64 = sqlx::query_scalar(
        "SELECT COUNT(DISTINCT xid::text) FROM events WHERE item = ANY($1) AND kind = 'item.advanced'",
    )
    .bind(&applied_items)
    .fetch_one(&mut watcher)
    .await
    .unwrap();
    if with_bad {
        assert_eq!(xids, 7, "after the group failed each transition was its own statement");
    } else {
        assert_eq!(xids, 1, "the seven applied transitions were one group");
    }
}
