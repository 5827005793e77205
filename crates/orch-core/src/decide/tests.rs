//! Unit and property tests of `decide` over a config shaped like the defaults:
//! `quick` and `full-cycle`, one gated edge with a rollback target, one approval edge.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::path::PathBuf;

use proptest::prelude::*;

use super::*;
use crate::config::*;
use crate::key::KeyPrefix;
use crate::model::ItemKind;
use crate::names::{GateName, RoleName};

fn names<T: From<&'static str>>(xs: &[&'static str]) -> Vec<T> {
    xs.iter().map(|x| T::from(*x)).collect()
}

fn config() -> Config {
    let mut tracks = BTreeMap::new();
    tracks.insert(
        TrackName::from("quick"),
        TrackConfig { stages: names(&["development", "testing", "deploy"]), budget: Default::default() },
    );
    tracks.insert(
        TrackName::full_cycle(),
        TrackConfig { stages: names(&["analysis", "development", "testing", "deploy"]), budget: Default::default() },
    );
    let mut stages = BTreeMap::new();
    for (s, role, max) in [
        ("analysis", "analyst", 2),
        ("development", "developer", 3),
        ("testing", "tester", 2),
        ("deploy", "deployer", 2),
    ] {
        stages.insert(
            StageName::from(s),
            StageConfig { role: RoleName::from(role), max_attempts: NonZeroU32::new(max).expect("positive") },
        );
    }
    let agent = AgentConfig {
        adapter: AdapterKind::Command,
        command: vec!["true".into()],
        timeout_s: 10.0,
        verdict: VerdictSource::File,
        cli: Default::default(),
    };
    let agents =
        ["analyst", "developer", "tester", "deployer"].iter().map(|r| (RoleName::from(*r), agent.clone())).collect();
    let mut gates = BTreeMap::new();
    gates.insert(
        GateName::from("retest"),
        GateConfig { command: vec!["true".into()], timeout_s: 5.0, metric: None, on: crate::config::GateTree::Branch },
    );
    Config {
        source: PathBuf::from("orch.toml"),
        server: ServerConfig { listen: "127.0.0.1:7700".into(), auth_reads: false },
        store: StoreConfig { url: "sqlite://.orch/orch.db".into() },
        node: NodeConfig {
            id: String::new(),
            max_concurrent_jobs: NonZeroU32::MIN,
            data_dir: ".orch".into(),
            isolation: crate::config::Isolation::Auto,
        },
        reaper: ReaperConfig::default(),
        repos: vec![RepoConfig {
            name: "shop".into(),
            key: KeyPrefix::new("SHOP").expect("valid"),
            path: ".".into(),
            url: None,
            author_name: "orch".into(),
            author_email: "orch@localhost".into(),
            forge: ForgeKind::Local,
            main_branch: "main".into(),
            tracks: [(ItemKind::Bug, TrackName::from("quick"))].into_iter().collect(),
            budget: Default::default(),
            prompts: None,
        }],
        agents,
        tracks,
        stages,
        edges: vec![
            EdgeConfig {
                from: "testing".into(),
                to: EdgeTarget::Stage("deploy".into()),
                gates: vec!["retest".into()],
                on_fail: Some("development".into()),
                approval: false,
            },
            EdgeConfig { from: "deploy".into(), to: EdgeTarget::Done, gates: vec![], on_fail: None, approval: true },
        ],
        gates,
    }
}

fn running(track: &str, stage: &str) -> ItemState {
    let mut s = ItemState::new(TrackName::from(track), StageName::from(stage));
    s.status = ItemStatus::Running;
    s
}

fn job(stage: &str, result: StageResult) -> Outcome {
    Outcome::Job(JobOutcome { stage: stage.into(), result, escalate: false })
}

fn rejected() -> StageResult {
    StageResult::Rejected { reason: "gate retest failed".into() }
}

#[test]
fn pass_advances_and_queues_the_next_stage() {
    let t = decide(&running("quick", "development"), &config(), &job("development", StageResult::Passed)).unwrap();
    assert_eq!(t.decision, Decision::Advanced { from: "development".into(), to: "testing".into() });
    assert_eq!(t.next.stage.as_str(), "testing");
    assert_eq!(t.next.status, ItemStatus::Queued);
    assert_eq!(t.next.version, 2);
    assert_eq!(t.enqueue, Some(("testing".into(), 1)));
}

#[test]
fn rejected_rolls_back_to_on_fail_and_counts_the_attempt() {
    let mut s = running("quick", "testing");
    s.attempts.insert("development".into(), 1);
    let t = decide(&s, &config(), &job("testing", rejected())).unwrap();
    assert!(matches!(t.decision, Decision::RolledBack { ref to, .. } if to.as_str() == "development"));
    assert_eq!(t.enqueue, Some(("development".into(), 2)));
    assert_eq!(t.next.attempts_at(&"development".into()), 2);
}

#[test]
fn rejected_without_an_edge_retries_the_same_stage() {
    let t = decide(&running("quick", "development"), &config(), &job("development", rejected())).unwrap();
    assert_eq!(t.enqueue, Some(("development".into(), 2)));
}

#[test]
fn exhausted_attempts_block_with_the_reason() {
    let mut s = running("quick", "testing");
    s.attempts.insert("development".into(), 3);
    let t = decide(&s, &config(), &job("testing", rejected())).unwrap();
    match t.decision {
        Decision::Blocked { stage, reason } => {
            assert_eq!(stage.as_str(), "development");
            assert!(reason.contains("all 3 of its attempts"), "{reason}");
            assert!(reason.contains("gate retest failed"), "{reason}");
        }
        other => panic!("expected Blocked, got {other:?}"),
    }
    assert_eq!(t.next.status, ItemStatus::Blocked);
    assert_eq!(t.enqueue, None);
}

#[test]
fn errored_retries_the_stage_itself() {
    let mut s = running("quick", "testing");
    s.attempts.insert("development".into(), 1);
    let t = decide(&s, &config(), &job("testing", StageResult::Errored { reason: "exit=lost".into() })).unwrap();
    assert_eq!(t.enqueue, Some(("testing".into(), 2)));
}

#[test]
fn approval_edge_waits_then_approve_finishes() {
    let cfg = config();
    let t = decide(&running("quick", "deploy"), &cfg, &job("deploy", StageResult::Passed)).unwrap();
    assert_eq!(t.next.status, ItemStatus::WaitingApproval);
    assert_eq!(t.enqueue, None);
    let t2 = decide(&t.next, &cfg, &Outcome::Operator(OperatorAction::Approve)).unwrap();
    assert_eq!(t2.next.status, ItemStatus::Done);
    assert_eq!(t2.decision, Decision::Approved { from: "deploy".into(), to: EdgeTarget::Done });
}

#[test]
fn approve_into_an_exhausted_stage_reports_the_block() {
    let mut cfg = config();
    cfg.edges[0].approval = true; // testing -> deploy needs approval
    let mut s = running("quick", "testing");
    s.attempts.insert("deploy".into(), 2);
    let waiting = decide(&s, &cfg, &job("testing", StageResult::Passed)).unwrap();
    assert_eq!(waiting.next.status, ItemStatus::WaitingApproval);
    let t = decide(&waiting.next, &cfg, &Outcome::Operator(OperatorAction::Approve)).unwrap();
    assert!(
        matches!(t.decision, Decision::Blocked { ref reason, .. } if reason.contains("attempts")),
        "{:?}",
        t.decision
    );
    assert_eq!(t.next.status, ItemStatus::Blocked);
}

#[test]
fn verdict_escalate_moves_to_full_cycle_first_stage() {
    let out = Outcome::Job(JobOutcome { stage: "development".into(), result: StageResult::Passed, escalate: true });
    let t = decide(&running("quick", "development"), &config(), &out).unwrap();
    assert_eq!(t.next.track, TrackName::full_cycle());
    assert_eq!(t.next.stage.as_str(), "analysis");
    assert_eq!(t.enqueue, Some(("analysis".into(), 1)));
    let again = decide(&t.next, &config(), &Outcome::Operator(OperatorAction::Escalate));
    assert_eq!(again, Err(DecideError::AlreadyEscalated(TrackName::full_cycle())));
}

#[test]
fn needs_human_blocks_and_retry_gives_fresh_attempts() {
    let cfg = config();
    let t = decide(
        &running("quick", "development"),
        &cfg,
        &job("development", StageResult::NeedsHuman { reason: "needs credentials".into() }),
    )
    .unwrap();
    assert_eq!(t.next.status, ItemStatus::Blocked);
    let r = decide(&t.next, &cfg, &Outcome::Operator(OperatorAction::Retry)).unwrap();
    assert_eq!(r.enqueue, Some(("development".into(), 1)));
    assert_eq!(r.next.status, ItemStatus::Queued);
}

#[test]
fn a_merge_conflict_goes_back_to_development_with_its_paths() {
    let cfg = config();
    let t = decide(
        &running("quick", "deploy"),
        &cfg,
        &job("deploy", StageResult::Conflict { reason: "merge conflict with main: src/a.rs".into() }),
    )
    .unwrap();
    assert_eq!(t.enqueue.as_ref().map(|(s, _)| s.as_str()), Some("development"));
    let Decision::RolledBack { from, to, reason } = &t.decision else { panic!("{:?}", t.decision) };
    assert_eq!((from.as_str(), to.as_str()), ("deploy", "development"));
    assert!(reason.starts_with(crate::decide::MERGE_CONFLICT) && reason.contains("src/a.rs"), "{reason}");
}

#[test]
fn refusals_change_nothing() {
    let cfg = config();
    let s = running("quick", "development");
    assert!(matches!(decide(&s, &cfg, &job("testing", StageResult::Passed)), Err(DecideError::StageMismatch { .. })));
    assert!(matches!(
        decide(&s, &cfg, &Outcome::Operator(OperatorAction::Approve)),
        Err(DecideError::NotAllowed { action: "approve", .. })
    ));
    assert!(matches!(
        decide(&s, &cfg, &Outcome::Operator(OperatorAction::Retry)),
        Err(DecideError::NotAllowed { action: "retry", .. })
    ));
    let mut queued = s.clone();
    queued.status = ItemStatus::Queued;
    assert!(matches!(
        decide(&queued, &cfg, &job("development", StageResult::Passed)),
        Err(DecideError::NotAllowed { .. })
    ));
}

// ---- properties -------------------------------------------------------------

/// One step a random history may take. `Claim` stands for the store marking the
/// item running when a node claims its queued job.
#[derive(Clone, Debug)]
enum Step {
    Claim,
    Job { result: u8, escalate: bool, wrong_stage: bool },
    Op(OperatorAction),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => Just(Step::Claim),
        8 => (0u8..5, prop::bool::weighted(0.1), prop::bool::weighted(0.05))
            .prop_map(|(result, escalate, wrong_stage)| Step::Job { result, escalate, wrong_stage }),
        1 => prop_oneof![
            Just(OperatorAction::Retry),
            Just(OperatorAction::Cancel),
            Just(OperatorAction::Escalate),
            Just(OperatorAction::Approve)
        ]
        .prop_map(Step::Op),
    ]
}

fn outcome_for(state: &ItemState, step: &Step) -> Option<Outcome> {
    match step {
        Step::Claim => None,
        Step::Job { result, escalate, wrong_stage } => {
            let result = match result {
                0 => StageResult::Passed,
                1 => rejected(),
                2 => StageResult::Errored { reason: "exit 1".into() },
                3 => StageResult::Conflict { reason: "merge conflict with main: a.txt".into() },
                _ => StageResult::NeedsHuman { reason: "stuck".into() },
            };
            let stage = if *wrong_stage { StageName::from("nowhere") } else { state.stage.clone() };
            Some(Outcome::Job(JobOutcome { stage, result, escalate: *escalate }))
        }
        Step::Op(a) => Some(Outcome::Operator(*a)),
    }
}

/// Checks one applied transition against the graph: the I1 walk rules, the version
/// rule, attempt bounds and the enqueue/status pairing.
fn check_transition(cfg: &Config, before: &ItemState, t: &Transition) {
    let next = &t.next;
    assert_eq!(next.version, before.version + 1);
    for (stage, used) in &next.attempts {
        assert!(*used <= cfg.max_attempts(stage), "{stage} used {used} > max");
    }
    match &t.enqueue {
        Some((stage, attempt)) => {
            assert_eq!(next.status, ItemStatus::Queued);
            assert_eq!(stage, &next.stage);
            assert_eq!(*attempt, next.attempts_at(stage));
        }
        None => assert_ne!(next.status, ItemStatus::Queued),
    }
    let stages = &cfg.tracks[&next.track].stages;
    assert!(stages.contains(&next.stage), "stage {} not on track {}", next.stage, next.track);
    match &t.decision {
        Decision::Advanced { from, to } => {
            assert_eq!(cfg.next_after(&before.track, from), Some(EdgeTarget::Stage(to.clone())));
        }
        Decision::Approved { from, to } => {
            assert_eq!(before.status, ItemStatus::WaitingApproval);
            assert_eq!(cfg.next_after(&before.track, from).as_ref(), Some(to));
        }
        Decision::Done { from } | Decision::AwaitingApproval { from, .. } => {
            assert_eq!(from, &before.stage);
        }
        Decision::RolledBack { from, to, reason } => {
            let exit = cfg.exit(&before.track, from).expect("stage on track");
            let allowed = exit.edge.and_then(|e| e.on_fail.clone());
            let conflict =
                reason.starts_with(crate::decide::MERGE_CONFLICT) && Some(to) == cfg.development_stage(&before.track);
            assert!(to == from || Some(to) == allowed.as_ref() || conflict, "rollback {from} -> {to} not allowed");
            let pos = |s: &StageName| stages.iter().position(|x| x == s);
            assert!(pos(to) <= pos(from));
        }
        Decision::Escalated { to, .. } => {
            assert_eq!(next.track, TrackName::full_cycle());
            assert_eq!(Some(to), cfg.first_stage(&next.track));
        }
        Decision::Retried { stage } => assert_eq!(before.status, ItemStatus::Blocked, "{stage}"),
        Decision::Blocked { .. } => assert_eq!(next.status, ItemStatus::Blocked),
        Decision::Cancelled { .. } => assert_eq!(next.status, ItemStatus::Cancelled),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn any_history_is_a_valid_walk(steps in prop::collection::vec(step(), 1..80)) {
        let cfg = config();
        let mut state = ItemState::new("quick".into(), "development".into());
        for s in &steps {
            let before = state.clone();
            let Some(outcome) = outcome_for(&state, s) else {
                if state.status == ItemStatus::Queued {
                    state.status = ItemStatus::Running;
                }
                continue;
            };
            match decide(&state, &cfg, &outcome) {
                Ok(t) => {
                    prop_assert!(!before.status.is_terminal());
                    check_transition(&cfg, &before, &t);
                    state = t.next;
                }
                Err(err) => {
                    // A refused outcome leaves the state exactly as it was.
                    prop_assert_eq!(&state, &before, "{}", err);
                    if before.status.is_terminal() {
                        prop_assert_eq!(err, DecideError::Terminal(before.status));
                    }
                }
            }
        }
    }

    #[test]
    fn terminal_states_absorb_everything(
        done in prop::bool::ANY,
        steps in prop::collection::vec(step(), 1..30),
    ) {
        let cfg = config();
        let mut state = running("quick", "testing");
        state.status = if done { ItemStatus::Done } else { ItemStatus::Cancelled };
        for s in &steps {
            if let Some(outcome) = outcome_for(&state, s) {
                prop_assert_eq!(decide(&state, &cfg, &outcome), Err(DecideError::Terminal(state.status)));
            }
        }
    }
}
