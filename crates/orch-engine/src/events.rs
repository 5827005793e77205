//! Turning a `decide` result into the events and the store commit that record it.
//! Shared by finalizers, the reaper and operator actions so every transition is
//! written the same way.

use orch_core::config::EdgeTarget;
use orch_core::{Decision, EventKind, ItemKey, JobStatus, StageName, Transition};
use orch_store::{JobFinal, NewEvent, TransitionCommit};
use serde_json::json;

/// The event that records a decision taken while the item stood at `before`.
pub(crate) fn decision_event(item: &ItemKey, before: &StageName, t: &Transition) -> NewEvent {
    let (kind, from, to, reason) = match &t.decision {
        Decision::Advanced { from, to } => (EventKind::ItemAdvanced, from.to_string(), Some(to.to_string()), None),
        Decision::AwaitingApproval { from, to } => {
            (EventKind::ItemWaitingApproval, from.to_string(), Some(to.as_str().to_owned()), None)
        }
        Decision::Approved { from, to } => {
            (EventKind::ItemApproved, from.to_string(), Some(to.as_str().to_owned()), None)
        }
        Decision::Done { from } => {
            (EventKind::ItemDone, from.to_string(), Some(EdgeTarget::Done.as_str().to_owned()), None)
        }
        Decision::RolledBack { from, to, reason } => {
            (EventKind::ItemRolledBack, from.to_string(), Some(to.to_string()), Some(reason.clone()))
        }
        Decision::Retried { stage } => (EventKind::ItemRetried, stage.to_string(), Some(stage.to_string()), None),
        Decision::Blocked { stage, reason } => {
            (EventKind::ItemBlocked, before.to_string(), Some(stage.to_string()), Some(reason.clone()))
        }
        Decision::Escalated { from, to, .. } => {
            (EventKind::ItemEscalated, from.to_string(), Some(to.to_string()), None)
        }
        Decision::Cancelled { stage } => (EventKind::ItemCancelled, stage.to_string(), None, None),
    };
    let mut e = NewEvent::new(item.clone(), kind);
    e.from = Some(from);
    e.to = to;
    e.reason = reason;
    e.data = json!({ "track": t.next.track.as_str(), "status": t.next.status.as_str() });
    if let Decision::Escalated { from_track, .. } = &t.decision {
        e.data["from_track"] = json!(from_track.as_str());
    }
    e
}

/// The commit for a transition produced by a finished job held at `job.epoch`.
pub(crate) fn job_commit(
    item: &ItemKey,
    before: &StageName,
    expected_version: i64,
    t: &Transition,
    job: JobFinal,
) -> TransitionCommit {
    let mut events = Vec::with_capacity(2);
    if job.status == JobStatus::Failed {
        let mut e = NewEvent::new(item.clone(), EventKind::JobFailed);
        e.job = Some(job.id);
        e.epoch = Some(job.epoch);
        e.reason = job.reason.clone();
        events.push(e);
    }
    let mut e = decision_event(item, before, t);
    e.job = Some(job.id);
    e.epoch = Some(job.epoch);
    events.push(e);
    TransitionCommit {
        item: item.clone(),
        expected_version,
        job: Some(job),
        next: t.next.clone(),
        cancel_active_jobs: false,
        events,
        enqueue: t.enqueue.clone(),
        claim_next: None,
    }
}
