//! `orch audit`: checks invariants I1–I4 and the infrastructure-retry rule over the
//! event log, one item at a time, so the same check serves the CLI, the chaos tests
//! and anyone replaying a log, and memory stays bounded by the largest single item
//! however long the log grows.
//!
//! Every check is per item (a job belongs to one item), so `audit_item` sees one
//! item's events and `audit_store` pages through the store's items feeding it.
//!
//! - I1: each item's transitions form a valid walk of its track graph (advances
//!   along edges, rollbacks to the edge's `on_fail` or the stage itself, escalation
//!   to the first stage of `full-cycle`), each starting where the last one left it.
//! - I2: no two transitions of one item from the same version.
//! - I3: one live owner per job: at most one transition committed per job, no epoch
//!   of a job started or finished twice, and no run of a later epoch started before
//!   a fenced-out earlier owner's processes for that job were dead (`killed_at`).
//! - I4: nothing rolls an item back or cancels it after its pull request merged.
//! - infra: an infrastructure failure (a gate or agent that could not start) is
//!   retried in place (a rollback to the stage itself); it never rolls the item
//!   back to another stage along `on_fail` (DESIGN §7).
//!
//! `job.fenced_out` events are not breaches (fencing worked) but are reported as
//! notices, so an operator sees which owners were fenced and where.

use std::collections::{BTreeMap, HashMap, HashSet};

use orch_core::config::{Config, EdgeTarget};
use orch_core::{EventKind, ItemKey, StageName, Timestamp, TrackName};
use orch_store::{Event, ItemFilter, JobId, Page, Store};
use serde::Serialize;

/// The prefix the engine gives the reason of a failure to *start* a gate or an
/// agent (spawn error, missing directory): such a failure must be retried in place.
pub const INFRASTRUCTURE_REASON_PREFIX: &str = "infrastructure:";

/// How many breaches and how many notices a report lists. Past this only the totals
/// grow, so an audit of a log where every item breaches (a config that no longer
/// matches old items, say) still runs in bounded memory.
pub const FINDINGS_LISTED_MAX: usize = 10_000;

/// Items per `list_items` page in `audit_store`: big enough that paging costs little
/// next to fetching each item's events, small enough that a page of items (with
/// their bodies) stays a few megabytes.
const ITEMS_PAGE: u32 = 500;

/// One breach of an invariant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Breach {
    /// `I1`–`I4`, or `infra` for a rollback caused by an infrastructure failure.
    pub invariant: &'static str,
    pub item: String,
    /// The `seq` of the events involved, ascending.
    pub events: Vec<i64>,
    pub message: String,
}

/// A `job.fenced_out` event, reported so an operator sees fenced owners. Not a
/// breach: fencing is the mechanism working, but frequent fencing means leases
/// expire under live owners (an overloaded node, a clock, a too-short TTL).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Notice {
    pub item: String,
    /// The event's `seq`.
    pub seq: i64,
    pub job: Option<JobId>,
    /// The stale epoch the fenced-out owner held.
    pub epoch: Option<i64>,
    /// Where the owner learnt it was fenced (`data.step`: `agent`, `commit`, …).
    pub step: Option<String>,
    /// The fenced-out node (`data.node`).
    pub node: Option<String>,
    /// When the owner confirmed its processes for the job were dead
    /// (`data.killed_at`); `None` if it ran none (or did not say).
    pub killed_at: Option<Timestamp>,
}

/// What `audit_store` found, and how much it looked at.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct AuditReport {
    pub items_checked: u64,
    pub events_checked: u64,
    /// The first `FINDINGS_LISTED_MAX` breaches, item by item.
    pub breaches: Vec<Breach>,
    /// Every breach found, listed or not.
    pub breaches_total: u64,
    /// The first `FINDINGS_LISTED_MAX` fenced-out notices.
    pub notices: Vec<Notice>,
    pub notices_total: u64,
}

impl AuditReport {
    /// Checks one item's events (in `seq` order) and adds what it finds.
    pub fn add_item(&mut self, config: &Config, events: &[Event]) {
        self.items_checked += 1;
        self.events_checked += events.len() as u64;
        let breaches = audit_item(config, events);
        self.breaches_total += breaches.len() as u64;
        let room = FINDINGS_LISTED_MAX.saturating_sub(self.breaches.len());
        self.breaches.extend(breaches.into_iter().take(room));
        let notices = notices(events);
        self.notices_total += notices.len() as u64;
        let room = FINDINGS_LISTED_MAX.saturating_sub(self.notices.len());
        self.notices.extend(notices.into_iter().take(room));
    }

    /// No breach found (notices do not count).
    pub fn is_clean(&self) -> bool {
        self.breaches_total == 0
    }
}

/// Audits every item in the store, one at a time: pages through `list_items` and
/// checks each item's `events_for_item`, so memory is bounded by one page of items
/// plus two items' events (the one being checked and the next, read meanwhile),
/// not by the size of the log.
///
/// Items are paged by offset in key order. Items are never deleted, so an item
/// filed meanwhile can only shift later ones forward: one already checked may be
/// seen again at the start of the next page, and is skipped (keys of the previous
/// page are remembered; should more than a page of items be filed ahead of the
/// cursor while one page is checked, some are checked twice, never skipped). An
/// item filed after its place was passed is not checked: it is newer than the audit.
///
/// # Errors
/// The store's error from any page or item read; nothing is reported partially.
pub async fn audit_store(store: &dyn Store, config: &Config) -> Result<AuditReport, orch_store::Error> {
    let mut report = AuditReport::default();
    let mut offset: u32 = 0;
    let mut previous_page: HashSet<ItemKey> = HashSet::new();
    loop {
        let page = store.list_items(&ItemFilter::default(), Page { offset, limit: ITEMS_PAGE }).await?;
        let len = page.len();
        // Only the keys are needed: drop titles and bodies before reading events.
        let keys: Vec<ItemKey> = page.into_iter().map(|item| item.key).collect();
        let mut todo = keys.iter().filter(|k| !previous_page.contains(*k));
        let mut current = events_of(store, todo.next()).await?;
        while let Some(events) = current.take() {
            // The next item's read is started before this one is checked: on SQLite a
            // reader thread fetches it meanwhile (about 1.5x faster under load, see
            // docs/BENCHMARKS.md, "Audit").
            let (next, ()) = tokio::join!(events_of(store, todo.next()), async { report.add_item(config, &events) });
            current = next?;
        }
        if len < ITEMS_PAGE as usize {
            return Ok(report);
        }
        offset = offset.saturating_add(ITEMS_PAGE);
        previous_page = keys.into_iter().collect();
    }
}

/// The events of `key`, if there is a key.
async fn events_of(store: &dyn Store, key: Option<&ItemKey>) -> Result<Option<Vec<Event>>, orch_store::Error> {
    match key {
        Some(key) => store.events_for_item(key).await.map(Some),
        None => Ok(None),
    }
}

/// Checks every event (in `seq` order, any mix of items) against I1–I4 and the
/// infrastructure-retry rule, grouping them by item; breaches come item by item in
/// key order. Holds the whole log: for a store, `audit_store` streams instead.
pub fn audit(config: &Config, events: &[Event]) -> Vec<Breach> {
    let mut by_item: BTreeMap<&ItemKey, Vec<&Event>> = BTreeMap::new();
    for e in events {
        by_item.entry(&e.item).or_default().push(e);
    }
    by_item.values().flat_map(|item_events| check_item(config, item_events.iter().copied())).collect()
}

/// Checks one item's events, in `seq` order, against I1–I4 and the
/// infrastructure-retry rule.
///
/// Precondition: every event belongs to the same item (the walk of one item is
/// replayed; another item's events would read as breaches of it).
pub fn audit_item(config: &Config, events: &[Event]) -> Vec<Breach> {
    check_item(config, events.iter())
}

/// The `job.fenced_out` events among `events`, as notices.
pub fn notices(events: &[Event]) -> Vec<Notice> {
    events
        .iter()
        .filter(|e| e.kind == EventKind::JobFencedOut.as_str())
        .map(|e| {
            let text = |field: &str| e.data.get(field).and_then(|v| v.as_str()).map(str::to_owned);
            Notice {
                item: e.item.to_string(),
                seq: e.seq,
                job: e.job,
                epoch: e.epoch,
                step: text("step"),
                node: text("node"),
                killed_at: killed_at(e),
            }
        })
        .collect()
}

/// `data.killed_at` of a `job.fenced_out` event: milliseconds on the events' time base.
fn killed_at(e: &Event) -> Option<Timestamp> {
    e.data.get("killed_at").and_then(serde_json::Value::as_i64).map(Timestamp::from_millis)
}

/// Where an item stands while its events are replayed.
#[derive(Default)]
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

/// A run start or a fenced-out owner's kill confirmation, kept until the item's
/// events are all read: the stale owner records `job.fenced_out` when it comes
/// back, typically after the new owner's `job.started`, so seq order alone can't
/// pair them.
struct Mark {
    job: JobId,
    epoch: i64,
    at: Timestamp,
    seq: i64,
}

/// The per-item check behind `audit` and `audit_item`.
fn check_item<'a>(config: &Config, events: impl Iterator<Item = &'a Event>) -> Vec<Breach> {
    let mut breaches = Vec::new();
    let mut walk = Walk::default();
    let mut commits_per_job: HashMap<JobId, Vec<i64>> = HashMap::new();
    let mut job_epoch_writes: HashSet<(JobId, i64, EventKind)> = HashSet::new();
    let mut starts: Vec<Mark> = Vec::new();
    let mut kills: Vec<Mark> = Vec::new();
    let mut key: Option<&ItemKey> = None;
    let mut item = String::new();

    for e in events {
        match key {
            None => {
                key = Some(&e.item);
                item = e.item.to_string();
            }
            Some(k) => debug_assert_eq!(k, &e.item, "audit_item takes the events of one item"),
        }
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
                if let (Some(job), Some(epoch)) = (e.job, e.epoch) {
                    if !job_epoch_writes.insert((job, epoch, kind)) {
                        breach(
                            "I3",
                            vec![e.seq],
                            format!("job {job} had {} written twice at epoch {epoch}", kind.as_str()),
                        );
                    }
                    if kind == EventKind::JobStarted {
                        starts.push(Mark { job, epoch, at: e.at, seq: e.seq });
                    }
                }
            }
            EventKind::JobFencedOut => {
                if let (Some(job), Some(epoch), Some(at)) = (e.job, e.epoch, killed_at(e)) {
                    kills.push(Mark { job, epoch, at, seq: e.seq });
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
            let seqs = commits_per_job.entry(job).or_default();
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
        // The engine records a retry in place as a rollback to the stage itself
        // (`decide` on an errored run), so only a move to another stage breaks the rule.
        if kind == EventKind::ItemRolledBack
            && e.to != e.from
            && let Some(reason) = e.reason.as_deref().filter(|r| r.starts_with(INFRASTRUCTURE_REASON_PREFIX))
        {
            breach(
                "infra",
                vec![e.seq],
                format!(
                    "rolled back {} -> {} on an infrastructure failure, which must be retried in place: {reason}",
                    e.from.as_deref().unwrap_or("?"),
                    e.to.as_deref().unwrap_or("?")
                ),
            );
        }
        if let Err(msg) = check_step(config, &mut walk, kind, e) {
            breach("I1", vec![e.seq], msg);
        }
    }

    for kill in &kills {
        for start in starts.iter().filter(|s| s.job == kill.job && s.epoch > kill.epoch && s.at < kill.at) {
            let mut seqs = vec![start.seq, kill.seq];
            seqs.sort_unstable();
            breaches.push(Breach {
                invariant: "I3",
                item: item.clone(),
                events: seqs,
                message: format!(
                    "job {}: run of epoch {} started at {} before epoch {}'s processes were dead at {}",
                    kill.job, start.epoch, start.at, kill.epoch, kill.at
                ),
            });
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
            // Work that cannot land (a merge conflict) goes back to development.
            let conflict = e.reason.as_deref().is_some_and(|r| r.starts_with(orch_core::MERGE_CONFLICT))
                && to_stage.as_ref() == config.development_stage(&track);
            to_stage.as_ref() == Some(&from) || to_stage == on_fail || conflict
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
    /// A `job.started` of job 7 at `epoch`, at time `at_ms`.
    fn started(seq: i64, epoch: i64, at_ms: i64) -> Event {
        let mut e = ev(seq, "job.started", "", "", 0, 7);
        (e.from, e.to, e.epoch, e.at, e.data) = (None, None, Some(epoch), Timestamp::from_millis(at_ms), json!({}));
        e
    }

    /// A `job.fenced_out` of job 7 at `epoch` whose processes were dead at `killed_at`.
    fn fenced(seq: i64, epoch: i64, killed_at: serde_json::Value) -> Event {
        let mut e = ev(seq, "job.fenced_out", "", "", 0, 7);
        (e.from, e.to, e.epoch) = (None, None, Some(epoch));
        e.data = json!({ "node": "node-a", "step": "commit", "killed_at": killed_at });
        e
    }

    #[test]
    fn a_later_epoch_started_before_the_fenced_owner_killed_its_processes_breaches_i3() {
        // Epoch 1 runs, epoch 2 starts at t=2000, and the stale owner reports (after
        // the fact, at a higher seq) that its processes were dead only at t=2500.
        let events = vec![created(), started(1, 1, 1000), started(2, 2, 2000), fenced(3, 1, json!(2500))];
        let b = audit(&config(), &events);
        assert_eq!(b.len(), 1, "{b:?}");
        assert_eq!((b[0].invariant, b[0].events.clone()), ("I3", vec![2, 3]));
        let msg = &b[0].message;
        assert!(msg.starts_with("job 7: run of epoch 2 started at "), "{msg}");
        assert!(msg.contains("before epoch 1's processes were dead at "), "{msg}");
        assert!(
            msg.contains(&Timestamp::from_millis(2000).to_string())
                && msg.contains(&Timestamp::from_millis(2500).to_string()),
            "{msg}"
        );
    }

    #[test]
    fn a_fenced_owner_whose_processes_died_before_the_next_start_is_no_breach() {
        let dead_first = vec![created(), started(1, 1, 1000), fenced(2, 1, json!(1500)), started(3, 2, 2000)];
        assert_eq!(audit(&config(), &dead_first), vec![]);
        // Recorded after the new start, still dead before it: no breach either.
        let late_record = vec![created(), started(1, 1, 1000), started(2, 2, 2000), fenced(3, 1, json!(2000))];
        assert_eq!(audit(&config(), &late_record), vec![]);
        // No processes of its own (null or absent killed_at): nothing to overlap.
        let none = vec![created(), started(1, 2, 2000), fenced(2, 1, json!(null))];
        assert_eq!(audit(&config(), &none), vec![]);
        // An owner is never checked against its own epoch's or an earlier epoch's run.
        let own = vec![created(), started(1, 1, 1000), started(2, 2, 2000), fenced(3, 2, json!(2500))];
        assert_eq!(audit(&config(), &own), vec![]);
    }

    #[test]
    fn a_rollback_to_another_stage_on_an_infrastructure_failure_is_a_breach_and_a_retry_in_place_is_not() {
        let mut infra = ev(2, "item.rolled_back", "testing", "development", 2, 2);
        infra.reason = Some("infrastructure: gate retest could not start: No such file or directory".into());
        let events = vec![created(), ev(1, "item.advanced", "development", "testing", 1, 1), infra];
        let b = audit(&config(), &events);
        assert_eq!(b.len(), 1, "{b:?}");
        assert_eq!((b[0].invariant, b[0].events.clone()), ("infra", vec![2]));
        assert!(b[0].message.contains("testing -> development"), "{}", b[0].message);
        assert!(b[0].message.contains("gate retest could not start"), "{}", b[0].message);

        let mut red = ev(2, "item.rolled_back", "testing", "development", 2, 2);
        red.reason = Some("gate retest failed: 2 tests failed".into());
        let events = vec![created(), ev(1, "item.advanced", "development", "testing", 1, 1), red];
        assert_eq!(audit(&config(), &events), vec![]);

        // The retry in place the rule asks for is recorded as a rollback to the stage itself.
        let mut in_place = ev(2, "item.rolled_back", "testing", "testing", 2, 2);
        in_place.reason = Some("infrastructure: gate retest could not start: No such file or directory".into());
        let events = vec![created(), ev(1, "item.advanced", "development", "testing", 1, 1), in_place];
        assert_eq!(audit(&config(), &events), vec![]);
    }

    #[test]
    fn fenced_out_events_are_listed_as_notices_not_breaches() {
        let events = vec![created(), started(1, 1, 1000), fenced(2, 1, json!(1500)), fenced(3, 2, json!(null))];
        let mut report = AuditReport::default();
        report.add_item(&config(), &events);
        assert!(report.is_clean(), "{:?}", report.breaches);
        assert_eq!((report.items_checked, report.events_checked, report.notices_total), (1, 4, 2));
        let first = &report.notices[0];
        assert_eq!(
            first,
            &Notice {
                item: "SHOP-1".into(),
                seq: 2,
                job: Some(orch_store::JobId(7)),
                epoch: Some(1),
                step: Some("commit".into()),
                node: Some("node-a".into()),
                killed_at: Some(Timestamp::from_millis(1500)),
            }
        );
        assert_eq!((report.notices[1].epoch, report.notices[1].killed_at), (Some(2), None));
    }

    #[test]
    fn the_whole_log_audit_is_the_item_audits_of_its_items() {
        let other = |mut e: Event| {
            e.item = "SHOP-2".parse().unwrap();
            e
        };
        // Two items interleaved in seq order; each breaches on its own.
        let events = vec![
            created(),
            other(created()),
            ev(1, "item.advanced", "development", "deploy", 1, 1),
            other(ev(2, "item.advanced", "development", "testing", 1, 2)),
            other(ev(3, "item.advanced", "development", "testing", 1, 3)),
        ];
        let whole = audit(&config(), &events);
        let (one, two): (Vec<Event>, Vec<Event>) = events.into_iter().partition(|e| e.item.to_string() == "SHOP-1");
        let mut by_item = audit_item(&config(), &one);
        by_item.extend(audit_item(&config(), &two));
        assert_eq!(whole, by_item);
        let found: Vec<(&str, &str)> = whole.iter().map(|b| (b.item.as_str(), b.invariant)).collect();
        assert_eq!(found, [("SHOP-1", "I1"), ("SHOP-2", "I2"), ("SHOP-2", "I1")]);
    }

    #[test]
    fn a_report_lists_a_bounded_number_of_breaches_and_counts_them_all() {
        let skip = vec![created(), ev(1, "item.advanced", "development", "deploy", 1, 1)];
        let mut report = AuditReport::default();
        for _ in 0..=FINDINGS_LISTED_MAX {
            report.add_item(&config(), &skip);
        }
        assert_eq!(report.breaches.len(), FINDINGS_LISTED_MAX);
        assert_eq!(report.breaches_total, FINDINGS_LISTED_MAX as u64 + 1);
        assert_eq!(report.events_checked, 2 * (FINDINGS_LISTED_MAX as u64 + 1));
        assert!(!report.is_clean());
    }
}
