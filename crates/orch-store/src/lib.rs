//! orch's durable state behind one `Store` trait, with SQLite (embedded default) and
//! PostgreSQL implementations.
//!
//! Architecture invariants:
//! - Only this crate speaks SQL.
//! - Every write by a job's owner names the epoch it holds; a write with a stale
//!   epoch changes nothing and is reported as fenced out (never silently applied).
//! - A transition is one transaction that checks the item's `version` and the job's
//!   `epoch`, updates both, appends the events and enqueues the next job.
//! - The store never reads the clock to decide anything: callers pass `now`, so
//!   tests control time. `store_time` only reports the database's clock to nodes.
//! - Events are append-only: no operation updates or deletes one.

mod common;
mod deadline;
mod postgres;
mod sqlite;
mod types;

pub use deadline::STORE_CALL_DURATION;
pub use types::*;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use orch_core::{ItemKey, Timestamp};

/// Backend-neutral failures, so callers never match on driver text. `Clone` so one
/// failed group commit can be reported to every write it carried.
#[derive(Clone, Debug, thiserror::Error)]
pub enum Error {
    /// The URL names no backend orch has.
    #[error("store URL {url:?} has an unknown scheme: expected sqlite://PATH or postgres://USER@HOST/DB")]
    UnknownScheme { url: String },
    /// The database could not be reached or opened.
    #[error("cannot open store {url}: {reason}")]
    Unavailable { url: String, reason: String },
    /// The schema was written by a newer orch.
    #[error("store {url} has schema version {found}, newer than this orch binary knows ({known}); upgrade orch")]
    SchemaTooNew { url: String, found: i64, known: i64 },
    /// A migration failed to apply.
    #[error("migrating store {url}: {reason}")]
    Migration { url: String, reason: String },
    /// The caller's epoch is stale: another owner has taken the job over.
    #[error("job {job} is fenced out: epoch {epoch} is no longer current")]
    FencedOut { job: JobId, epoch: i64 },
    /// A row that must exist does not.
    #[error("{what} not found")]
    NotFound { what: String },
    /// The repo named has no key prefix registered (items are created per repo).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// A stored row could not be decoded (corruption or a schema bug).
    #[error("corrupt row in {table}: {reason}")]
    Corrupt { table: &'static str, reason: String },
    /// `register_node` found the id held by a node that is still live (not stopped
    /// and heard from within `live_for`): two live nodes must never share an id.
    #[error(
        "node id {id} is in use by a live node (host {host}, pid {pid}, incarnation {incarnation}, last seen at \
         {last_seen}): two live nodes must never share an id; choose another node id or stop that node"
    )]
    NodeIdInUse { id: String, host: String, pid: i32, incarnation: String, last_seen: Timestamp },
    /// Any other database failure.
    #[error("database error: {0}")]
    Database(String),
}

/// Result alias for store operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The durable state of an orch deployment.
///
/// All times come from the caller (`now`), and every write by a job owner carries
/// the epoch it holds. Implementations must make each method atomic.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Which backend this is, for logs and benchmarks.
    fn backend(&self) -> Backend;

    /// Woken whenever a job may have been queued: by this process's own writes at
    /// once, and (PostgreSQL) by other nodes' `NOTIFY`. A hint only; callers still poll.
    fn work_signal(&self) -> Arc<tokio::sync::Notify>;

    // --- items ---------------------------------------------------------------

    /// Creates an item, allocating `PREFIX-N` for its repo atomically (unique and
    /// gap-free under concurrent writers), appends `item.created`, and enqueues the
    /// first job (attempt 1 at `new.state.stage`) with `job.queued`. Durable when it
    /// returns (I7).
    async fn create_item(&self, new: NewItem, now: Timestamp) -> Result<Item>;

    /// One item by key.
    async fn get_item(&self, key: &ItemKey) -> Result<Option<Item>>;

    /// Items matching `filter`, ordered by key (repo prefix, then number), `page` applied.
    async fn list_items(&self, filter: &ItemFilter, page: Page) -> Result<Vec<Item>>;

    /// Records the item's branch name (set once by the VCS layer).
    async fn set_branch(&self, key: &ItemKey, branch: &str, now: Timestamp) -> Result<()>;

    // --- jobs ----------------------------------------------------------------

    /// One job by id.
    async fn get_job(&self, id: JobId) -> Result<Option<Job>>;

    /// Every job of an item, oldest first.
    async fn jobs_for_item(&self, key: &ItemKey) -> Result<Vec<Job>>;

    /// The item's job that has not ended (queued, running or finishing), if any.
    async fn active_job(&self, key: &ItemKey) -> Result<Option<Job>>;

    /// Claims up to `limit` queued jobs, oldest first, for `node`: each becomes
    /// `running` with `owner = node`, `epoch + 1`, `lease_expires_at = now + lease_ttl`,
    /// and its item becomes `running`. Each queued job is claimed by exactly one
    /// caller however many claim at once. The claim stamps `started_at = now`: the
    /// Tier-3 backstop counts from the moment a node took the job, not from when
    /// its process started.
    async fn claim_jobs(&self, node: &str, limit: u32, now: Timestamp, lease_ttl: Duration) -> Result<Vec<Job>>;

    /// Extends the leases of `jobs` held by `node` in one statement. Returns the ids
    /// whose lease was renewed; a job missing from the result has been taken over,
    /// cancelled or ended, and its owner must stop.
    async fn renew_leases(
        &self,
        node: &str,
        jobs: &[(JobId, i64)],
        now: Timestamp,
        lease_ttl: Duration,
    ) -> Result<Vec<JobId>>;

    /// Records the agent process of a running job and appends `job.started`.
    ///
    /// # Errors
    /// `Error::FencedOut` if `epoch` is stale.
    async fn record_started(&self, job: JobId, epoch: i64, run: RunInfo, now: Timestamp) -> Result<()>;

    /// Marks the job `finishing`: stamps `finished_at`, the exit code (None = lost)
    /// and a reason, and appends `job.finished`.
    ///
    /// # Errors
    /// `Error::FencedOut` if `epoch` is stale.
    async fn record_finished(&self, job: JobId, epoch: i64, exit: ExitInfo, now: Timestamp) -> Result<()>;

    /// Records one gate's result and appends `gate.passed` / `gate.failed`.
    ///
    /// # Errors
    /// `Error::FencedOut` if `epoch` is stale.
    async fn record_gate_result(&self, job: JobId, epoch: i64, result: GateResult, now: Timestamp) -> Result<()>;

    /// Every gate result recorded for `job`, under any epoch, oldest first, each
    /// with the `sha` it was recorded with.
    async fn gate_results(&self, job: JobId) -> Result<Vec<GateResult>>;

    /// Takes a job over for `node`: only if its epoch is still `expected_epoch`, it
    /// has not ended, and (with `TakeOver::IfLeaseExpired`) its lease has expired by
    /// `now`. Bumps the epoch (fencing the previous owner), sets the owner and lease,
    /// and appends `reaper.took_over` with `reason`. `None` if any condition fails.
    #[allow(clippy::too_many_arguments)]
    async fn take_over(
        &self,
        job: JobId,
        expected_epoch: i64,
        node: &str,
        now: Timestamp,
        lease_ttl: Duration,
        when: TakeOver,
        reason: &str,
    ) -> Result<Option<Job>>;

    /// Puts a running job back in the queue (graceful shutdown, reconcile): status
    /// `queued`, no owner, epoch + 1, run fields cleared; item back to `queued`.
    /// Appends `job.released`.
    ///
    /// # Errors
    /// `Error::FencedOut` if `epoch` is stale.
    async fn release_job(&self, job: JobId, epoch: i64, reason: &str, now: Timestamp) -> Result<()>;

    /// Commits an item's transition in one transaction (see `TransitionCommit`).
    async fn commit_transition(&self, commit: TransitionCommit, now: Timestamp) -> Result<CommitOutcome>;

    /// Appends events that are not part of a transition (e.g. `reaper.deferred`,
    /// `job.fenced_out`).
    async fn append_events(&self, events: &[NewEvent], now: Timestamp) -> Result<()>;

    // --- the git layer: pushes, and the local forge's pull requests ----------

    /// Makes a push the store's truth, in one transaction, only while the pusher
    /// still owns the job: the job must not have ended and must be at `epoch`.
    /// Sets the job's item's `branch` and `head_sha` (the SHA the next push names
    /// in `--force-with-lease`), and appends `events` (e.g. `vcs.committed`,
    /// `vcs.pushed`) with the job's item, and the job and epoch where unset.
    ///
    /// # Errors
    /// `Error::FencedOut` if the job has ended or `epoch` is stale, `NotFound` if
    /// there is no such job, `Invalid` for an empty branch or SHA; nothing is
    /// written then.
    async fn record_push(
        &self,
        job: JobId,
        epoch: i64,
        branch: &str,
        head_sha: &str,
        events: &[NewEvent],
        now: Timestamp,
    ) -> Result<()>;

    /// Opens the item's pull request (state `open`, `number` = the item's number,
    /// `created_at = updated_at = now`, no checks) unless it has one. Returns the
    /// item's PR and whether this call created it; a repeat returns the existing
    /// PR unchanged with `false`, so a finalizer that crashed after opening can
    /// simply open again. Of concurrent calls for one item exactly one creates it.
    ///
    /// # Errors
    /// `NotFound` if the item does not exist; `Invalid` for an empty branch, SHA
    /// or URL, or a branch another item's PR already has.
    async fn open_pr(&self, new: NewPr, now: Timestamp) -> Result<(PullRequest, bool)>;

    /// Applies the fields `update` sets to the item's PR atomically and stamps
    /// `updated_at = now`; `check` inserts or replaces that gate's entry in
    /// `checks`. Returns the PR as stored.
    ///
    /// # Errors
    /// `NotFound` if the item has no PR; `Invalid`, writing nothing, for a state
    /// outside `PullRequest::STATES` or a merged PR asked to become open or
    /// closed (a merge is final: main already holds the work).
    async fn update_pr(&self, item: &ItemKey, update: PrUpdate, now: Timestamp) -> Result<PullRequest>;

    /// The item's pull request, if it has one.
    async fn get_pr(&self, item: &ItemKey) -> Result<Option<PullRequest>>;

    /// Pull requests of `repo` in `state` (`None` matches any), ordered by item key
    /// (prefix, then number).
    ///
    /// # Errors
    /// `Invalid` for a state outside `PullRequest::STATES`.
    async fn list_prs(&self, repo: Option<&str>, state: Option<&str>) -> Result<Vec<PullRequest>>;

    /// The pull request whose head is `branch` (one at most: branches are per item).
    async fn find_pr_by_branch(&self, branch: &str) -> Result<Option<PullRequest>>;

    // --- reaper tiers (one indexed query each; no full scans) ----------------

    /// Tier-1: `running` jobs whose lease expired before `now`.
    async fn expired_running(&self, now: Timestamp, limit: u32) -> Result<Vec<Job>>;

    /// Tier-2: `finishing` jobs whose `finished_at` is before `finished_before`.
    async fn stale_finishing(&self, finished_before: Timestamp, limit: u32) -> Result<Vec<Job>>;

    /// Tier-3: `running` or `finishing` jobs whose `started_at` is before `started_before`.
    async fn overdue(&self, started_before: Timestamp, limit: u32) -> Result<Vec<Job>>;

    /// `running`/`finishing` jobs owned by `node` (start-up reconcile, shutdown).
    async fn jobs_owned_by(&self, node: &str) -> Result<Vec<Job>>;

    // --- events and views ----------------------------------------------------

    /// An item's events in the order they were appended.
    async fn events_for_item(&self, key: &ItemKey) -> Result<Vec<Event>>;

    /// Events with `seq > after`, ascending, at most `limit`. Never hands out a seq
    /// while a lower one may still commit, so a reader that tails with the last seq
    /// it saw misses nothing; on PostgreSQL a just-committed event may therefore
    /// appear a few milliseconds later (see docs/STORE.md, "The event stream").
    async fn events_since(&self, after: i64, limit: u32) -> Result<Vec<Event>>;

    /// The position of the last *settled* event: one no later event can be
    /// ordered before (docs/STORE.md, "The event stream"); `EventPosition::START`
    /// when there is none. A stream that starts here delivers only events that
    /// settle from now on.
    async fn event_head(&self) -> Result<EventPosition>;

    /// The position of event `seq`, so a reader can resume after the last event it
    /// delivered; `None` if there is no such event.
    async fn event_position(&self, seq: i64) -> Result<Option<EventPosition>>;

    /// Settled events after `after` in stream order, at most `limit`, only those of
    /// `item` when given. Stream order never goes back: every event this returns
    /// later is after every event it returned before, so a reader that asks again
    /// from the last position it got misses nothing and repeats nothing, on
    /// PostgreSQL too, where seqs commit out of order.
    async fn events_after(
        &self,
        after: EventPosition,
        item: Option<&ItemKey>,
        limit: u32,
    ) -> Result<Vec<PositionedEvent>>;

    /// The counts `GET /queue` and `orch queue` show.
    async fn queue_stats(&self) -> Result<QueueStats>;

    /// Adds one reaper pass's counts to the cluster-wide totals and moves
    /// `last_pass_at` to `at` unless a later pass is recorded, in one statement.
    async fn record_reaper_pass(&self, counts: ReaperPassCounts, at: Timestamp) -> Result<()>;

    /// The reaper's totals over every node and restart, and how many jobs are
    /// `finishing` under a lease still live at `now`.
    async fn reaper_totals(&self, now: Timestamp) -> Result<ReaperTotals>;

    // --- nodes (DESIGN §5) ------------------------------------------------------

    /// Registers `reg` as the holder of node id `reg.id`, atomically.
    ///
    /// The id is taken when it has no row, or its row is stopped
    /// (`deregister_node`), or it was last seen `live_for` or longer before `now`
    /// (live while `last_seen + live_for > now`). The row then holds the new
    /// incarnation with `started_at = last_seen = now`, no `stopped_at`, and
    /// `clock_offset_ms = 0` (the offset belonged to the old process). Returns the
    /// row it replaced — a stopped or dead incarnation whose work the caller may
    /// reconcile — or `None` for a new id. Of several registrations of one id at
    /// once, exactly one succeeds.
    ///
    /// # Errors
    /// `Error::NodeIdInUse`, naming the live node, if the id is held by a live
    /// node; nothing is written then.
    async fn register_node(
        &self,
        reg: NodeRegistration,
        now: Timestamp,
        live_for: Duration,
    ) -> Result<Option<NodeRecord>>;

    /// A heartbeat: sets `last_seen = now` and the node's measured
    /// `clock_offset_ms`, only where the row's id and incarnation match and it is
    /// not stopped. `false` means no row matched: another incarnation has taken
    /// the id over (or this one was deregistered), and the caller must stop.
    async fn touch_node(&self, id: &str, incarnation: &str, now: Timestamp, clock_offset_ms: i64) -> Result<bool>;

    /// A clean shutdown: stamps `stopped_at = now` on the row of this id and
    /// incarnation, so a restart under the id need not wait `live_for`. Does
    /// nothing if another incarnation holds the id (it must not be stopped) or
    /// the row is already stopped.
    async fn deregister_node(&self, id: &str, incarnation: &str, now: Timestamp) -> Result<()>;

    /// Every registered node, live or not, ordered by id.
    async fn nodes(&self) -> Result<Vec<NodeRecord>>;

    /// The store's own clock, in milliseconds since the Unix epoch, so a node can
    /// measure its offset to it and judge leases in one clock (DESIGN §5).
    /// PostgreSQL answers `clock_timestamp()`; SQLite answers `None`, having no
    /// clock apart from the process's own.
    async fn store_time(&self) -> Result<Option<Timestamp>>;
}

/// Opens the store named by `url` (`sqlite://PATH` or `postgres://…`), applying
/// migrations. A relative SQLite path is taken as given (the caller resolves it).
///
/// # Errors
/// `UnknownScheme`, `Unavailable`, `SchemaTooNew` or `Migration`, each naming the URL.
pub async fn open(url: &str) -> Result<Arc<dyn Store>> {
    if url.starts_with("sqlite:") {
        let store = sqlite::SqliteStore::open(url).await?;
        Ok(Arc::new(deadline::Deadline::timed_only(store, common::redact(url))))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        postgres::PgStore::open(url).await
    } else {
        Err(Error::UnknownScheme { url: common::redact(url) })
    }
}
