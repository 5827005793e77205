//! The transition function: given an item's state, the validated config (its
//! track graph) and what just happened, say what happens next.
//!
//! It is pure and total over its inputs: the engine gathers the facts (agent exit,
//! verdict, gate results, operator action), calls `decide`, and commits the returned
//! `Transition` fenced by the item's version and the job's epoch. Keeping the rules
//! here, away from processes and SQL, is what lets property tests show that every
//! sequence of outcomes is a valid walk of the graph (I1) and that attempts never
//! exceed `max_attempts`.

use crate::config::{Config, EdgeTarget};
use crate::model::{ItemState, ItemStatus};
use crate::names::{StageName, TrackName};

/// What happened that may move an item.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// The item's current job ended and was finalized.
    Job(JobOutcome),
    /// A human (CLI or API) acted on the item.
    Operator(OperatorAction),
}

/// The finalized result of one job.
#[derive(Clone, Debug, PartialEq)]
pub struct JobOutcome {
    /// The stage the job ran; must be the item's current stage.
    pub stage: StageName,
    pub result: StageResult,
    /// The verdict asked to move the item to the `full-cycle` track.
    pub escalate: bool,
}

/// The judgement on a finished job.
#[derive(Clone, Debug, PartialEq)]
pub enum StageResult {
    /// Verdict `pass` and every gate on the outgoing edge passed.
    Passed,
    /// The work was judged inadequate (verdict `fail` or a gate failed): roll back
    /// to the edge's `on_fail` (or retry the stage when there is no edge).
    Rejected { reason: String },
    /// The run itself broke (agent crashed, lost, timed out, bad or missing
    /// verdict): retry the same stage.
    Errored { reason: String },
    /// Verdict `blocked`: the agent needs a human.
    NeedsHuman { reason: String },
    /// The work passed but cannot land: it conflicts with main. Back to the
    /// track's development stage (or this stage if it has none); the reason starts
    /// with [`MERGE_CONFLICT`] so the audit can tell this rollback from others.
    Conflict { reason: String },
}

/// How the reason of a rollback for a merge conflict starts.
pub const MERGE_CONFLICT: &str = "merge conflict";

/// What an operator can ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OperatorAction {
    /// Run the current stage again (a blocked item gets a fresh set of attempts).
    Retry,
    /// Stop the item for good.
    Cancel,
    /// Move the item to the `full-cycle` track.
    Escalate,
    /// Let an item waiting at an `approval = true` edge through.
    Approve,
}

impl OperatorAction {
    /// The verb as the CLI and API spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            OperatorAction::Retry => "retry",
            OperatorAction::Cancel => "cancel",
            OperatorAction::Escalate => "escalate",
            OperatorAction::Approve => "approve",
        }
    }
}

/// What the transition does, for events and logs.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// Moved along an edge to the next stage.
    Advanced { from: StageName, to: StageName },
    /// The edge's gates passed and it needs a human's approval first.
    AwaitingApproval { from: StageName, to: EdgeTarget },
    /// An operator approved; the item moves on (to a stage or to done).
    Approved { from: StageName, to: EdgeTarget },
    /// Passed the last stage.
    Done { from: StageName },
    /// Failed and sent back to an earlier stage (or the same one).
    RolledBack { from: StageName, to: StageName, reason: String },
    /// The operator asked to run the current stage again.
    Retried { stage: StageName },
    /// Stopped for a human: attempts exhausted or the agent said `blocked`.
    Blocked { stage: StageName, reason: String },
    /// Moved to the `full-cycle` track's first stage.
    Escalated { from_track: TrackName, from: StageName, to: StageName },
    /// Stopped for good by an operator.
    Cancelled { stage: StageName },
}

/// The decision, the item's next state, and the job to queue (at `next.stage`,
/// attempt `next.attempts[next.stage]`) if any.
#[derive(Clone, Debug, PartialEq)]
pub struct Transition {
    pub decision: Decision,
    pub next: ItemState,
    pub enqueue: Option<(StageName, u32)>,
}

/// Why an outcome cannot be applied. None of these change anything.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecideError {
    #[error("item is {0} and takes no further transitions")]
    Terminal(ItemStatus),
    #[error("cannot {action} an item that is {status}")]
    NotAllowed { action: &'static str, status: ItemStatus },
    #[error("job for stage {job_stage} does not match the item's stage {item_stage}")]
    StageMismatch { job_stage: StageName, item_stage: StageName },
    #[error("item is already on the {0} track")]
    AlreadyEscalated(TrackName),
    #[error("the config has no track {0}")]
    UnknownTrack(TrackName),
    #[error("track {track} has no stage {stage}")]
    UnknownStage { track: TrackName, stage: StageName },
}

/// Applies `outcome` to `state` under `config`'s track graph.
///
/// # Errors
/// A `DecideError` when the outcome does not apply to the item as it stands (it is
/// terminal, the job is for another stage, the action does not fit the status).
pub fn decide(state: &ItemState, config: &Config, outcome: &Outcome) -> Result<Transition, DecideError> {
    if state.status.is_terminal() {
        return Err(DecideError::Terminal(state.status));
    }
    let exit = config
        .exit(&state.track, &state.stage)
        .ok_or_else(|| DecideError::UnknownStage { track: state.track.clone(), stage: state.stage.clone() })?;
    let transition = match outcome {
        Outcome::Job(job) => {
            if state.status != ItemStatus::Running {
                return Err(DecideError::NotAllowed { action: "finish a job of", status: state.status });
            }
            if job.stage != state.stage {
                return Err(DecideError::StageMismatch {
                    job_stage: job.stage.clone(),
                    item_stage: state.stage.clone(),
                });
            }
            if job.escalate && state.track != TrackName::full_cycle() {
                escalate(state, config)?
            } else {
                match &job.result {
                    StageResult::Passed => pass(state, config, exit.to, exit.edge.is_some_and(|e| e.approval)),
                    StageResult::Rejected { reason } => {
                        let target = exit.edge.and_then(|e| e.on_fail.clone()).unwrap_or_else(|| state.stage.clone());
                        rollback(state, config, target, reason)
                    }
                    StageResult::Errored { reason } => rollback(state, config, state.stage.clone(), reason),
                    StageResult::NeedsHuman { reason } => block(state, reason.clone()),
                    StageResult::Conflict { reason } => {
                        // Back, never forwards: from a stage before development
                        // (there is no merge there, but stay total) the stage retries.
                        let stages = config.tracks.get(&state.track).map(|t| t.stages.as_slice()).unwrap_or(&[]);
                        let pos = |s: &StageName| stages.iter().position(|x| x == s);
                        let target = config
                            .development_stage(&state.track)
                            .filter(|d| pos(d) <= pos(&state.stage))
                            .unwrap_or(&state.stage)
                            .clone();
                        let reason = if reason.starts_with(MERGE_CONFLICT) {
                            reason.clone()
                        } else {
                            format!("{MERGE_CONFLICT}: {reason}")
                        };
                        rollback(state, config, target, &reason)
                    }
                }
            }
        }
        Outcome::Operator(action) => operator(state, config, *action, exit.to)?,
    };
    assert_postconditions(state, config, &transition);
    Ok(transition)
}

/// What every transition must satisfy, checked on every call (not only in debug
/// builds): a transition that breaks one would be committed and then replayed by
/// every reader of the log, so the process stops instead (restart and reconcile
/// are safe; carrying on is not). The property tests drive the same checks.
fn assert_postconditions(state: &ItemState, config: &Config, t: &Transition) {
    let next = &t.next;
    assert_eq!(next.version, state.version + 1, "decide: every transition bumps the version exactly once");
    assert!(
        config.exit(&next.track, &next.stage).is_some(),
        "decide: next stage {} is not on track {}",
        next.stage,
        next.track
    );
    match &t.enqueue {
        Some((stage, attempt)) => {
            assert_eq!(stage, &next.stage, "decide: the queued job is not at the item's stage");
            assert_eq!(next.status, ItemStatus::Queued, "decide: a job is queued for an item that is not queued");
            assert_eq!(next.attempts_at(stage), *attempt, "decide: the queued attempt is not the item's count");
            assert!(
                *attempt >= 1 && *attempt <= config.max_attempts(stage),
                "decide: attempt {attempt} of stage {stage} is outside 1..={}",
                config.max_attempts(stage)
            );
        }
        None => assert_ne!(next.status, ItemStatus::Queued, "decide: an item is queued with no job to run"),
    }
}

fn operator(
    state: &ItemState,
    config: &Config,
    action: OperatorAction,
    to: EdgeTarget,
) -> Result<Transition, DecideError> {
    let not_allowed = || DecideError::NotAllowed { action: action.as_str(), status: state.status };
    match action {
        OperatorAction::Cancel => {
            let mut next = bumped(state);
            next.status = ItemStatus::Cancelled;
            Ok(Transition { decision: Decision::Cancelled { stage: state.stage.clone() }, next, enqueue: None })
        }
        OperatorAction::Escalate => escalate(state, config),
        OperatorAction::Retry => {
            if state.status != ItemStatus::Blocked {
                return Err(not_allowed());
            }
            let mut next = bumped(state);
            next.attempts.insert(state.stage.clone(), 1);
            next.status = ItemStatus::Queued;
            Ok(Transition {
                decision: Decision::Retried { stage: state.stage.clone() },
                enqueue: Some((state.stage.clone(), 1)),
                next,
            })
        }
        OperatorAction::Approve => {
            if state.status != ItemStatus::WaitingApproval {
                return Err(not_allowed());
            }
            let mut t = move_on(state, config, to.clone());
            // Entering the next stage may itself block (attempts used up); keep
            // that decision and its reason rather than reporting a plain approval.
            if matches!(t.decision, Decision::Advanced { .. } | Decision::Done { .. }) {
                t.decision = Decision::Approved { from: state.stage.clone(), to };
            }
            Ok(t)
        }
    }
}

/// The state with its version bumped, the base of every transition.
fn bumped(state: &ItemState) -> ItemState {
    let mut next = state.clone();
    next.version += 1;
    next
}

fn pass(state: &ItemState, config: &Config, to: EdgeTarget, approval: bool) -> Transition {
    if approval {
        let mut next = bumped(state);
        next.status = ItemStatus::WaitingApproval;
        return Transition {
            decision: Decision::AwaitingApproval { from: state.stage.clone(), to },
            next,
            enqueue: None,
        };
    }
    move_on(state, config, to)
}

/// Leaves the current stage forwards: to the next stage's first attempt, or done.
fn move_on(state: &ItemState, config: &Config, to: EdgeTarget) -> Transition {
    match to {
        EdgeTarget::Done => {
            let mut next = bumped(state);
            next.status = ItemStatus::Done;
            Transition { decision: Decision::Done { from: state.stage.clone() }, next, enqueue: None }
        }
        EdgeTarget::Stage(stage) => {
            let decision = Decision::Advanced { from: state.stage.clone(), to: stage.clone() };
            enter(state, config, stage, decision)
        }
    }
}

/// Queues a job at `stage` if its attempts allow, else blocks the item there.
fn enter(state: &ItemState, config: &Config, stage: StageName, decision: Decision) -> Transition {
    let used = state.attempts_at(&stage);
    let max = config.max_attempts(&stage);
    let mut next = bumped(state);
    next.stage = stage.clone();
    if used >= max {
        let why = match &decision {
            Decision::RolledBack { reason, .. } => format!("; last failure: {reason}"),
            _ => String::new(),
        };
        next.status = ItemStatus::Blocked;
        let reason = format!("stage {stage} has used all {max} of its attempts{why}");
        return Transition { decision: Decision::Blocked { stage, reason }, next, enqueue: None };
    }
    next.status = ItemStatus::Queued;
    next.attempts.insert(stage.clone(), used + 1);
    Transition { decision, next, enqueue: Some((stage, used + 1)) }
}

fn rollback(state: &ItemState, config: &Config, to: StageName, reason: &str) -> Transition {
    let decision = Decision::RolledBack { from: state.stage.clone(), to: to.clone(), reason: reason.to_owned() };
    enter(state, config, to, decision)
}

fn block(state: &ItemState, reason: String) -> Transition {
    let mut next = bumped(state);
    next.status = ItemStatus::Blocked;
    Transition { decision: Decision::Blocked { stage: state.stage.clone(), reason }, next, enqueue: None }
}

fn escalate(state: &ItemState, config: &Config) -> Result<Transition, DecideError> {
    let full = TrackName::full_cycle();
    if state.track == full {
        return Err(DecideError::AlreadyEscalated(full));
    }
    let first = config.first_stage(&full).ok_or_else(|| DecideError::UnknownTrack(full.clone()))?.clone();
    let mut escalated = state.clone();
    escalated.track = full;
    let decision =
        Decision::Escalated { from_track: state.track.clone(), from: state.stage.clone(), to: first.clone() };
    Ok(enter(&escalated, config, first, decision))
}

#[cfg(test)]
mod tests;
