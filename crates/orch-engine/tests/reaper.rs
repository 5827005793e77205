//! The reaper's tiers and the incident it exists to prevent (DESIGN §2), with real
//! processes, a real store and the controllable clock; a second node on the same
//! store deferring to a live finalizer and taking over a dead one. Every scenario
//! runs on SQLite and on PostgreSQL (`sqlite::…`, `postgres::…`).

mod common;

use std::time::Duration;

use common::*;
use nix::sys::signal::Signal;
use orch_core::{ItemKind, ItemStatus, JobStatus};

/// deploy-staging → deploy runs a gate that blocks until the test drops a
/// `release` file, optionally only on its first run.
fn slow_gate_edge() -> &'static str {
    r#"
[[edges]]
from = "deploy-staging"
to = "deploy"
gates = ["slow"]
on_fail = "development"

[gates.slow]
command = ["./gates/slow.sh"]
timeout_s = 30
"#
}

fn install_slow_gate(h: &Harness, slow_only_first_run: bool) {
    std::fs::create_dir_all(h.path().join("gates")).unwrap();
    let first =
        if slow_only_first_run { "if [ -f gate-ran ]; then echo fast; exit 0; fi\ntouch gate-ran\n" } else { "" };
    script(
        &h.path().join("gates"),
        "slow.sh",
        &format!(
            "{first}echo $$ > gate-pid\ntouch gate-started\nwhile [ ! -f release ]; do sleep 0.05; done\necho released"
        ),
    );
}

fn workdir(h: &Harness, key: &orch_core::ItemKey) -> std::path::PathBuf {
    h.path().join("data/work").join(key.to_string())
}

async fn wait_lease_after_now(h: &Harness, key: &orch_core::ItemKey) {
    let now = h.clock.now_ts();
    h.wait_job(key, "a lease renewed past the clock", |j| {
        j.status == JobStatus::Finishing && j.lease_expires_at.is_some_and(|t| t > now)
    })
    .await;
}

fn count(kinds: &[String], kind: &str) -> usize {
    kinds.iter().filter(|k| k.as_str() == kind).count()
}

async fn orch_incident_reaper_defers_to_a_live_finalizer(backend: Backend) {
    let h = Harness::new(backend, slow_gate_edge()).await;
    install_slow_gate(&h, false);
    let node = h.node("node-a");
    let run = h.start(&node);
    let key = h.add_item(ItemKind::Bug).await;
    wait_file(&workdir(&h, &key).join("gate-started")).await;

    // The gates now run longer than finalize_grace_s while the finalizer heartbeats.
    for pass in 1..=3 {
        h.clock.advance(Duration::from_millis(1500));
        wait_lease_after_now(&h, &key).await;
        let report = node.reaper_pass().await.unwrap();
        assert_eq!(report.tier2_deferred, 1, "pass {pass}: {report:?}");
        assert_eq!(report.tier2_taken_over, 0);
    }
    assert_eq!(node.metrics().finalizer_defers_total, 3);

    std::fs::write(workdir(&h, &key).join("release"), "").unwrap();
    let item = h.wait_status(&key, ItemStatus::Done).await;
    assert_eq!(item.attempts["development"], 1, "no rollback happened");
    let events = h.events(&key).await;
    let kinds: Vec<String> = events.iter().map(|e| e.kind.clone()).collect();
    // Every pass is counted, but the log records the deferral once per job epoch
    // (an event per pass grew the log without bound while a slow gate ran).
    assert_eq!(count(&kinds, "reaper.deferred"), 1);
    assert_eq!(count(&kinds, "reaper.took_over"), 0);
    assert_eq!(count(&kinds, "item.rolled_back"), 0);
    let from_staging =
        events.iter().filter(|e| e.kind == "item.advanced" && e.from.as_deref() == Some("deploy-staging"));
    assert_eq!(from_staging.count(), 1, "exactly one transition out of deploy-staging");

    node.shutdown_token().cancel();
    run.await.unwrap();
    h.assert_audit_clean().await;
}

async fn kill_switch_off_takes_over_by_age_and_fences_the_first_finalizer(backend: Backend) {
    let reaper = FAST_REAPER.to_owned() + "finalizer_liveness_enabled = false\n";
    let h = Harness::with_reaper(backend, slow_gate_edge(), &reaper).await;
    install_slow_gate(&h, true);
    let node = h.node("node-a");
    let run = h.start(&node);
    let key = h.add_item(ItemKind::Bug).await;
    wait_file(&workdir(&h, &key).join("gate-started")).await;

    h.clock.advance(Duration::from_millis(1500));
    wait_lease_after_now(&h, &key).await; // the lease is live; the switch ignores it
    let report = node.reaper_pass().await.unwrap();
    assert_eq!(report.tier2_taken_over, 1, "{report:?}");
    assert_eq!(report.tier2_deferred, 0);

    // The takeover's gate run is fast: it finishes the item. The first finalizer
    // learns at its next heartbeat that its epoch is stale and stops.
    let item = h.wait_status(&key, ItemStatus::Done).await;
    assert_eq!(item.attempts["development"], 1);
    let staging = h.jobs(&key).await.into_iter().find(|j| j.stage.as_str() == "deploy-staging").unwrap();
    let events = h.events(&key).await;
    let fenced = wait_for("the first finalizer to be fenced out", || {
        let store = h.store.clone();
        let key = key.clone();
        async move {
            let ev = store.events_for_item(&key).await.unwrap();
            ev.into_iter().find(|e| e.kind == "job.fenced_out" && e.job == Some(staging.id))
        }
    })
    .await;
    assert_eq!(fenced.epoch, Some(staging.epoch - 1), "the stale epoch is the one fenced");
    let from_staging =
        events.iter().filter(|e| e.kind == "item.advanced" && e.from.as_deref() == Some("deploy-staging"));
    assert_eq!(from_staging.count(), 1, "never more than one transition");
    assert!(!events.iter().any(|e| e.kind == "item.rolled_back"));
    assert!(node.metrics().fenced_out_total >= 1);

    node.shutdown_token().cancel();
    run.await.unwrap();
    h.assert_audit_clean().await;
}

async fn dead_finalizer_is_taken_over_within_lease_ttl_plus_interval(backend: Backend) {
    let h = Harness::new(backend, slow_gate_edge()).await;
    install_slow_gate(&h, true);
    let a = CrashableNode::start(&h, "node-a");
    let key = h.add_item(ItemKind::Bug).await;
    let wd = workdir(&h, &key);
    wait_file(&wd.join("gate-started")).await;
    let gate_pid = read_pid(&wd.join("gate-pid")).await;
    a.crash();
    orch_engine::process::kill_group(gate_pid, Signal::SIGKILL); // it died with its machine

    let b = h.node("node-b");
    let run = h.start(&b);
    // Half a TTL later the lease still stands: nothing happens.
    h.clock.advance(Duration::from_millis(500));
    let early = b.reaper_pass().await.unwrap();
    assert_eq!(early, orch_engine::PassReport::default());
    // Past lease_ttl_s (and finalize_grace_s): the next pass takes over.
    h.clock.advance(Duration::from_millis(600));
    let report = b.reaper_pass().await.unwrap();
    assert_eq!(report.tier2_taken_over, 1, "{report:?}");

    let item = h.wait_status(&key, ItemStatus::Done).await;
    assert_eq!(item.attempts["development"], 1);
    let events = h.events(&key).await;
    let from_staging =
        events.iter().filter(|e| e.kind == "item.advanced" && e.from.as_deref() == Some("deploy-staging"));
    assert_eq!(from_staging.count(), 1);
    b.shutdown_token().cancel();
    run.await.unwrap();
    h.assert_audit_clean().await;
}

async fn tier1_dead_agent_owner_is_reaped_as_lost_and_retried(backend: Backend) {
    let h = Harness::new(backend, "").await;
    h.agent(
        "developer",
        &format!(
            "if [ -f first-run ]; then {PASS}; exit 0; fi\ntouch first-run\necho $$ > pid\nwhile :; do sleep 0.05; done"
        ),
    );
    let a = CrashableNode::start(&h, "node-a");
    let key = h.add_item(ItemKind::Bug).await;
    let pid = read_pid(&workdir(&h, &key).join("pid")).await;
    a.crash();
    orch_engine::process::kill_group(pid, Signal::SIGKILL);

    let b = h.node("node-b");
    h.clock.advance(Duration::from_millis(1100));
    let report = b.reaper_pass().await.unwrap();
    assert_eq!(report.tier1_reaped, 1, "{report:?}");
    let first = h.jobs(&key).await.into_iter().next().unwrap();
    assert_eq!(first.status, JobStatus::Failed);
    assert!(first.reason.as_deref().unwrap().contains("exit=lost"), "{:?}", first.reason);

    let run = h.start(&b);
    let item = h.wait_status(&key, ItemStatus::Done).await;
    assert_eq!(item.attempts["development"], 2);
    assert_eq!(b.metrics().reaped_tier1, 1);
    b.shutdown_token().cancel();
    run.await.unwrap();
    h.assert_audit_clean().await;
}

async fn tier3_backstop_kills_a_term_ignoring_group_and_fails_with_timeout(backend: Backend) {
    let reaper = "interval_s = 0.2\nfinalize_grace_s = 1\nmax_running_s = 30\nlease_ttl_s = 1\nheartbeat_s = 0.05\n";
    let h = Harness::with_reaper(backend, "", reaper).await;
    h.agent(
        "developer",
        &format!(
            "if [ -f leader ]; then {PASS}; exit 0; fi\n\
             trap '' TERM\n\
             sh -c 'echo $$ > grandchild; while :; do sleep 0.05; done' &\n\
             echo $$ > leader\n\
             while :; do sleep 0.05; done"
        ),
    );
    let node = h.node("node-a");
    let run = h.start(&node);
    let key = h.add_item(ItemKind::Bug).await;
    let wd = workdir(&h, &key);
    let leader = read_pid(&wd.join("leader")).await;
    let grandchild = read_pid(&wd.join("grandchild")).await;
    assert!(alive(leader) && alive(grandchild));

    h.clock.advance(Duration::from_secs(31));
    let report = node.reaper_pass().await.unwrap();
    assert_eq!(report.tier3_reaped, 1, "{report:?}");
    wait_for("the whole agent group to be gone", || async { (!alive(leader) && !alive(grandchild)).then_some(()) })
        .await;

    let first = h.jobs(&key).await.into_iter().next().unwrap();
    assert_eq!(first.status, JobStatus::Failed);
    assert!(first.reason.as_deref().unwrap().starts_with("timeout"), "{:?}", first.reason);
    h.wait_status(&key, ItemStatus::Done).await;
    assert_eq!(node.metrics().reaped_tier3, 1);
    node.shutdown_token().cancel();
    run.await.unwrap();
    h.assert_audit_clean().await;
}

async fn restart_kills_the_previous_incarnations_gate_and_finalizes_again(backend: Backend) {
    let h = Harness::new(backend, slow_gate_edge()).await;
    install_slow_gate(&h, true);
    let a = CrashableNode::start(&h, "node-a");
    let key = h.add_item(ItemKind::Bug).await;
    let wd = workdir(&h, &key);
    wait_file(&wd.join("gate-started")).await;
    let gate_pid = read_pid(&wd.join("gate-pid")).await;
    a.crash();
    assert!(alive(gate_pid), "a crashed node's gate survives it");

    let again = h.node("node-a");
    let run = h.start(&again);
    wait_for("the orphaned gate to be killed", || async move { (!alive(gate_pid)).then_some(()) }).await;
    h.wait_status(&key, ItemStatus::Done).await;
    let events = h.events(&key).await;
    assert!(events.iter().any(|e| e.kind == "reaper.took_over"), "the finishing job was taken over by reconcile");
    again.shutdown_token().cancel();
    run.await.unwrap();
    h.assert_audit_clean().await;
}

async fn restart_kills_an_agent_whose_job_was_cancelled_while_its_node_was_down(backend: Backend) {
    let h = Harness::new(backend, "").await;
    h.agent("developer", "echo $$ > pid\ntrap '' TERM\nwhile :; do sleep 0.05; done");
    let a = CrashableNode::start(&h, "node-a");
    let key = h.add_item(ItemKind::Bug).await;
    let pid = read_pid(&workdir(&h, &key).join("pid")).await;
    a.crash();
    orch_engine::ops::apply(h.store.as_ref(), &h.config, &key, orch_core::OperatorAction::Cancel, h.clock.now_ts())
        .await
        .unwrap();
    assert!(alive(pid));

    let again = h.node("node-a");
    let run = h.start(&again);
    wait_for("the cancelled job's agent to be killed", || async move { (!alive(pid)).then_some(()) }).await;
    assert_eq!(h.item(&key).await.status, ItemStatus::Cancelled);
    again.shutdown_token().cancel();
    run.await.unwrap();
    h.assert_audit_clean().await;
}

/// A node restarted on the same host right after a crash takes its id back at
/// once, even when the dead incarnation's last heartbeat is stamped a few ms after
/// the new one's `now`. On PostgreSQL each incarnation measures its own offset to
/// the store's clock, and the measurements differ by a few ms: with the clock
/// frozen the `restart_kills_*` scenarios met this about half the time and the
/// restarted node refused to start (`NodeIdInUse` naming its own dead self).
async fn restart_takes_its_id_back_even_if_the_dead_incarnation_was_seen_after_now(backend: Backend) {
    let h = Harness::new(backend, "").await;
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_owned()).unwrap();
    let dead = orch_store::NodeRegistration {
        id: "node-a".into(),
        incarnation: "crashed".into(),
        host,
        // This very process: provably not running another node.
        pid: i32::try_from(std::process::id()).unwrap(),
        data_dir: "data".into(),
    };
    let seen_ahead = h.clock.now_ts().add(Duration::from_millis(5));
    h.store.register_node(dead, seen_ahead, Duration::from_secs(1)).await.unwrap();

    let again = h.node("node-a");
    let run = h.start(&again);
    let row = wait_for("node-a to be registered by its new incarnation", || {
        let store = h.store.clone();
        async move { store.nodes().await.unwrap().into_iter().find(|n| n.id == "node-a" && n.incarnation != "crashed") }
    })
    .await;
    assert!(row.stopped_at.is_none(), "{row:?}");
    again.shutdown_token().cancel();
    run.await.unwrap();
}

/// Two nodes on one store: while node-a lives and heartbeats through a slow
/// gate, node-b's reaper defers to it; once node-a dies mid-gates and its lease
/// lapses, node-b takes the finalization over, once.
async fn second_node_defers_to_a_live_finalizer_and_takes_over_a_dead_one(backend: Backend) {
    let h = Harness::new(backend, slow_gate_edge()).await;
    install_slow_gate(&h, true);
    let a = CrashableNode::start(&h, "node-a");
    let key = h.add_item(ItemKind::Bug).await;
    let wd = workdir(&h, &key);
    wait_file(&wd.join("gate-started")).await;

    // While node-a lives and heartbeats, node-b's reaper defers.
    let b = h.node("node-b");
    h.clock.advance(Duration::from_millis(1500));
    wait_lease_after_now(&h, &key).await;
    let report = b.reaper_pass().await.unwrap();
    assert_eq!((report.tier2_deferred, report.tier2_taken_over), (1, 0), "{report:?}");

    // node-a dies mid-gates; once its lease lapses node-b takes over, once.
    let gate_pid = read_pid(&wd.join("gate-pid")).await;
    a.crash();
    orch_engine::process::kill_group(gate_pid, Signal::SIGKILL);
    let run = h.start(&b);
    h.clock.advance(Duration::from_millis(1100));
    let report = b.reaper_pass().await.unwrap();
    assert_eq!(report.tier2_taken_over, 1, "{report:?}");
    h.wait_status(&key, ItemStatus::Done).await;
    let events = h.events(&key).await;
    assert_eq!(
        events.iter().filter(|e| e.kind == "item.advanced" && e.from.as_deref() == Some("deploy-staging")).count(),
        1
    );
    b.shutdown_token().cancel();
    run.await.unwrap();
    h.assert_audit_clean().await;
}

/// A job started by the one-write hand-off, not by a scheduler claim, is
/// recovered like any other when its node dies: `development` passes on node-a,
/// whose commit claims `testing` for node-a (running at epoch 1 from the
/// commit's own instant, so the development job's end, the testing job's queueing
/// and its start are one timestamp), and node-a dies while the tester runs.
/// node-b's Tier-1 takes the job over once its lease lapses, fails it as lost,
/// and the retried stage completes the item.
async fn a_job_claimed_by_a_hand_off_is_recovered_when_its_node_dies(backend: Backend) {
    let h = Harness::new(backend, "").await;
    let (ran, pid_file) = (h.path().join("tester-ran"), h.path().join("tester.pid"));
    h.agent(
        "tester",
        &format!(
            "if [ -f '{ran}' ]; then {PASS}; exit 0; fi\ntouch '{ran}'\necho $$ > '{pid}'\nwhile :; do sleep 0.05; done",
            ran = ran.display(),
            pid = pid_file.display()
        ),
    );
    let a = CrashableNode::start(&h, "node-a");
    let key = h.add_item(ItemKind::Bug).await;
    let pid = read_pid(&pid_file).await;
    let testing = h
        .wait_job(&key, "the testing job running with its agent recorded", |j| {
            j.stage.as_str() == "testing" && j.status == JobStatus::Running && j.pid.is_some()
        })
        .await;
    assert_eq!(testing.pid, Some(pid), "the recorded agent is the tester that wrote its pid");
    let jobs = h.jobs(&key).await;
    let development = jobs.iter().find(|j| j.stage.as_str() == "development").unwrap();
    assert_eq!(development.status, JobStatus::Done);
    // Claimed by the hand-off: owned by the node that ended development, at epoch
    // 1, queued and started at the instant development ended (one write, no claim).
    assert_eq!((testing.owner.as_deref(), testing.epoch, testing.attempt), (Some("node-a"), 1, 1));
    assert_eq!(testing.started_at, Some(testing.queued_at), "{testing:?}");
    assert_eq!(development.finished_at, Some(testing.queued_at), "{development:?} then {testing:?}");
    // The run's end, the transition and the next job's queueing: one write.
    let events = h.events(&key).await;
    let at = events.iter().position(|e| e.kind == "job.finished" && e.job == Some(development.id)).unwrap();
    let written: Vec<_> = events[at..at + 3].iter().map(|e| (e.kind.as_str(), e.job, e.at)).collect();
    assert_eq!(
        written,
        [
            ("job.finished", Some(development.id), testing.queued_at),
            ("item.advanced", Some(development.id), testing.queued_at),
            ("job.queued", Some(testing.id), testing.queued_at),
        ]
    );

    a.crash();
    assert!(alive(pid), "a crashed node's agent survives it");
    orch_engine::process::kill_group(pid, Signal::SIGKILL); // it died with its machine
    wait_for("the tester to be gone", || async move { (!alive(pid)).then_some(()) }).await;

    let b = h.node("node-b");
    // Within the lease the hand-off stamped (and the dead node's last renewal),
    // nothing happens.
    h.clock.advance(Duration::from_millis(500));
    assert_eq!(b.reaper_pass().await.unwrap(), orch_engine::PassReport::default());
    h.clock.advance(Duration::from_millis(600));
    let report = b.reaper_pass().await.unwrap();
    assert_eq!(report.tier1_reaped, 1, "{report:?}");
    let lost = h.jobs(&key).await.into_iter().find(|j| j.id == testing.id).unwrap();
    assert_eq!((lost.status, lost.epoch, lost.owner.as_deref()), (JobStatus::Failed, 2, Some("node-b")));
    assert!(lost.reason.as_deref().unwrap().contains("exit=lost"), "{:?}", lost.reason);
    let took_over = h.events(&key).await.into_iter().find(|e| e.kind == "reaper.took_over").expect("a takeover");
    assert_eq!((took_over.job, took_over.epoch), (Some(testing.id), Some(2)));

    let run = h.start(&b);
    let item = h.wait_status(&key, ItemStatus::Done).await;
    assert_eq!(item.attempts["development"], 1);
    assert_eq!(item.attempts["testing"], 2, "the lost run is retried in place");
    let retried = h.jobs(&key).await.into_iter().find(|j| j.stage.as_str() == "testing" && j.attempt == 2).unwrap();
    assert_eq!((retried.status, retried.owner.as_deref()), (JobStatus::Done, Some("node-b")));
    let kinds = h.kinds(&key).await;
    assert_eq!(count(&kinds, "reaper.took_over"), 1);
    assert_eq!(count(&kinds, "job.fenced_out"), 0, "the dead owner never came back");
    assert_eq!(b.metrics().reaped_tier1, 1);
    b.shutdown_token().cancel();
    run.await.unwrap();
    h.assert_audit_clean().await;
}

/// A hand-off commit (the run's end, the transition and the claim of the next
/// job, in one write) sent under an epoch another node has taken over writes
/// nothing. To get there with real processes the owner's agent must exit after
/// the takeover but before the owner hears of it. With the harness's 50 ms
/// heartbeat the owner would learn within a beat and kill its agent (fenced at
/// step `agent`, never reaching the commit), so node-a runs with `lease_ttl_s =
/// 120`, `heartbeat_s = 50`: the window between a takeover and the owner's next
/// renewal, which every deployment has, widened so the agent's exit lands in it
/// every time, as a paused or partitioned owner's would. node-a runs one job at a
/// time, so while its stale agent runs it claims nothing else. The clock then
/// moves past node-a's lease, node-b's Tier-1 takes the development job over and
/// retries it, and node-b runs the item to `done`. Only then is node-a's agent
/// let go: its commit must come back fenced out, recorded as `job.fenced_out` at
/// step `commit` for epoch 1, and leave every job row and every other event as it
/// was (no `testing` job for node-a, no `job.finished` of epoch 1).
///
/// By then the job row is `failed` at epoch 2 and the item has moved on, so the
/// store must report the stale job (fenced out) before it looks at the item's
/// version: were it to answer `Conflict`, node-a would stop itself for an
/// integrity breach and never record `job.fenced_out`. The sharper case, a job
/// still running under the newer epoch with the item untouched, is the store's
/// conformance spec `fenced_or_conflicting_handoff_writes_nothing`.
async fn a_hand_off_whose_owner_was_fenced_writes_nothing(backend: Backend) {
    let reaper = "interval_s = 0.2\nfinalize_grace_s = 1\nmax_running_s = 600\nlease_ttl_s = 1\nheartbeat_s = 0.05\n";
    let h = Harness::with_reaper(backend, "", reaper).await;
    let (ran, pid_file, release) = (h.path().join("dev-ran"), h.path().join("dev.pid"), h.path().join("release"));
    h.agent(
        "developer",
        &format!(
            "if [ -f '{ran}' ]; then {PASS}; exit 0; fi\ntouch '{ran}'\necho $$ > '{pid}'\n\
             while [ ! -f '{release}' ]; do sleep 0.05; done\n{PASS}",
            ran = ran.display(),
            pid = pid_file.display(),
            release = release.display()
        ),
    );
    let mut slow = (*h.config).clone();
    slow.reaper.lease_ttl_s = 120.0;
    slow.reaper.heartbeat_s = 50.0;
    slow.node.max_concurrent_jobs = std::num::NonZeroU32::MIN;
    let a = orch_engine::Node::new(
        h.store.clone(),
        std::sync::Arc::new(slow),
        std::sync::Arc::new(h.clock.clone()),
        h.node_opts("node-a"),
    );
    let run_a = h.start(&a);
    let key = h.add_item(ItemKind::Bug).await;
    let pid = read_pid(&pid_file).await;
    let stale = h
        .wait_job(&key, "development running on node-a", |j| {
            j.stage.as_str() == "development" && j.status == JobStatus::Running && j.pid.is_some()
        })
        .await;
    assert_eq!((stale.owner.as_deref(), stale.epoch, stale.pid), (Some("node-a"), 1, Some(pid)));

    // Past node-a's 120 s lease (within max_running_s): node-b takes the job over.
    let mut opts = h.node_opts("node-b");
    opts.data_dir = h.path().join("data-b"); // another machine
    let b = orch_engine::Node::new(h.store.clone(), h.config.clone(), std::sync::Arc::new(h.clock.clone()), opts);
    h.clock.advance(Duration::from_secs(121));
    let report = b.reaper_pass().await.unwrap();
    assert_eq!(report.tier1_reaped, 1, "{report:?}");
    assert!(alive(pid), "node-a has not heard of the takeover: its agent still runs");

    let run_b = h.start(&b);
    let item = h.wait_status(&key, ItemStatus::Done).await;
    assert_eq!(item.attempts["development"], 2);
    let jobs_before = h.jobs(&key).await;
    let events_before = h.events(&key).await;
    assert!(
        jobs_before.iter().all(|j| j.owner.as_deref() == Some("node-b")),
        "node-b took over or ran every job: {jobs_before:#?}"
    );
    assert_eq!(a.metrics().fenced_out_total, 0);

    std::fs::write(&release, "").unwrap();
    let fenced = wait_for("node-a's hand-off commit to be fenced out", || {
        let store = h.store.clone();
        let key = key.clone();
        async move {
            let events = store.events_for_item(&key).await.unwrap();
            events.into_iter().find(|e| e.kind == "job.fenced_out" && e.job == Some(stale.id))
        }
    })
    .await;
    assert_eq!(fenced.epoch, Some(1), "{fenced:?}");
    assert_eq!(fenced.data["node"], "node-a", "{fenced:?}");
    assert_eq!(fenced.data["step"], "commit", "fenced at the hand-off's write, not before it: {fenced:?}");
    wait_for("node-a to be done with the job", || async { (a.metrics().finalizer_owned == 0).then_some(()) }).await;
    assert!(!alive(pid), "the stale agent exited by itself");

    // The fenced write left nothing: no job row changed or added, and the log
    // gained the fenced-out notice alone.
    let jobs_after = h.jobs(&key).await;
    assert_eq!(jobs_after, jobs_before, "node-a's fenced commit changed the jobs");
    assert_eq!(jobs_after.iter().filter(|j| j.stage.as_str() == "testing").count(), 1);
    let events_after = h.events(&key).await;
    let added: Vec<&str> = events_after[events_before.len()..].iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(added, ["job.fenced_out"], "{events_after:#?}");
    assert!(
        !events_after.iter().any(|e| e.job == Some(stale.id) && e.epoch == Some(1) && e.kind == "job.finished"),
        "the stale run's end was recorded"
    );
    assert_eq!(h.item(&key).await.version, item.version, "the item did not move");
    let m = a.metrics();
    assert_eq!((m.fenced_out_total, m.handoff_claims_total), (1, 0), "{m:?}");

    a.shutdown_token().cancel();
    b.shutdown_token().cancel();
    run_a.await.unwrap();
    run_b.await.unwrap();
    h.assert_audit_clean().await;
}

backend_tests!(
    orch_incident_reaper_defers_to_a_live_finalizer,
    kill_switch_off_takes_over_by_age_and_fences_the_first_finalizer,
    dead_finalizer_is_taken_over_within_lease_ttl_plus_interval,
    tier1_dead_agent_owner_is_reaped_as_lost_and_retried,
    tier3_backstop_kills_a_term_ignoring_group_and_fails_with_timeout,
    restart_kills_the_previous_incarnations_gate_and_finalizes_again,
    restart_kills_an_agent_whose_job_was_cancelled_while_its_node_was_down,
    restart_takes_its_id_back_even_if_the_dead_incarnation_was_seen_after_now,
    second_node_defers_to_a_live_finalizer_and_takes_over_a_dead_one,
    a_job_claimed_by_a_hand_off_is_recovered_when_its_node_dies,
    a_hand_off_whose_owner_was_fenced_writes_nothing,
);
