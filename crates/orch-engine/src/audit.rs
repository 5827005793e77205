//! `orch audit`: checks invariants I1–I4 over the event log, as a pure function of
//! the events and the config, so the same check serves the CLI, the chaos tests
//! and anyone replaying a log.
//!
//! - I1: each item's transitions form a valid walk of its track graph (advances
//!   along edges, rollbacks to the edge's `on_fail` or the stage itself, escalation
//!   to the first stage of `full-cycle`), each starting where the last one left it.
//! - I2: no two transitions of one item from the same version.
//! - I3: one live owner per job: at most one transition committed per job, and no
//!   epoch of a job started or finished twice.
//! - I4: nothing rolls an item back or cancels it after its pull request merged.

use std::collections::{BTreeMap, HashMap, HashSet};

use orch_core::config::{Config, EdgeTarget};
use orch_core::{EventKind, StageName, TrackName};
use orch_store::Event;
use serde::Serialize;

/// One breach of an invariant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Breach {
    pub invariant: &'static str,
    pub item: String,
    /// The `seq` of the events involved.
    pub events: Vec<i64>,
    pub message: String,
}

/// Where an item stands while its events are replayed.
struct Walk {
    track: Option<TrackName>,
    stage: Option<StageName>,
    versions: HashMap<i64, i64>,
    merged_at: Option<i64>,
}

/// Checks every event (in `seq` order, any mix of items) against I1–I4.
pub fn audit(config: &Config, events: &[Event]) -> Vec<Breach> {
    let mut breaches = Vec::new();
    let mut walks: BTreeMap<String, Walk> = BTreeMap::new();
    let mut commits_per_job: HashMap<i64, Vec<i64>> = HashMap::new();
    let mut job_epoch_writes: HashSet<(i64, i64, &str)> = HashSet::new();

    for e in events {
        let item = e.item.to_string();
        let walk = walks.entry(item.clone()).or_insert(Walk {
            track: None,
            stage: None,
            versions: HashMap::new(),
            merged_at: None,
        });
        let mut breach = |inv: &'static str, seqs: Vec<i64>, message: String| {
            breaches.push(Breach { invariant: inv, item: item.clone(), events: seqs, message });
        };
        let Ok(kind) = e.kind.parse::<EventKind>() else { continue };
        match kind {
            EventKind::ItemCreated => {
                walk.track = e.data.get("track").and_then(|v| v.as_str()).map(TrackName::from);
                walk.stage = e.data.get("stage").and_then(|v| v.as_str()).map(StageName::from);
            }
            EventKind::JobStarted | EventKind::JobFinished => {
                if let (Some(job), Some(epoch)) = (e.job, e.epoch)
                    && !job_epoch_writes.insert((job.0, epoch, kind.as_str()))
                {
                    breach(
                        "I3",
                        vec![e.seq],
                        format!("job {job} had {} written twice at epoch {epoch}", kind.as_str()),
                    );
                }
            }
            EventKind::PrMerged => walk.merged_at = Some(e.seq),
            _ => {}
        }
        if !kind.is_transition() {
            continue;
        }
        if let Some(version) = e.data.get("version").and_then(serde_json::Value::as_i64)
            && let Some(prev) = walk.versions.insert(version, e.seq)
        {
            breach("I2", vec![prev, e.seq], format!("two transitions from version {version}"));
        }
        if let Some(job) = e.job {
            let seqs = commits_per_job.entry(job.0).or_default();
            seqs.push(e.seq);
            if seqs.len() > 1 {
                breach("I3", seqs.clone(), format!("job {job} committed {} transitions", seqs.len()));
            }
        }
        if let Some(merged) = walk.merged_at
            && matches!(kind, EventKind::ItemRolledBack | EventKind::ItemCancelled)
        {
            breach("I4", vec![merged, e.seq], format!("{} after the pull request merged", kind.as_str()));
        }
        if let Err(msg) = check_step(config, walk, kind, e) {
            breach("I1", vec![e.seq], msg);
        }
    }
    breaches
}

/// Validates one transition against the graph and advances the walk.
fn check_step(config: &Config, walk: &mut Walk, kind: EventKind, e: &Event) -> Result<(), String> {
    let from = e.from.as_deref().map(StageName::from);
    let to = e.to.as_deref();
    let after_track = e.data.get("track").and_then(|v| v.as_str()).map(TrackName::from);
    // The track the step was taken on: escalation changes it, nothing else does.
    let track = if kind == EventKind::ItemEscalated { walk.track.clone() } else { after_track.clone() }
        .or_else(|| walk.track.clone())
        .ok_or_else(|| format!("{} with no known track", kind.as_str()))?;
    let from = from.ok_or_else(|| format!("{} without a from stage", kind.as_str()))?;
    if let Some(cur) = &walk.stage
        && cur != &from
    {
        return Err(format!("{} from {from}, but the item was at {cur}", kind.as_str()));
    }
    let next = config.next_after(&track, &from).ok_or_else(|| format!("stage {from} is not on track {track}"))?;
    let to_stage = to.map(StageName::from);
    let ok = match kind {
        EventKind::ItemAdvanced => to_stage.clone().map(EdgeTarget::Stage) == Some(next.clone()),
        EventKind::ItemApproved => to == Some(next.as_str()),
        EventKind::ItemWaitingApproval => config.edge(&from, &next).is_some_and(|edge| edge.approval),
        EventKind::ItemDone => next == EdgeTarget::Done || to == Some("done"),
        EventKind::ItemRolledBack => {
            let on_fail = config.edge(&from, &next).and_then(|edge| edge.on_fail.clone());
            to_stage.as_ref() == Some(&from) || to_stage == on_fail
        }
        EventKind::ItemEscalated => {
            let full = TrackName::full_cycle();
            after_track.as_ref() == Some(&full) && to_stage.as_ref() == config.first_stage(&full)
        }
        EventKind::ItemBlocked | EventKind::ItemRetried | EventKind::ItemCancelled => true,
        _ => true,
    };
    if !ok {
        return Err(format!("{} {from} -> {} is not a step of track {track}", kind.as_str(), to.unwrap_or("?")));
    }
    if kind == EventKind::ItemEscalated {
        walk.track = after_track;
    } else if walk.track.is_none() {
        walk.track = Some(track);
    }
    walk.stage = match kind {
        EventKind::ItemWaitingApproval | EventKind::ItemCancelled | EventKind::ItemDone => Some(from),
        EventKind::ItemApproved if to == Some("done") => Some(from),
        _ => to_stage.or(Some(from)),
    };
    Ok(())
}
