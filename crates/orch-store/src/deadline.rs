//! A deadline on every store call, enforced in this process.
//!
//! Why the database's own limits are not enough: `statement_timeout` is enforced by
//! the server, and its error travels back over the same connection; when the
//! network to the server stalls (a frozen proxy, a partition that drops packets
//! without a reset) that answer never arrives, and neither does any other. sqlx
//! 0.9 offers no TCP keepalive or socket timeout, and keepalive would not notice a
//! frozen proxy anyway (the proxy's kernel still acknowledges). The pool's
//! `acquire_timeout` bounds only getting a connection. So without a deadline
//! here a node's scheduler, reaper or heartbeat could wait for ever on one call.
//!
//! A call cut short is reported as `Error::Unavailable`; like any lost
//! connection, its outcome is unknown (a write may have committed), which fencing
//! epochs and item versions already make safe to retry. sqlx returns the
//! abandoned connection to the pool only once a ping on it succeeds; while the
//! network stays frozen that ping waits and keeps the connection's slot, so at
//! worst the pool runs dry and later calls fail after the pool's acquire timeout.
//!
//! Every call, on either backend, is also timed into the histogram
//! [`STORE_CALL_DURATION`] (label `call`), which `GET /metrics` exports. SQLite is
//! wrapped with no deadline ([`Deadline::timed_only`]): its calls never cross a
//! network, and a write abandoned by its caller would still commit on the writer
//! thread.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use orch_core::{ItemKey, Timestamp};
use tokio::sync::Notify;

use crate::{
    Backend, CommitOutcome, Error, Event, EventPosition, ExitInfo, GateResult, Item, ItemFilter, Job, JobId, NewEvent,
    NewItem, NewPr, NodeRecord, NodeRegistration, Page, PositionedEvent, PrUpdate, PullRequest, QueueStats,
    ReaperPassCounts, ReaperTotals, Result, RunInfo, Store, TakeOver, TransitionCommit,
};

/// The histogram every store call's latency is recorded in, in seconds.
pub const STORE_CALL_DURATION: &str = "orch_store_call_duration_seconds";

/// A store whose every call ends within `limit` (if any), answered or not, and
/// is timed.
pub(crate) struct Deadline<S> {
    inner: S,
    /// The redacted URL, for the error.
    url: String,
    limit: Option<Duration>,
}

impl<S: Store> Deadline<S> {
    pub(crate) fn new(inner: S, url: String, limit: Duration) -> Self {
        Self { inner, url, limit: Some(limit) }
    }

    /// Times every call of `inner` without bounding it.
    pub(crate) fn timed_only(inner: S, url: String) -> Self {
        Self { inner, url, limit: None }
    }

    async fn bound<T>(&self, call: &'static str, fut: impl Future<Output = Result<T>>) -> Result<T> {
        let started = std::time::Instant::now();
        let result = match self.limit {
            None => fut.await,
            Some(limit) => match tokio::time::timeout(limit, fut).await {
                Ok(result) => result,
                Err(_) => Err(Error::Unavailable {
                    url: self.url.clone(),
                    reason: format!(
                        "{call} got no answer from the database within {limit:?}: the network or the server is stalled"
                    ),
                }),
            },
        };
        metrics::histogram!(STORE_CALL_DURATION, "call" => call).record(started.elapsed().as_secs_f64());
        result
    }
}

#[async_trait]
impl<S: Store> Store for Deadline<S> {
    fn backend(&self) -> Backend {
        self.inner.backend()
    }

    fn work_signal(&self) -> Arc<Notify> {
        self.inner.work_signal()
    }

    async fn create_item(&self, new: NewItem, now: Timestamp) -> Result<Item> {
        self.bound("create_item", self.inner.create_item(new, now)).await
    }

    async fn get_item(&self, key: &ItemKey) -> Result<Option<Item>> {
        self.bound("get_item", self.inner.get_item(key)).await
    }

    async fn list_items(&self, filter: &ItemFilter, page: Page) -> Result<Vec<Item>> {
        self.bound("list_items", self.inner.list_items(filter, page)).await
    }

    async fn set_branch(&self, key: &ItemKey, branch: &str, now: Timestamp) -> Result<()> {
        self.bound("set_branch", self.inner.set_branch(key, branch, now)).await
    }

    async fn get_job(&self, id: JobId) -> Result<Option<Job>> {
        self.bound("get_job", self.inner.get_job(id)).await
    }

    async fn jobs_for_item(&self, key: &ItemKey) -> Result<Vec<Job>> {
        self.bound("jobs_for_item", self.inner.jobs_for_item(key)).await
    }

    async fn active_job(&self, key: &ItemKey) -> Result<Option<Job>> {
        self.bound("active_job", self.inner.active_job(key)).await
    }

    async fn claim_jobs(&self, node: &str, limit: u32, now: Timestamp, lease_ttl: Duration) -> Result<Vec<Job>> {
        self.bound("claim_jobs", self.inner.claim_jobs(node, limit, now, lease_ttl)).await
    }

    async fn renew_leases(
        &self,
        node: &str,
        jobs: &[(JobId, i64)],
        now: Timestamp,
        lease_ttl: Duration,
    ) -> Result<Vec<JobId>> {
        self.bound("renew_leases", self.inner.renew_leases(node, jobs, now, lease_ttl)).await
    }

    async fn record_started(&self, job: JobId, epoch: i64, run: RunInfo, now: Timestamp) -> Result<()> {
        self.bound("record_started", self.inner.record_started(job, epoch, run, now)).await
    }

    async fn record_finished(&self, job: JobId, epoch: i64, exit: ExitInfo, now: Timestamp) -> Result<()> {
        self.bound("record_finished", self.inner.record_finished(job, epoch, exit, now)).await
    }

    async fn record_gate_result(&self, job: JobId, epoch: i64, result: GateResult, now: Timestamp) -> Result<()> {
        self.bound("record_gate_result", self.inner.record_gate_result(job, epoch, result, now)).await
    }

    async fn gate_results(&self, job: JobId) -> Result<Vec<GateResult>> {
        self.bound("gate_results", self.inner.gate_results(job)).await
    }

    async fn record_push(
        &self,
        job: JobId,
        epoch: i64,
        branch: &str,
        head_sha: &str,
        events: &[NewEvent],
        now: Timestamp,
    ) -> Result<()> {
        self.bound("record_push", self.inner.record_push(job, epoch, branch, head_sha, events, now)).await
    }

    async fn open_pr(&self, new: NewPr, now: Timestamp) -> Result<(PullRequest, bool)> {
        self.bound("open_pr", self.inner.open_pr(new, now)).await
    }

    async fn update_pr(&self, item: &ItemKey, update: PrUpdate, now: Timestamp) -> Result<PullRequest> {
        self.bound("update_pr", self.inner.update_pr(item, update, now)).await
    }

    async fn get_pr(&self, item: &ItemKey) -> Result<Option<PullRequest>> {
        self.bound("get_pr", self.inner.get_pr(item)).await
    }

    async fn list_prs(&self, repo: Option<&str>, state: Option<&str>) -> Result<Vec<PullRequest>> {
        self.bound("list_prs", self.inner.list_prs(repo, state)).await
    }

    async fn find_pr_by_branch(&self, branch: &str) -> Result<Option<PullRequest>> {
        self.bound("find_pr_by_branch", self.inner.find_pr_by_branch(branch)).await
    }

    async fn take_over(
        &self,
        job: JobId,
        expected_epoch: i64,
        node: &str,
        now: Timestamp,
        lease_ttl: Duration,
        when: TakeOver,
        reason: &str,
    ) -> Result<Option<Job>> {
        self.bound("take_over", self.inner.take_over(job, expected_epoch, node, now, lease_ttl, when, reason)).await
    }

    async fn release_job(&self, job: JobId, epoch: i64, reason: &str, now: Timestamp) -> Result<()> {
        self.bound("release_job", self.inner.release_job(job, epoch, reason, now)).await
    }

    async fn commit_transition(&self, commit: TransitionCommit, now: Timestamp) -> Result<CommitOutcome> {
        self.bound("commit_transition", self.inner.commit_transition(commit, now)).await
    }

    async fn append_events(&self, events: &[NewEvent], now: Timestamp) -> Result<()> {
        self.bound("append_events", self.inner.append_events(events, now)).await
    }

    async fn expired_running(&self, now: Timestamp, limit: u32) -> Result<Vec<Job>> {
        self.bound("expired_running", self.inner.expired_running(now, limit)).await
    }

    async fn stale_finishing(&self, finished_before: Timestamp, limit: u32) -> Result<Vec<Job>> {
        self.bound("stale_finishing", self.inner.stale_finishing(finished_before, limit)).await
    }

    async fn overdue(&self, started_before: Timestamp, limit: u32) -> Result<Vec<Job>> {
        self.bound("overdue", self.inner.overdue(started_before, limit)).await
    }

    async fn jobs_owned_by(&self, node: &str) -> Result<Vec<Job>> {
        self.bound("jobs_owned_by", self.inner.jobs_owned_by(node)).await
    }

    async fn events_for_item(&self, key: &ItemKey) -> Result<Vec<Event>> {
        self.bound("events_for_item", self.inner.events_for_item(key)).await
    }

    async fn events_since(&self, after: i64, limit: u32) -> Result<Vec<Event>> {
        self.bound("events_since", self.inner.events_since(after, limit)).await
    }

    async fn queue_stats(&self) -> Result<QueueStats> {
        self.bound("queue_stats", self.inner.queue_stats()).await
    }

    async fn event_head(&self) -> Result<EventPosition> {
        self.bound("event_head", self.inner.event_head()).await
    }

    async fn event_position(&self, seq: i64) -> Result<Option<EventPosition>> {
        self.bound("event_position", self.inner.event_position(seq)).await
    }

    async fn events_after(
        &self,
        after: EventPosition,
        item: Option<&ItemKey>,
        limit: u32,
    ) -> Result<Vec<PositionedEvent>> {
        self.bound("events_after", self.inner.events_after(after, item, limit)).await
    }

    async fn record_reaper_pass(&self, counts: ReaperPassCounts, at: Timestamp) -> Result<()> {
        self.bound("record_reaper_pass", self.inner.record_reaper_pass(counts, at)).await
    }

    async fn reaper_totals(&self, now: Timestamp) -> Result<ReaperTotals> {
        self.bound("reaper_totals", self.inner.reaper_totals(now)).await
    }

    async fn register_node(
        &self,
        reg: NodeRegistration,
        now: Timestamp,
        live_for: Duration,
    ) -> Result<Option<NodeRecord>> {
        self.bound("register_node", self.inner.register_node(reg, now, live_for)).await
    }

    async fn touch_node(&self, id: &str, incarnation: &str, now: Timestamp, clock_offset_ms: i64) -> Result<bool> {
        self.bound("touch_node", self.inner.touch_node(id, incarnation, now, clock_offset_ms)).await
    }

    async fn deregister_node(&self, id: &str, incarnation: &str, now: Timestamp) -> Result<()> {
        self.bound("deregister_node", self.inner.deregister_node(id, incarnation, now)).await
    }

    async fn nodes(&self) -> Result<Vec<NodeRecord>> {
        self.bound("nodes", self.inner.nodes()).await
    }

    async fn store_time(&self) -> Result<Option<Timestamp>> {
        self.bound("store_time", self.inner.store_time()).await
    }
}
