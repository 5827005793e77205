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
    /// `done` or `cancelled` seen: nothing may follow.
    ended: bool,
    /// Waiting at an approval edge: only approve, cancel or escalate may follow.
    waiting: bool,
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
            ended: false,
            waiting: false,
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
                walk.stage = e.data.get("stage").and_then(|v| v.as_str()).or(e.to.as_deref()).map(StageName::from);
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
    if walk.ended {
        return Err(format!("{} after the item had ended", kind.as_str()));
    }
    let operator_exit = matches!(kind, EventKind::ItemCancelled | EventKind::ItemEscalated);
    if walk.waiting && kind != EventKind::ItemApproved && !operator_exit {
        return Err(format!("{} while waiting for approval", kind.as_str()));
    }
    if kind == EventKind::ItemApproved && !walk.waiting {
        return Err("item.approved without a wait for approval".to_owned());
    }
    walk.ended = matches!(kind, EventKind::ItemDone | EventKind::ItemCancelled)
        || (kind == EventKind::ItemApproved && e.to.as_deref() == Some("done"));
    walk.waiting = kind == EventKind::ItemWaitingApproval;
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
        EventKind::ItemDone => next == EdgeTarget::Done,
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

#[cfg(test)]
mod tests {
    use super::*;
    use orch_core::Timestamp;
    use serde_json::json;

    fn config() -> Config {
        let text = "[[repos]]\nname = \"shop\"\nkey = \"SHOP\"\npath = \".\"\n\
                    [[edges]]\nfrom = \"testing\"\nto = \"deploy-staging\"\ngates = []\non_fail = \"development\"\n\
                    [agents.analyst]\ncommand = [\"a\"]\n[agents.architect]\ncommand = [\"a\"]\n\
                    [agents.developer]\ncommand = [\"a\"]\n[agents.tester]\ncommand = [\"a\"]\n[agents.deployer]\ncommand = [\"a\"]\n";
        orch_core::config::load(std::path::Path::new("orch.toml"), text, &Default::default()).unwrap()
    }

    fn ev(seq: i64, kind: &str, from: &str, to: &str, version: i64, job: i64) -> Event {
        Event {
            seq,
            at: Timestamp::from_millis(seq),
            item: "SHOP-1".parse().unwrap(),
            job: Some(orch_store::JobId(job)),
            kind: kind.into(),
            from: Some(from.into()),
            to: Some(to.into()),
            epoch: Some(1),
            reason: None,
            data: json!({ "version": version, "track": "quick" }),
        }
    }

    fn created() -> Event {
        Event {
            seq: 0,
            at: Timestamp::from_millis(0),
            item: "SHOP-1".parse().unwrap(),
            job: None,
            kind: "item.created".into(),
            from: None,
            to: Some("development".into()),
            epoch: None,
            reason: None,
            data: json!({ "track": "quick", "stage": "development" }),
        }
    }

    #[test]
    fn a_valid_walk_passes() {
        let events = vec![
            created(),
            ev(1, "item.advanced", "development", "testing", 1, 1),
            ev(2, "item.rolled_back", "testing", "development", 2, 2),
            ev(3, "item.advanced", "development", "testing", 3, 3),
            ev(4, "item.advanced", "testing", "deploy-staging", 4, 4),
        ];
        assert_eq!(audit(&config(), &events), vec![]);
    }

    #[test]
    fn two_transitions_from_one_version_breach_i2_and_one_job_twice_breaches_i3() {
        let events = vec![
            created(),
            ev(1, "item.advanced", "development", "testing", 1, 1),
            ev(2, "item.rolled_back", "testing", "development", 1, 1),
        ];
        let found: Vec<&str> = audit(&config(), &events).iter().map(|b| b.invariant).collect();
        assert!(found.contains(&"I2"), "{found:?}");
        assert!(found.contains(&"I3"), "{found:?}");
    }

    #[test]
    fn skipping_a_stage_or_rolling_back_off_graph_breaches_i1() {
        let skip = vec![created(), ev(1, "item.advanced", "development", "deploy", 1, 1)];
        assert_eq!(audit(&config(), &skip)[0].invariant, "I1");
        let bad_rollback = vec![
            created(),
            ev(1, "item.advanced", "development", "testing", 1, 1),
            ev(2, "item.advanced", "testing", "deploy-staging", 2, 2),
            ev(3, "item.rolled_back", "deploy-staging", "testing", 3, 3),
        ];
        let b = audit(&config(), &bad_rollback);
        assert_eq!(b.len(), 1, "{b:?}");
        assert_eq!((b[0].invariant, b[0].events.clone()), ("I1", vec![3]));
        let discontinuous = vec![created(), ev(1, "item.advanced", "testing", "deploy-staging", 1, 1)];
        assert_eq!(audit(&config(), &discontinuous)[0].invariant, "I1");
    }

    #[test]
    fn done_from_a_middle_stage_and_moves_after_the_end_breach_i1() {
        let early_done = vec![created(), ev(1, "item.done", "development", "done", 1, 1)];
        assert_eq!(audit(&config(), &early_done)[0].invariant, "I1");
        let mut cancel = ev(2, "item.cancelled", "testing", "", 2, 0);
        cancel.job = None;
        cancel.to = None;
        let after_end = vec![
            created(),
            ev(1, "item.advanced", "development", "testing", 1, 1),
            cancel,
            ev(3, "item.advanced", "testing", "deploy-staging", 3, 3),
        ];
        let b = audit(&config(), &after_end);
        assert_eq!((b.len(), b[0].invariant, b[0].events.clone()), (1, "I1", vec![3]), "{b:?}");
    }

    #[test]
    fn approval_is_required_before_an_approved_move() {
        let unrequested = vec![
            created(),
            ev(1, "item.advanced", "development", "testing", 1, 1),
            ev(2, "item.approved", "testing", "deploy-staging", 2, 0),
        ];
        assert_eq!(audit(&config(), &unrequested)[0].invariant, "I1");
    }

    #[test]
    fn rollback_after_merge_breaches_i4() {
        let mut merged = ev(2, "pr.merged", "", "", 0, 1);
        merged.data = json!({});
        let events = vec![
            created(),
            ev(1, "item.advanced", "development", "testing", 1, 1),
            merged,
            ev(3, "item.rolled_back", "testing", "development", 2, 2),
        ];
        let found: Vec<&str> = audit(&config(), &events).iter().map(|b| b.invariant).collect();
        assert_eq!(found, vec!["I4"]);
    }
}
