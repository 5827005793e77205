//! The git layer's state (DESIGN §2.3, §6): a push becomes the store's truth only
//! while the pusher still owns the job; the local forge's pull requests are opened
//! once, change only in the fields an update sets, and a merge is final; every
//! gate result keeps the SHA it judged.

use std::collections::BTreeMap;
use std::sync::Arc;

use orch_core::{EventKind, ItemKey, ItemStatus, JobStatus};
use orch_store::{
    CommitOutcome, Error, GateResult, Item, ItemFilter, Job, JobFinal, NewEvent, NewPr, Page, PrCheck, PrUpdate,
    PullRequest, Store, TakeOver, TransitionCommit,
};
use serde_json::json;
use tokio::sync::Barrier;
use tokio::task::JoinSet;

use crate::support::{T0, TTL, TestDb, at, new_item};

const SHA_1: &str = "1111111111111111111111111111111111111111";
const SHA_2: &str = "2222222222222222222222222222222222222222";
const SHA_3: &str = "3333333333333333333333333333333333333333";

/// Creates an item of prefix `p` and claims its job for node `a` at `T0` (epoch 1).
async fn claimed(store: &dyn Store, p: &str) -> (Item, Job) {
    let item = store.create_item(new_item(p, "push me"), T0).await.unwrap();
    let job = store.claim_jobs("a", 1, T0, TTL).await.unwrap().pop().expect("the item's job is queued");
    assert_eq!((&job.item, job.epoch), (&item.key, 1));
    (item, job)
}

/// The item's feature branch, as orch-vcs names it.
fn branch_of(key: &ItemKey) -> String {
    format!("feature/{key}-bug-push-me")
}

/// What a finalizer appends with a push of `sha`: job and epoch left for the store.
fn push_events(key: &ItemKey, sha: &str) -> Vec<NewEvent> {
    let mut committed = NewEvent::new(key.clone(), EventKind::VcsCommitted);
    committed.data = json!({ "sha": sha });
    let mut pushed = NewEvent::new(key.clone(), EventKind::VcsPushed);
    pushed.data = json!({ "branch": branch_of(key), "sha": sha });
    vec![committed, pushed]
}

/// The PR a finalizer opens for `item` at its first push of `sha`.
fn new_pr(item: &Item, sha: &str) -> NewPr {
    NewPr {
        item: item.key.clone(),
        repo: item.repo.clone(),
        title: item.title.clone(),
        body: format!("Closes {}", item.key),
        branch: branch_of(&item.key),
        head_sha: sha.to_owned(),
        url: format!("local://{}/pulls/{}", item.repo, item.key.number()),
    }
}

fn check(sha: &str, passed: bool, at_ms: i64) -> PrCheck {
    PrCheck { sha: sha.to_owned(), passed, reason: (!passed).then(|| "red".to_owned()), at: at(at_ms) }
}

fn keys(prs: &[PullRequest]) -> Vec<String> {
    prs.iter().map(|p| p.item.to_string()).collect()
}

/// A claimed job at epoch 1: `record_push` at epoch 1 sets the item's branch and
/// head SHA (seen by `get_item` and `list_items`) and `updated_at`, and appends its
/// events in order, stamped with the job and epoch. A later push moves the SHA on.
pub(crate) async fn record_push_sets_branch_and_head_sha(db: &TestDb) {
    let store = &*db.store;
    let (item, job) = claimed(store, "SHOP").await;
    let before = store.events_for_item(&item.key).await.unwrap().len();
    let branch = branch_of(&item.key);

    store.record_push(job.id, 1, &branch, SHA_1, &push_events(&item.key, SHA_1), at(10)).await.unwrap();
    let stored = store.get_item(&item.key).await.unwrap().unwrap();
    assert_eq!(
        (stored.branch.as_deref(), stored.head_sha.as_deref(), stored.updated_at),
        (Some(branch.as_str()), Some(SHA_1), at(10))
    );
    assert_eq!(stored.version, item.version, "a push is not a transition");
    let listed = store.list_items(&ItemFilter::default(), Page::default()).await.unwrap();
    assert_eq!(listed, vec![stored]);

    let events = store.events_for_item(&item.key).await.unwrap();
    let pushed = &events[before..];
    assert_eq!(pushed.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>(), ["vcs.committed", "vcs.pushed"]);
    for ev in pushed {
        assert_eq!((&ev.item, ev.job, ev.epoch, ev.at), (&item.key, Some(job.id), Some(1), at(10)));
    }
    assert_eq!(pushed[1].data, json!({ "branch": branch, "sha": SHA_1 }));

    store.record_push(job.id, 1, &branch, SHA_2, &[], at(20)).await.unwrap();
    let stored = store.get_item(&item.key).await.unwrap().unwrap();
    assert_eq!((stored.head_sha.as_deref(), stored.updated_at), (Some(SHA_2), at(20)));
    assert_eq!(store.events_for_item(&item.key).await.unwrap().len(), before + 2);
}

/// A claimed job taken over (epoch 1 → 2): a push named with epoch 1 is
/// `FencedOut` and changes nothing — no branch, no SHA, no events — while epoch 2
/// pushes. Once the job has ended even its current epoch is fenced out. An unknown
/// job is `NotFound`; an empty branch or SHA is `Invalid`.
pub(crate) async fn record_push_is_fenced_by_epoch(db: &TestDb) {
    let store = &*db.store;
    let (item, job) = claimed(store, "SHOP").await;
    store.take_over(job.id, 1, "b", at(31_000), TTL, TakeOver::IfLeaseExpired, "lease expired").await.unwrap().unwrap();
    let item_before = store.get_item(&item.key).await.unwrap();
    let events_before = store.events_for_item(&item.key).await.unwrap();
    let branch = branch_of(&item.key);

    let stale = store.record_push(job.id, 1, &branch, SHA_1, &push_events(&item.key, SHA_1), at(32_000)).await;
    assert!(matches!(stale, Err(Error::FencedOut { epoch: 1, .. })), "{stale:?}");
    assert_eq!(store.get_item(&item.key).await.unwrap(), item_before);
    assert_eq!(store.events_for_item(&item.key).await.unwrap(), events_before);

    store.record_push(job.id, 2, &branch, SHA_2, &push_events(&item.key, SHA_2), at(33_000)).await.unwrap();
    assert_eq!(store.get_item(&item.key).await.unwrap().unwrap().head_sha.as_deref(), Some(SHA_2));

    let mut next = item_before.as_ref().unwrap().state();
    next.status = ItemStatus::Done;
    next.version += 1;
    let done = TransitionCommit {
        item: item.key.clone(),
        expected_version: item.version,
        job: Some(JobFinal {
            id: job.id,
            epoch: 2,
            status: JobStatus::Done,
            reason: None,
            verdict: None,
            run_end: None,
        }),
        next,
        cancel_active_jobs: false,
        events: vec![NewEvent::new(item.key.clone(), EventKind::ItemDone)],
        enqueue: None,
        claim_next: None,
    };
    assert_eq!(store.commit_transition(done, at(34_000)).await.unwrap(), CommitOutcome::Applied { enqueued: None });
    let item_done = store.get_item(&item.key).await.unwrap();
    let events_done = store.events_for_item(&item.key).await.unwrap();
    let ended = store.record_push(job.id, 2, &branch, SHA_3, &push_events(&item.key, SHA_3), at(35_000)).await;
    assert!(matches!(ended, Err(Error::FencedOut { epoch: 2, .. })), "{ended:?}");
    assert_eq!(store.get_item(&item.key).await.unwrap(), item_done);
    assert_eq!(store.events_for_item(&item.key).await.unwrap(), events_done);

    let missing = store.record_push(orch_store::JobId(9_999), 1, &branch, SHA_1, &[], at(36_000)).await;
    assert!(matches!(missing, Err(Error::NotFound { .. })), "{missing:?}");
    for (b, sha) in [("", SHA_1), (branch.as_str(), " ")] {
        let bad = store.record_push(job.id, 2, b, sha, &[], at(36_000)).await;
        assert!(matches!(bad, Err(Error::Invalid(_))), "{b:?} {sha:?}: {bad:?}");
    }
    assert_eq!(store.get_item(&item.key).await.unwrap(), item_done);
}

/// `open_pr` creates the item's PR once: state `open`, the item's number, no
/// checks, both times `now`; `get_pr` and the item's `pr` show the same. A repeat
/// (other fields, later) returns the stored PR unchanged with `false`. Eight
/// concurrent calls through two opens of the store create exactly one (five
/// rounds). An unknown
/// item is `NotFound`; another item's PR on the same branch is `Invalid`.
pub(crate) async fn open_pr_is_idempotent(db: &TestDb) {
    let store = &*db.store;
    store.create_item(new_item("SHOP", "first"), T0).await.unwrap();
    let item = store.create_item(new_item("SHOP", "second"), T0).await.unwrap();

    let (pr, created) = store.open_pr(new_pr(&item, SHA_1), at(10)).await.unwrap();
    assert!(created);
    let expected = PullRequest {
        url: "local://repo-shop/pulls/2".into(),
        state: "open".into(),
        merge_sha: None,
        item: item.key.clone(),
        number: 2,
        repo: "repo-shop".into(),
        title: "second".into(),
        body: "Closes SHOP-2".into(),
        branch: branch_of(&item.key),
        head_sha: Some(SHA_1.into()),
        checks: BTreeMap::new(),
        created_at: at(10),
        updated_at: at(10),
    };
    assert_eq!(pr, expected);
    assert_eq!(store.get_pr(&item.key).await.unwrap(), Some(expected.clone()));
    assert_eq!(store.get_item(&item.key).await.unwrap().unwrap().pr, Some(expected.clone()));

    let mut again = new_pr(&item, SHA_2);
    again.title = "another title".into();
    assert_eq!(store.open_pr(again, at(20)).await.unwrap(), (expected.clone(), false));
    assert_eq!(store.get_pr(&item.key).await.unwrap(), Some(expected.clone()));

    // Several rounds, so a missing serialisation cannot pass by luck.
    let other = db.reopen().await;
    for round in 0..5 {
        let raced = store.create_item(new_item("SHOP", &format!("raced {round}")), T0).await.unwrap();
        let barrier = Arc::new(Barrier::new(8));
        let mut tasks = JoinSet::new();
        for i in 0..8 {
            let store = if i % 2 == 0 { db.store.clone() } else { other.clone() };
            let (barrier, new) = (barrier.clone(), new_pr(&raced, SHA_1));
            tasks.spawn(async move {
                barrier.wait().await;
                store.open_pr(new, at(30)).await
            });
        }
        let results: Vec<(PullRequest, bool)> =
            tasks.join_all().await.into_iter().map(|r| r.unwrap_or_else(|e| panic!("{}: {e}", raced.key))).collect();
        assert_eq!(results.iter().filter(|(_, created)| *created).count(), 1, "{results:?}");
        assert!(results.iter().all(|(pr, _)| pr == &results[0].0), "{results:?}");
    }

    let mut ghost = new_pr(&item, SHA_1);
    ghost.item = "SHOP-99".parse().unwrap();
    ghost.branch = "feature/SHOP-99".into();
    let missing = store.open_pr(ghost, at(40)).await;
    assert!(matches!(missing, Err(Error::NotFound { .. })), "{missing:?}");

    let first: ItemKey = "SHOP-1".parse().unwrap();
    let mut same_branch = new_pr(&store.get_item(&first).await.unwrap().unwrap(), SHA_1);
    same_branch.branch = branch_of(&item.key);
    let taken = store.open_pr(same_branch, at(40)).await;
    assert!(matches!(&taken, Err(Error::Invalid(m)) if m.contains(&branch_of(&item.key))), "{taken:?}");
    assert_eq!(store.get_pr(&first).await.unwrap(), None);
}

/// An open PR: each update changes exactly the fields it sets and `updated_at`;
/// a check inserts its gate's entry or replaces it (by gate name); a closed PR may
/// be reopened; merging sets the state and merge SHA. The item's `pr` follows. An
/// item without a PR is `NotFound`; an unknown state is `Invalid` and writes
/// nothing.
pub(crate) async fn update_pr_applies_set_fields(db: &TestDb) {
    let store = &*db.store;
    let item = store.create_item(new_item("SHOP", "pr"), T0).await.unwrap();
    let (mut expected, _) = store.open_pr(new_pr(&item, SHA_1), at(10)).await.unwrap();

    let up = |u: PrUpdate, ms: i64| {
        let key = item.key.clone();
        async move { store.update_pr(&key, u, at(ms)).await.unwrap() }
    };
    let pr = up(PrUpdate { head_sha: Some(SHA_2.into()), ..PrUpdate::default() }, 20).await;
    expected.head_sha = Some(SHA_2.into());
    expected.updated_at = at(20);
    assert_eq!(pr, expected);

    up(PrUpdate { check: Some(("retest".into(), check(SHA_2, true, 21))), ..PrUpdate::default() }, 21).await;
    up(PrUpdate { check: Some(("coverage".into(), check(SHA_2, false, 22))), ..PrUpdate::default() }, 22).await;
    let pr = up(PrUpdate { check: Some(("retest".into(), check(SHA_3, false, 23))), ..PrUpdate::default() }, 23).await;
    expected.checks = BTreeMap::from([
        ("coverage".to_owned(), check(SHA_2, false, 22)),
        ("retest".to_owned(), check(SHA_3, false, 23)),
    ]);
    expected.updated_at = at(23);
    assert_eq!(pr, expected);

    let pr =
        up(PrUpdate { body: Some("new body".into()), state: Some("closed".into()), ..PrUpdate::default() }, 24).await;
    expected.body = "new body".into();
    expected.state = "closed".into();
    expected.updated_at = at(24);
    assert_eq!(pr, expected);
    let pr = up(PrUpdate { state: Some("open".into()), ..PrUpdate::default() }, 25).await;
    expected.state = "open".into();
    expected.updated_at = at(25);
    assert_eq!(pr, expected);

    let merge = PrUpdate { state: Some("merged".into()), merge_sha: Some(SHA_1.into()), ..PrUpdate::default() };
    let pr = up(merge, 26).await;
    expected.state = "merged".into();
    expected.merge_sha = Some(SHA_1.into());
    expected.updated_at = at(26);
    assert_eq!(pr, expected);
    assert_eq!(store.get_pr(&item.key).await.unwrap(), Some(expected.clone()));
    assert_eq!(store.get_item(&item.key).await.unwrap().unwrap().pr, Some(expected.clone()));
    assert_eq!(expected.created_at, at(10));

    let bad = store.update_pr(&item.key, PrUpdate { state: Some("draft".into()), ..PrUpdate::default() }, at(27)).await;
    assert!(matches!(&bad, Err(Error::Invalid(m)) if m.contains("draft")), "{bad:?}");
    let other = store.create_item(new_item("SHOP", "no pr"), T0).await.unwrap();
    let none = store.update_pr(&other.key, PrUpdate { body: Some("x".into()), ..PrUpdate::default() }, at(27)).await;
    assert!(matches!(none, Err(Error::NotFound { .. })), "{none:?}");
    assert_eq!(store.get_pr(&other.key).await.unwrap(), None);
    assert_eq!(store.get_pr(&item.key).await.unwrap(), Some(expected));
}

/// A merged PR never goes back: asking it to become open or closed is `Invalid`,
/// naming the PR and both states, and changes nothing (not even the fields set
/// alongside). Merging it again is accepted, as a repeated merge must be.
pub(crate) async fn merged_pr_never_reopens(db: &TestDb) {
    let store = &*db.store;
    let item = store.create_item(new_item("SHOP", "merged"), T0).await.unwrap();
    store.open_pr(new_pr(&item, SHA_1), at(10)).await.unwrap();
    let merge = PrUpdate { state: Some("merged".into()), merge_sha: Some(SHA_2.into()), ..PrUpdate::default() };
    let merged = store.update_pr(&item.key, merge, at(20)).await.unwrap();

    for back in ["open", "closed"] {
        let update = PrUpdate { state: Some(back.into()), body: Some("reopened".into()), ..PrUpdate::default() };
        let err = store.update_pr(&item.key, update, at(30)).await.unwrap_err();
        let Error::Invalid(message) = &err else { panic!("expected Invalid, got {err:?}") };
        for part in ["#1", "SHOP-1", "merged", back] {
            assert!(message.contains(part), "{message:?} does not name {part:?}");
        }
        assert_eq!(store.get_pr(&item.key).await.unwrap().as_ref(), Some(&merged));
    }

    let again = PrUpdate { state: Some("merged".into()), merge_sha: Some(SHA_2.into()), ..PrUpdate::default() };
    let pr = store.update_pr(&item.key, again, at(40)).await.unwrap();
    assert_eq!((pr.state.as_str(), pr.merge_sha.as_deref(), pr.updated_at), ("merged", Some(SHA_2), at(40)));
}

/// PRs on SHOP-1, SHOP-2, SHOP-10 (repo-shop) and OPS-1, OPS-2 (repo-ops), opened
/// out of key order, SHOP-10 merged and OPS-2 closed: `list_prs` filters by repo
/// and by state and orders by key (prefix, then number: SHOP-2 before SHOP-10). An
/// unknown state is `Invalid`.
pub(crate) async fn list_prs_filters_and_orders(db: &TestDb) {
    let store = &*db.store;
    let mut items = BTreeMap::new();
    for (prefix, n) in [("SHOP", 10), ("OPS", 2)] {
        for i in 0..n {
            let item = store.create_item(new_item(prefix, &format!("{prefix} {i}")), T0).await.unwrap();
            items.insert(item.key.to_string(), item);
        }
    }
    for key in ["SHOP-10", "SHOP-2", "OPS-2", "SHOP-1", "OPS-1"] {
        store.open_pr(new_pr(&items[key], SHA_1), at(10)).await.unwrap();
    }
    let set_state = |key: &str, state: &str| {
        let key: ItemKey = key.parse().unwrap();
        let update = PrUpdate { state: Some(state.to_owned()), ..PrUpdate::default() };
        async move { store.update_pr(&key, update, at(20)).await.unwrap() }
    };
    set_state("SHOP-10", "merged").await;
    set_state("OPS-2", "closed").await;

    let list = |repo: Option<&'static str>, state: Option<&'static str>| async move {
        keys(&store.list_prs(repo, state).await.unwrap())
    };
    assert_eq!(list(None, None).await, ["OPS-1", "OPS-2", "SHOP-1", "SHOP-2", "SHOP-10"]);
    assert_eq!(list(Some("repo-shop"), None).await, ["SHOP-1", "SHOP-2", "SHOP-10"]);
    assert_eq!(list(None, Some("open")).await, ["OPS-1", "SHOP-1", "SHOP-2"]);
    assert_eq!(list(Some("repo-shop"), Some("merged")).await, ["SHOP-10"]);
    assert_eq!(list(Some("repo-ops"), Some("closed")).await, ["OPS-2"]);
    assert!(list(Some("repo-none"), None).await.is_empty());
    let all = store.list_prs(None, None).await.unwrap();
    assert_eq!(all[4], store.get_pr(&"SHOP-10".parse().unwrap()).await.unwrap().unwrap());
    let bad = store.list_prs(None, Some("draft")).await;
    assert!(matches!(bad, Err(Error::Invalid(_))), "{bad:?}");
}

/// Two items with PRs: each is found by its branch, as `get_pr` has it (updates
/// included); a branch with no PR finds nothing.
pub(crate) async fn find_pr_by_branch_finds_the_items_pr(db: &TestDb) {
    let store = &*db.store;
    let a = store.create_item(new_item("SHOP", "a"), T0).await.unwrap();
    let b = store.create_item(new_item("SHOP", "b"), T0).await.unwrap();
    store.open_pr(new_pr(&a, SHA_1), at(10)).await.unwrap();
    store.open_pr(new_pr(&b, SHA_2), at(11)).await.unwrap();
    let update = PrUpdate { check: Some(("retest".into(), check(SHA_2, true, 12))), ..PrUpdate::default() };
    let b_pr = store.update_pr(&b.key, update, at(12)).await.unwrap();

    let found_b = store.find_pr_by_branch(&branch_of(&b.key)).await.unwrap();
    assert_eq!(found_b, Some(b_pr));
    let found_a = store.find_pr_by_branch(&branch_of(&a.key)).await.unwrap();
    assert_eq!(found_a, store.get_pr(&a.key).await.unwrap());
    assert_eq!(found_a.map(|p| p.item), Some(a.key));
    assert_eq!(store.find_pr_by_branch("feature/SHOP-3-bug-none").await.unwrap(), None);
}

/// A claimed job: gate results recorded with and without a SHA come back from
/// `gate_results` as recorded, oldest first, across a take-over; the gate's event
/// carries the SHA; a stale epoch's result is not stored; another job has none.
pub(crate) async fn gate_results_keep_their_sha(db: &TestDb) {
    let store = &*db.store;
    let (item, job) = claimed(store, "SHOP").await;
    let result = |gate: &str, passed: bool, sha: Option<&str>| GateResult {
        gate: gate.to_owned(),
        passed,
        exit_code: Some(if passed { 0 } else { 1 }),
        metric: passed.then_some(88.5),
        duration_ms: 1_500,
        reason: (!passed).then(|| "red".to_owned()),
        sha: sha.map(str::to_owned),
    };
    let first = result("retest", true, Some(SHA_1));
    let second = result("coverage", false, None);
    store.record_gate_result(job.id, 1, first.clone(), at(1)).await.unwrap();
    store.record_gate_result(job.id, 1, second.clone(), at(2)).await.unwrap();
    store.take_over(job.id, 1, "b", at(31_000), TTL, TakeOver::IfLeaseExpired, "lease expired").await.unwrap().unwrap();
    let stale = store.record_gate_result(job.id, 1, result("security", true, Some(SHA_3)), at(31_001)).await;
    assert!(matches!(stale, Err(Error::FencedOut { .. })), "{stale:?}");
    let third = result("retest", true, Some(SHA_2));
    store.record_gate_result(job.id, 2, third.clone(), at(31_002)).await.unwrap();

    assert_eq!(store.gate_results(job.id).await.unwrap(), vec![first, second, third]);
    let events = store.events_for_item(&item.key).await.unwrap();
    let shas: Vec<_> = events.iter().filter(|e| e.kind.starts_with("gate.")).map(|e| e.data["sha"].clone()).collect();
    assert_eq!(shas, [json!(SHA_1), json!(null), json!(SHA_2)]);

    let other = store.create_item(new_item("OPS", "other"), T0).await.unwrap();
    let other_job = store.active_job(&other.key).await.unwrap().unwrap();
    assert!(store.gate_results(other_job.id).await.unwrap().is_empty());
}

/// An open PR: eight gates report their checks at once through two opens of the
/// store (`update_pr` reads, changes and writes back the `checks` map), and every
/// check is kept — no update is lost to a concurrent one.
pub(crate) async fn concurrent_checks_are_all_kept(db: &TestDb) {
    let store = &*db.store;
    let item = store.create_item(new_item("SHOP", "checks"), T0).await.unwrap();
    store.open_pr(new_pr(&item, SHA_1), at(10)).await.unwrap();
    let other = db.reopen().await;
    let barrier = Arc::new(Barrier::new(8));
    let mut tasks = JoinSet::new();
    for i in 0..8 {
        let store = if i % 2 == 0 { db.store.clone() } else { other.clone() };
        let (barrier, key) = (barrier.clone(), item.key.clone());
        tasks.spawn(async move {
            barrier.wait().await;
            let update = PrUpdate {
                check: Some((format!("gate-{i}"), check(SHA_1, i % 3 != 0, 20 + i))),
                ..PrUpdate::default()
            };
            store.update_pr(&key, update, at(20 + i)).await.unwrap();
        });
    }
    tasks.join_all().await;
    let pr = store.get_pr(&item.key).await.unwrap().unwrap();
    let expected: BTreeMap<String, PrCheck> =
        (0..8).map(|i| (format!("gate-{i}"), check(SHA_1, i % 3 != 0, 20 + i))).collect();
    assert_eq!(pr.checks, expected);
}
