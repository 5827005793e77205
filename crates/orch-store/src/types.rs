//! The rows the store hands out and the requests it takes. Their JSON shape is the
//! data shape of DESIGN §8 (fields may be added, never renamed).

use std::collections::BTreeMap;
use std::fmt;

use orch_core::{
    EventKind, ItemKey, ItemKind, ItemState, ItemStatus, JobStatus, KeyPrefix, StageName, Timestamp, TrackName,
};
use serde::{Deserialize, Serialize};

/// Which database a store runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        })
    }
}

/// A job's id (database-assigned, increasing).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(pub i64);

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// An item's pull request on the embedded "local" forge, whose whole state is this
/// row: the forge opens it at the item's first push, gates report a check per SHA
/// on it, and the deploy stage merges it. `url`, `state` and `merge_sha` are the
/// item's `pr` shape of DESIGN §8; the rest was added with the git layer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PullRequest {
    pub url: String,
    /// `open`, `merged` or `closed` (`PullRequest::STATES`). Once `merged` it never
    /// changes again: main already holds the work.
    pub state: String,
    pub merge_sha: Option<String>,
    pub item: ItemKey,
    /// The forge's number for it: the item's own number (`SHOP-12` opens #12).
    pub number: i64,
    pub repo: String,
    pub title: String,
    pub body: String,
    /// The item's feature branch, the PR's head.
    pub branch: String,
    /// The branch's SHA the PR was last told of.
    pub head_sha: Option<String>,
    /// Each gate's latest check, by gate name.
    pub checks: BTreeMap<String, PrCheck>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl PullRequest {
    /// The state of a PR that can still change.
    pub const OPEN: &'static str = "open";
    /// The state of a PR whose work is on main; final.
    pub const MERGED: &'static str = "merged";
    /// The state of a PR given up without merging (it may be reopened).
    pub const CLOSED: &'static str = "closed";
    /// Every state a PR may be in.
    pub const STATES: [&'static str; 3] = [Self::OPEN, Self::MERGED, Self::CLOSED];
}

/// One gate's check status on a pull request, for the commit the gate ran on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PrCheck {
    pub sha: String,
    pub passed: bool,
    pub reason: Option<String>,
    pub at: Timestamp,
}

/// What `Store::open_pr` needs; `number`, `state` and the times are the store's.
#[derive(Clone, Debug)]
pub struct NewPr {
    pub item: ItemKey,
    pub repo: String,
    pub title: String,
    pub body: String,
    pub branch: String,
    pub head_sha: String,
    pub url: String,
}

/// The changes `Store::update_pr` applies; `None` leaves a field as it is.
#[derive(Clone, Debug, Default)]
pub struct PrUpdate {
    pub head_sha: Option<String>,
    pub body: Option<String>,
    /// One of `PullRequest::STATES`; a merged PR refuses any other.
    pub state: Option<String>,
    pub merge_sha: Option<String>,
    /// `(gate, check)`: inserts or replaces that gate's entry in `checks`.
    pub check: Option<(String, PrCheck)>,
}

/// A work item as stored.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Item {
    pub key: ItemKey,
    pub repo: String,
    pub kind: ItemKind,
    pub title: String,
    pub body: String,
    pub track: TrackName,
    pub stage: StageName,
    pub status: ItemStatus,
    pub version: i64,
    pub attempts: BTreeMap<StageName, u32>,
    pub branch: Option<String>,
    /// The branch's SHA as last pushed by a job's owner (`Store::record_push`):
    /// what the next push names in `--force-with-lease`.
    pub head_sha: Option<String>,
    pub pr: Option<PullRequest>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl Item {
    /// The transition-relevant part, for `orch_core::decide`.
    pub fn state(&self) -> ItemState {
        ItemState {
            track: self.track.clone(),
            stage: self.stage.clone(),
            status: self.status,
            version: self.version,
            attempts: self.attempts.clone(),
        }
    }
}

/// What `create_item` needs; the key is allocated by the store.
#[derive(Clone, Debug)]
pub struct NewItem {
    pub repo: String,
    pub prefix: KeyPrefix,
    pub kind: ItemKind,
    pub title: String,
    pub body: String,
    /// Normally `ItemState::new(track, first_stage)`.
    pub state: ItemState,
}

impl NewItem {
    /// The item as stored once the store has allocated its key at `now`.
    pub fn into_item(self, key: ItemKey, now: Timestamp) -> Item {
        Item {
            key,
            repo: self.repo,
            kind: self.kind,
            title: self.title,
            body: self.body,
            track: self.state.track,
            stage: self.state.stage,
            status: self.state.status,
            version: self.state.version,
            attempts: self.state.attempts,
            branch: None,
            head_sha: None,
            pr: None,
            created_at: now,
            updated_at: now,
        }
    }
}

/// Filters for `list_items`; `None` matches everything.
#[derive(Clone, Debug, Default)]
pub struct ItemFilter {
    pub repo: Option<String>,
    pub stage: Option<StageName>,
    pub status: Option<ItemStatus>,
    pub kind: Option<ItemKind>,
    /// Keyset cursor: only items ordered after this key (prefix, then number), so
    /// a client paging with the last key it saw neither skips nor repeats an item
    /// when others are created meanwhile, and the query seeks instead of skipping
    /// `offset` rows.
    pub after: Option<ItemKey>,
}

/// Offset pagination.
#[derive(Clone, Copy, Debug)]
pub struct Page {
    pub offset: u32,
    pub limit: u32,
}

impl Default for Page {
    fn default() -> Self {
        Self { offset: 0, limit: 100 }
    }
}

/// One job (one attempt of one stage for one item).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Job {
    pub id: JobId,
    pub item: ItemKey,
    pub stage: StageName,
    pub attempt: u32,
    pub status: JobStatus,
    pub owner: Option<String>,
    pub epoch: i64,
    pub lease_expires_at: Option<Timestamp>,
    pub heartbeat_at: Option<Timestamp>,
    pub pid: Option<i32>,
    pub pgid: Option<i32>,
    /// The agent process's start time (clock ticks since boot, from /proc), so a
    /// recycled pid is never mistaken for our agent.
    pub proc_start: Option<i64>,
    pub queued_at: Timestamp,
    pub started_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
    pub exit_code: Option<i32>,
    pub reason: Option<String>,
    pub verdict: Option<serde_json::Value>,
    pub log_path: Option<String>,
    /// What the run consumed, as its adapter read it from the agent's stream.
    pub usage: Option<orch_core::Usage>,
}

/// The agent process of a job, recorded when it starts.
#[derive(Clone, Debug)]
pub struct RunInfo {
    pub pid: i32,
    pub pgid: i32,
    pub proc_start: Option<i64>,
    pub log_path: String,
}

/// How the agent process ended.
#[derive(Clone, Debug, Default)]
pub struct ExitInfo {
    /// `None` when the process was lost (no exit status could be had).
    pub exit_code: Option<i32>,
    pub reason: Option<String>,
    /// The agent's parsed verdict, kept in the job row so any node can finalize
    /// the job, not only the one whose disk holds the verdict file.
    pub verdict: Option<serde_json::Value>,
    /// What the run consumed (adapters `claude-code` and `codex`).
    pub usage: Option<orch_core::Usage>,
}

/// One gate's result on one job.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GateResult {
    pub gate: String,
    pub passed: bool,
    pub exit_code: Option<i32>,
    pub metric: Option<f64>,
    pub duration_ms: i64,
    pub reason: Option<String>,
    /// The commit the gate ran on, so its check is reported for the SHA it
    /// judged; `None` where the worktree is not under git.
    pub sha: Option<String>,
}

/// When `Store::take_over` may take a job from its owner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TakeOver {
    /// Only if the lease has expired as of `now`, checked in the same statement as
    /// the epoch, so an owner that renewed after the caller looked keeps its job
    /// (Tier-1, and Tier-2 with the liveness check on).
    IfLeaseExpired,
    /// Whatever the lease says (Tier-3 backstop, the Tier-2 kill-switch, a node
    /// reconciling its own previous incarnation).
    Force,
}

/// How the job that produced a transition ends.
#[derive(Clone, Debug)]
pub struct JobFinal {
    pub id: JobId,
    /// The epoch the committer holds; stale means fenced out.
    pub epoch: i64,
    /// `done`, `failed` or `cancelled`.
    pub status: JobStatus,
    pub reason: Option<String>,
    pub verdict: Option<serde_json::Value>,
    /// The run's start and end, when this commit records them itself instead of
    /// `record_started` / `record_finished` (see `RunEnd`).
    pub run_end: Option<RunEnd>,
}

/// What `record_started` and `record_finished` would have stamped on the job row,
/// carried by the transition that ends the job instead: a stage with nothing to
/// do between its agent's exit and its transition (no gates, no merge) then
/// costs one durable write, not three. Only the row's fields go here; the
/// `job.started` / `job.finished` events are the caller's, in `events`, so the
/// event log is the same either way. A `None` keeps what the row has.
#[derive(Clone, Debug, Default)]
pub struct RunEnd {
    /// The agent process (pid 0 for a stage that runs none), when the commit also
    /// stands for `record_started`.
    pub run: Option<RunInfo>,
    pub exit_code: Option<i32>,
    pub usage: Option<orch_core::Usage>,
}

/// Claims the job a transition enqueues for `node` in the same transaction: the
/// node that ends a job has the slot it frees, so the item's next stage starts
/// without waiting for a claim (one write fewer per stage, and no poll between
/// stages). The job is inserted as a claim would leave it: `running`, owned by
/// `node`, epoch 1, `lease_expires_at = now + lease_ttl`, `heartbeat_at =
/// started_at = queued_at = now`; its `job.queued` event is appended all the
/// same, and the item's status becomes `running`.
#[derive(Clone, Debug)]
pub struct ClaimNext {
    pub node: String,
    pub lease_ttl: std::time::Duration,
}

impl ClaimNext {
    /// The job `commit_transition` stored for this claim, exactly as `get_job`
    /// would return it, so the claimer needs no read to start it.
    pub fn claimed_job(&self, id: JobId, item: &ItemKey, stage: &StageName, attempt: u32, now: Timestamp) -> Job {
        Job {
            id,
            item: item.clone(),
            stage: stage.clone(),
            attempt,
            status: JobStatus::Running,
            owner: Some(self.node.clone()),
            epoch: 1,
            lease_expires_at: Some(now.add(self.lease_ttl)),
            heartbeat_at: Some(now),
            pid: None,
            pgid: None,
            proc_start: None,
            queued_at: now,
            started_at: Some(now),
            finished_at: None,
            exit_code: None,
            reason: None,
            verdict: None,
            log_path: None,
            usage: None,
        }
    }
}

/// One transition, committed atomically by `Store::commit_transition`:
/// 1. if `job` is set, that job must be `running`/`finishing` at `job.epoch`
///    (else `FencedOut`, nothing changes); it ends with `job.status`;
/// 2. the item must be at `expected_version` (else `Conflict`, nothing changes);
///    its state becomes `next` (whose version is `expected_version + 1`);
/// 3. if `cancel_active_jobs`, every other not-ended job of the item is cancelled
///    and its epoch bumped (operator actions), with `job.cancelled` events;
/// 4. `events` are appended (item, job and epoch filled in);
/// 5. if `enqueue` is set, a job is queued for `(stage, attempt)` with `job.queued`,
///    and with `claim_next` it is claimed at once (see `ClaimNext`).
#[derive(Clone, Debug)]
pub struct TransitionCommit {
    pub item: ItemKey,
    pub expected_version: i64,
    pub job: Option<JobFinal>,
    pub next: ItemState,
    pub cancel_active_jobs: bool,
    pub events: Vec<NewEvent>,
    pub enqueue: Option<(StageName, u32)>,
    /// Needs `enqueue`; not with `cancel_active_jobs` (operator actions claim nothing).
    pub claim_next: Option<ClaimNext>,
}

/// What `commit_transition` did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CommitOutcome {
    /// Everything was written; the new job's id if one was enqueued.
    Applied { enqueued: Option<JobId> },
    /// The job's epoch was stale: another owner holds it. Nothing was written.
    FencedOut,
    /// The item's version had moved on. Nothing was written.
    Conflict,
}

/// An event to append. `item`, and for owner writes `job`/`epoch`, say whose it is.
#[derive(Clone, Debug)]
pub struct NewEvent {
    pub item: ItemKey,
    pub job: Option<JobId>,
    pub kind: EventKind,
    pub from: Option<String>,
    pub to: Option<String>,
    pub epoch: Option<i64>,
    pub reason: Option<String>,
    pub data: serde_json::Value,
}

impl NewEvent {
    /// An event with only its item and kind set.
    pub fn new(item: ItemKey, kind: EventKind) -> Self {
        Self { item, job: None, kind, from: None, to: None, epoch: None, reason: None, data: serde_json::Value::Null }
    }

    /// `job.started` as `record_started` appends it, so a transition that records
    /// the run itself (`RunEnd`) appends the same event.
    pub fn job_started(item: ItemKey, job: JobId, epoch: i64, run: &RunInfo) -> Self {
        let mut ev = Self::new(item, EventKind::JobStarted);
        ev.job = Some(job);
        ev.epoch = Some(epoch);
        ev.data = crate::common::started_data(run);
        ev
    }

    /// `job.finished` as `record_finished` appends it (see `job_started`).
    pub fn job_finished(item: ItemKey, job: JobId, epoch: i64, exit: &ExitInfo) -> Self {
        let mut ev = Self::new(item, EventKind::JobFinished);
        ev.job = Some(job);
        ev.epoch = Some(epoch);
        ev.reason = exit.reason.clone();
        ev.data = crate::common::finished_data(exit);
        ev
    }
}

/// One row of the append-only audit log.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Event {
    pub seq: i64,
    pub at: Timestamp,
    pub item: ItemKey,
    pub job: Option<JobId>,
    pub kind: String,
    pub from: Option<String>,
    pub to: Option<String>,
    pub epoch: Option<i64>,
    pub reason: Option<String>,
    pub data: serde_json::Value,
}

/// A running or finishing job, as `GET /queue` lists it.
#[derive(Clone, Debug, Serialize)]
pub struct ActiveJob {
    pub id: JobId,
    pub item: ItemKey,
    pub stage: StageName,
    pub status: JobStatus,
    pub owner: Option<String>,
    pub epoch: i64,
    pub started_at: Option<Timestamp>,
    pub lease_expires_at: Option<Timestamp>,
}

/// Counts for `GET /queue`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct QueueStats {
    /// Items per status (every status present, zero included).
    pub items_by_status: BTreeMap<String, i64>,
    /// Non-terminal items per stage.
    pub items_by_stage: BTreeMap<String, i64>,
    /// Jobs per status (every status present, zero included).
    pub jobs_by_status: BTreeMap<String, i64>,
    /// Running and finishing jobs.
    pub active_jobs: Vec<ActiveJob>,
}

/// What a node asks `Store::register_node` for: its id, and who it is this time.
#[derive(Clone, Debug)]
pub struct NodeRegistration {
    /// The node's configured id, unique among live nodes.
    pub id: String,
    /// Unique per process start, so a heartbeat or shutdown of an older process
    /// under the same id can never act on the newer one's row.
    pub incarnation: String,
    pub host: String,
    pub pid: i32,
    pub data_dir: String,
}

/// One row of the node registry.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NodeRecord {
    pub id: String,
    pub incarnation: String,
    pub host: String,
    pub pid: i32,
    pub data_dir: String,
    pub started_at: Timestamp,
    /// The last registration or heartbeat (`touch_node`).
    pub last_seen: Timestamp,
    /// Set by a clean shutdown (`deregister_node`); the id is free at once then.
    pub stopped_at: Option<Timestamp>,
    /// The node's offset to the store's clock as of its last heartbeat (0 until
    /// measured, and always 0 on SQLite, which has no clock of its own).
    pub clock_offset_ms: i64,
}

/// A place in the event stream, between two events: a reader that has delivered
/// an event asks for the events after its position. Positions order events the
/// way the stream delivers them, which is not always seq order: on PostgreSQL
/// sequence numbers can commit out of order, so the position is the writing
/// transaction's id, then the seq (docs/STORE.md, "The event stream"). Only the
/// store makes positions; callers compare them and hand them back.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventPosition {
    /// The writing transaction's id on PostgreSQL; 0 on SQLite, which commits
    /// in seq order. Compared first.
    pub(crate) xid: i64,
    pub(crate) seq: i64,
}

impl EventPosition {
    /// Before every event.
    pub const START: EventPosition = EventPosition { xid: 0, seq: 0 };

    /// The seq of the event this position is at (0 before every event).
    pub fn seq(&self) -> i64 {
        self.seq
    }
}

/// One event with its place in the stream.
#[derive(Clone, Debug, PartialEq)]
pub struct PositionedEvent {
    pub position: EventPosition,
    pub event: Event,
}

/// What one reaper pass did, added to the cluster-wide totals by
/// `Store::record_reaper_pass`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReaperPassCounts {
    /// Tier-2 deferrals to a finalizer holding a live lease.
    pub finalizer_defers: u64,
    pub reaped_tier1: u64,
    pub reaped_tier2: u64,
    pub reaped_tier3: u64,
}

/// The reaper's totals over every node and every restart, for `GET /queue`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ReaperTotals {
    pub finalizer_defers_total: u64,
    pub reaped_tier1: u64,
    pub reaped_tier2: u64,
    pub reaped_tier3: u64,
    /// When any node last finished a reaper pass; `None` before the first.
    pub last_pass_at: Option<Timestamp>,
    /// Jobs `finishing` under a lease that is live at the `now` asked about.
    pub finalizer_owned: u64,
}
