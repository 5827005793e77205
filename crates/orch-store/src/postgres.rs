//! The PostgreSQL backend (`postgres://…`), for several nodes sharing one store.
//!
//! - Claims are one statement: a `FOR UPDATE SKIP LOCKED` pick of the oldest queued
//!   jobs, their update, and their items' update, so concurrent claimers never wait
//!   on each other and never take one job twice.
//! - Locks are taken in one order everywhere, jobs before items, so the writers
//!   cannot deadlock; a deadlock or serialization failure is still retried from the
//!   start of the transaction as a safety net (bounded).
//! - Wake-ups: every write that enqueues a job wakes this process's `work_signal`
//!   and sends `NOTIFY orch_jobs`; a background `LISTEN` task wakes the signal on
//!   other nodes' notifications. `create_item` notifies inside its transaction (so a
//!   CLI that exits right after is still heard); the hot paths (`commit_transition`,
//!   `release_job`) hand the notification to a background task that coalesces bursts
//!   and sends it on its own connection with `synchronous_commit=off`. The reason:
//!   PostgreSQL serialises every committing transaction that has a pending NOTIFY on
//!   one global lock held through its WAL flush, which would cap transitions at the
//!   single-connection commit rate. Notifications are hints; nodes poll as well.
//! - Durability is the server's (`synchronous_commit=on` by default): a commit has
//!   returned only once its WAL record is flushed.
//! - No call waits for ever, even when the network to the server freezes: every
//!   statement is bounded by the server (`statement_timeout`), getting a connection
//!   by the pool (`acquire_timeout`), and every store call as a whole by this
//!   process (`deadline.rs`, since a frozen network never delivers the server's
//!   timeout error). A session that stalls inside a transaction is ended by the
//!   server (`idle_in_transaction_session_timeout`), releasing its row locks for
//!   the other nodes. sqlx 0.9 has no TCP keepalive option (its connect URL
//!   ignores libpq's `keepalives*` parameters), so none is set.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use orch_core::{EventKind, ItemKey, ItemStatus, JobStatus, Timestamp};
use serde_json::json;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions};
use sqlx::types::Json;
use sqlx::{Connection, PgConnection, Row};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;

use crate::common::{
    self, active_job_from_row, event_columns, event_from_row, gate_result_from_row, item_from_row, item_select,
    job_columns, job_columns_j, job_from_row, missing_pr_item, node_columns, node_from_row, pr_from_row, pr_select,
};
use crate::deadline::Deadline;

mod connect;
mod group_commit;

use crate::{
    Backend, CommitOutcome, Error, Event, EventPosition, ExitInfo, GateResult, Item, ItemFilter, Job, JobId, NewEvent,
    NewItem, NewPr, NodeRecord, NodeRegistration, Page, PositionedEvent, PrUpdate, PullRequest, QueueStats,
    ReaperPassCounts, ReaperTotals, Result, RunInfo, Store, TakeOver, TransitionCommit,
};
use connect::*;

/// Migrations embedded in the binary, in order. Forward-only.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../migrations/postgres/0001_init.sql")),
    (2, include_str!("../migrations/postgres/0002_status_counts.sql")),
    (3, include_str!("../migrations/postgres/0003_commit_guard.sql")),
    (4, include_str!("../migrations/postgres/0004_nodes.sql")),
    (5, include_str!("../migrations/postgres/0005_vcs.sql")),
    (6, include_str!("../migrations/postgres/0006_event_stream.sql")),
    (7, include_str!("../migrations/postgres/0007_usage.sql")),
    (8, include_str!("../migrations/postgres/0008_seed_status_counts.sql")),
    (9, include_str!("../migrations/postgres/0009_counters_without_in_lists.sql")),
];

/// The channel every enqueue notifies.
const CHANNEL: &str = "orch_jobs";
/// Connections per node: enough for the scheduler, finalizers, reaper and API.
const POOL_CONNECTIONS: u32 = 16;
/// How long a caller waits for a connection (or the first connect, including the
/// pool's liveness ping of an idle one) before the store is reported unavailable.
/// Connecting to a healthy server takes milliseconds; a few seconds means the
/// server or the network is in trouble, and the caller should hear so while its
/// lease can still be saved.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
/// The server cancels any statement running longer. orch's statements are index
/// lookups and single-row updates that take milliseconds, so 5 s is a thousand
/// times the norm: only a stalled server, a row lock held by a stuck peer, or a
/// runaway query reaches it, and the caller gets an error instead of holding up a
/// scheduler, heartbeat or reaper tick (leases are tens of seconds).
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(5);
/// The server ends a session that sits inside a transaction this long without
/// sending anything. orch's transactions never pause between statements, so only
/// a node that froze or lost its network mid-transaction hits it; its row locks
/// (a job's `FOR UPDATE`, a node row) are then released for the other nodes
/// instead of being held until the server notices the dead peer (hours by TCP).
const IDLE_IN_TRANSACTION_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest any one store call may take, enforced in this process (see
/// `deadline.rs`): above `ACQUIRE_TIMEOUT + STATEMENT_TIMEOUT`, so a server that
/// can still answer reports its own, more precise error first.
const CALL_TIMEOUT: Duration = Duration::from_secs(12);
/// Migrations may rebuild indexes over a long history, and a node waits here for
/// another node's migration (the advisory lock): bounded, but far above
/// `STATEMENT_TIMEOUT`.
const MIGRATION_TIMEOUT: Duration = Duration::from_secs(600);
/// Attempts for a transaction that hit a deadlock or serialization failure.
const TX_ATTEMPTS: u32 = 5;
/// The bound below which an event is settled, as SQL taking the parameter `$n`
/// (`bigint[]`, from `other_database_xids`): the oldest transaction still
/// running in the statement's snapshot apart from other databases' (compared
/// on the low 32 bits, as `pg_stat_activity` shows xids), or the snapshot's
/// xmax when none is. `pg_current_snapshot()` is the statement's own snapshot
/// each time it is called, and the subquery runs once per statement.
macro_rules! settled_bound {
    ($n:literal) => {
        concat!(
            "COALESCE((SELECT min(x) FROM pg_snapshot_xip(pg_current_snapshot()) AS x \
             WHERE NOT ((x::text::bigint % 4294967296) = ANY(",
            $n,
            "::bigint[]))), pg_snapshot_xmax(pg_current_snapshot()))"
        )
    };
}

/// Adds a pass's counts ($1–$4) and keeps the latest pass's end ($5), in one
/// statement over the seeded rows (row locks taken in one order: no deadlock).
const REAPER_PASS_SQL: &str = "UPDATE reaper_counters SET value = CASE name \
     WHEN 'finalizer_defers' THEN value + $1 WHEN 'reaped_tier1' THEN value + $2 \
     WHEN 'reaped_tier2' THEN value + $3 WHEN 'reaped_tier3' THEN value + $4 \
     WHEN 'last_pass_at' THEN GREATEST(value, $5) ELSE value END";

/// Longest pause between retries of a failed LISTEN connection.
const LISTEN_BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Key of the advisory lock that serialises migrations across nodes.
const MIGRATION_LOCK: i64 = 0x006f_7263_686d_6967; // "orchmig"

/// The highest schema version this binary knows.
fn known_version() -> i64 {
    MIGRATIONS.last().map_or(0, |m| m.0)
}

/// A failure inside a transaction body: a driver error (maybe retryable) or a
/// decided outcome.
enum Fail {
    Sql(sqlx::Error),
    Store(Error),
}

impl From<sqlx::Error> for Fail {
    fn from(e: sqlx::Error) -> Self {
        Fail::Sql(e)
    }
}

impl From<Error> for Fail {
    fn from(e: Error) -> Self {
        Fail::Store(e)
    }
}

type TxResult<T> = std::result::Result<T, Fail>;

/// A PostgreSQL store: a connection pool plus the LISTEN and NOTIFY helper tasks.
pub(crate) struct PgStore {
    url: String,
    pool: PgPool,
    signal: Arc<Notify>,
    /// Pokes the notifier task; a full channel means a notification is pending.
    notify: mpsc::Sender<()>,
    /// Transitions for the group committer (`group_commit`).
    group: mpsc::Sender<group_commit::Pending>,
    /// The LISTEN, NOTIFY and group-commit tasks; aborted when the store is dropped.
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for PgStore {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl PgStore {
    /// Connects, applies migrations and starts the LISTEN/NOTIFY tasks. Every call
    /// on the store returned is bounded by `CALL_TIMEOUT`.
    pub(crate) async fn open(url: &str) -> Result<Arc<dyn Store>> {
        let shown = common::redact(url);
        let opts = connect_options(url, &shown)?;
        // One direct attempt first: a refused or unauthenticated connection fails
        // `open` at once, where the pool would keep retrying for ACQUIRE_TIMEOUT.
        // Bounded too: a frozen network would otherwise hold the handshake for ever.
        let first = tokio::time::timeout(ACQUIRE_TIMEOUT, PgConnection::connect_with(&opts)).await.map_err(|_| {
            Error::Unavailable {
                url: shown.clone(),
                reason: format!("no answer to connecting within {ACQUIRE_TIMEOUT:?}"),
            }
        })?;
        first.map_err(|e| common::map_err(&shown, e))?.close().await.ok();
        let pool = pool_options().connect_with(opts.clone()).await.map_err(|e| common::map_err(&shown, e))?;
        tokio::time::timeout(MIGRATION_TIMEOUT + ACQUIRE_TIMEOUT, migrate(&pool, &shown)).await.map_err(|_| {
            Error::Unavailable {
                url: shown.clone(),
                reason: format!("migrating got no answer from the database within {MIGRATION_TIMEOUT:?}"),
            }
        })??;
        // Helper connections: one held by LISTEN, one for coalesced NOTIFYs that
        // need not wait for a WAL flush (a lost hint costs one poll interval).
        let aux = PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_lazy_with(opts.options([("synchronous_commit", "off")]));
        let signal = Arc::new(Notify::new());
        let (notify, rx) = mpsc::channel(1);
        let (group, transitions) = mpsc::channel(group_commit::QUEUE);
        let mut tasks = vec![
            tokio::spawn(listen_task(aux.clone(), signal.clone(), shown.clone())),
            tokio::spawn(notify_task(aux, rx, shown.clone())),
        ];
        let queue: group_commit::Queue = Arc::new(tokio::sync::Mutex::new(transitions));
        for _ in 0..group_commit::COMMITTERS {
            tasks.push(tokio::spawn(group_commit::committer(pool.clone(), shown.clone(), queue.clone())));
        }
        let store = Self { url: shown.clone(), pool, signal, notify, group, tasks };
        Ok(Arc::new(Deadline::new(store, shown, CALL_TIMEOUT)))
    }

    fn err(&self, e: sqlx::Error) -> Error {
        common::map_err(&self.url, e)
    }

    fn fail(&self, f: Fail) -> Error {
        match f {
            Fail::Sql(e) => self.err(e),
            Fail::Store(e) => e,
        }
    }

    /// The (32-bit) ids of transactions running now in *other* databases of the
    /// cluster. They can never write this database's events, so the event
    /// stream need not wait for them; read before the stream's own snapshot is
    /// taken, so a transaction of this database is never among them (see
    /// docs/STORE.md, "The event stream"). Without the privilege to see other
    /// sessions the list is shorter, which only makes the stream wait longer.
    async fn other_database_xids(&self) -> Result<Vec<i64>> {
        sqlx::query_scalar(
            "SELECT backend_xid::text::bigint FROM pg_stat_activity \
             WHERE backend_xid IS NOT NULL AND datname IS DISTINCT FROM current_database()",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.err(e))
    }

    /// Wakes local waiters at once and other nodes through NOTIFY (coalesced).
    fn wake(&self) {
        self.signal.notify_waiters();
        let _ = self.notify.try_send(());
    }

    async fn begin(&self) -> TxResult<sqlx::Transaction<'static, sqlx::Postgres>> {
        Ok(self.pool.begin().await?)
    }

    /// Whether a failed attempt should be run again.
    fn retry(&self, f: &Fail, attempt: u32, what: &str) -> bool {
        let again = matches!(f, Fail::Sql(e) if common::is_retryable(e)) && attempt < TX_ATTEMPTS;
        if again {
            tracing::warn!(store = %self.url, attempt, what, "transaction hit a deadlock or serialization failure; retrying");
        }
        again
    }

    /// After a fenced write affected no row: NotFound if the job is missing, else
    /// FencedOut.
    async fn fenced_or_missing(conn: &mut PgConnection, job: JobId, epoch: i64) -> Fail {
        match sqlx::query("SELECT 1 FROM jobs WHERE id = $1").bind(job.0).fetch_optional(conn).await {
            Ok(None) => Fail::Store(Error::NotFound { what: format!("job {job}") }),
            Ok(Some(_)) => Fail::Store(Error::FencedOut { job, epoch }),
            Err(e) => Fail::Sql(e),
        }
    }

    async fn fetch_jobs(
        &self,
        q: sqlx::query::Query<'static, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> Result<Vec<Job>> {
        let rows = q.fetch_all(&self.pool).await.map_err(|e| self.err(e))?;
        rows.iter().map(job_from_row).collect()
    }

    /// At most one PR, selected with `pr_select!`.
    async fn fetch_pr(
        &self,
        q: sqlx::query::Query<'static, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> Result<Option<PullRequest>> {
        let row = q.fetch_optional(&self.pool).await.map_err(|e| self.err(e))?;
        row.as_ref().map(|r| pr_from_row(r)?.ok_or_else(missing_pr_item)).transpose()
    }

    /// One attempt at `record_push`: the fenced job update first (jobs before
    /// items, the lock order everywhere), then the item, then the events.
    async fn record_push_once(
        &self,
        job: JobId,
        epoch: i64,
        branch: &str,
        head_sha: &str,
        events: &[NewEvent],
        now: Timestamp,
    ) -> TxResult<()> {
        let mut tx = self.begin().await?;
        let item: Option<String> = sqlx::query_scalar(
            "UPDATE jobs SET heartbeat_at = $3 \
             WHERE id = $1 AND epoch = $2 AND status IN ('running', 'finishing') RETURNING item",
        )
        .bind(job.0)
        .bind(epoch)
        .bind(now.as_millis())
        .fetch_optional(&mut *tx)
        .await?;
        let Some(item) = item else { return Err(Self::fenced_or_missing(&mut tx, job, epoch).await) };
        sqlx::query("UPDATE items SET branch = $2, head_sha = $3, updated_at = $4 WHERE key = $1")
            .bind(&item)
            .bind(branch)
            .bind(head_sha)
            .bind(now.as_millis())
            .execute(&mut *tx)
            .await?;
        let item = key_of(&item)?;
        for ev in events {
            insert_event(&mut tx, &common::owner_event(ev, &item, job, epoch), now).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// One attempt at `open_pr`. The item's row is locked first (`FOR NO KEY
    /// UPDATE`: it conflicts with itself but not with the foreign key's check), so
    /// of concurrent calls for one item the later ones wait and then find the PR.
    async fn open_pr_once(&self, new: &NewPr, now: Timestamp) -> TxResult<(PullRequest, bool)> {
        let mut tx = self.begin().await?;
        let number: Option<i64> = sqlx::query_scalar("SELECT number FROM items WHERE key = $1 FOR NO KEY UPDATE")
            .bind(new.item.to_string())
            .fetch_optional(&mut *tx)
            .await?;
        let Some(number) = number else { return Err(Error::NotFound { what: format!("item {}", new.item) }.into()) };
        let existing = sqlx::query(concat!(pr_select!(), "WHERE p.item = $1"))
            .bind(new.item.to_string())
            .fetch_optional(&mut *tx)
            .await?;
        if let Some(row) = existing {
            let pr = pr_from_row(&row)?.ok_or_else(missing_pr_item)?;
            tx.commit().await?;
            return Ok((pr, false));
        }
        let pr = common::new_pr(new.clone(), number, now);
        let inserted = sqlx::query(
            "INSERT INTO prs (item, number, repo, title, body, branch, head_sha, url, state, merge_sha, checks, \
             created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, NULL, '{}'::jsonb, $10, $10)",
        )
        .bind(pr.item.to_string())
        .bind(pr.number)
        .bind(&pr.repo)
        .bind(&pr.title)
        .bind(&pr.body)
        .bind(&pr.branch)
        .bind(&pr.head_sha)
        .bind(&pr.url)
        .bind(&pr.state)
        .bind(now.as_millis())
        .execute(&mut *tx)
        .await;
        match inserted {
            Ok(_) => {}
            Err(e) if common::is_unique_violation(&e) => return Err(common::branch_taken(&pr.branch).into()),
            Err(e) => return Err(e.into()),
        }
        tx.commit().await?;
        Ok((pr, true))
    }

    /// One attempt at `update_pr`: the PR's row is locked, the rules of
    /// `common::apply_pr_update` applied, and the row written back.
    async fn update_pr_once(&self, item: &ItemKey, update: PrUpdate, now: Timestamp) -> TxResult<PullRequest> {
        let mut tx = self.begin().await?;
        let row = sqlx::query(concat!(pr_select!(), "WHERE p.item = $1 FOR UPDATE"))
            .bind(item.to_string())
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else { return Err(common::no_pr(item).into()) };
        let mut pr = pr_from_row(&row)?.ok_or_else(missing_pr_item)?;
        common::apply_pr_update(&mut pr, update, now)?;
        sqlx::query(
            "UPDATE prs SET head_sha = $2, body = $3, state = $4, merge_sha = $5, checks = $6, updated_at = $7 \
             WHERE item = $1",
        )
        .bind(item.to_string())
        .bind(&pr.head_sha)
        .bind(&pr.body)
        .bind(&pr.state)
        .bind(&pr.merge_sha)
        .bind(Json(common::pr_checks_json(&pr.checks)?))
        .bind(now.as_millis())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(pr)
    }

    async fn create_item_once(&self, new: &NewItem, attempts: &str, now: Timestamp) -> TxResult<ItemKey> {
        let first_attempt = new.state.attempts_at(&new.state.stage).max(1);
        let mut tx = self.begin().await?;
        let number: i64 = sqlx::query_scalar(
            "INSERT INTO key_counters (prefix, last) VALUES ($1, 1) \
             ON CONFLICT (prefix) DO UPDATE SET last = key_counters.last + 1 RETURNING last",
        )
        .bind(new.prefix.as_str())
        .fetch_one(&mut *tx)
        .await?;
        let key = common::item_key(&new.prefix, number)?;
        sqlx::query(
            "INSERT INTO items (key, prefix, number, repo, kind, title, body, track, stage, status, version, \
             attempts, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $13)",
        )
        .bind(key.to_string())
        .bind(new.prefix.as_str())
        .bind(number)
        .bind(&new.repo)
        .bind(new.kind.as_str())
        .bind(&new.title)
        .bind(&new.body)
        .bind(new.state.track.as_str())
        .bind(new.state.stage.as_str())
        .bind(new.state.status.as_str())
        .bind(new.state.version)
        .bind(attempts)
        .bind(now.as_millis())
        .execute(&mut *tx)
        .await?;
        let mut created = NewEvent::new(key.clone(), EventKind::ItemCreated);
        created.to = Some(new.state.stage.to_string());
        created.data = json!({ "repo": new.repo, "kind": new.kind, "track": new.state.track });
        insert_event(&mut tx, &created, now).await?;
        enqueue(&mut tx, &key, new.state.stage.as_str(), first_attempt, now).await?;
        // Transactional: delivered when (and only if) the item commits.
        sqlx::query("SELECT pg_notify($1, $2)").bind(CHANNEL).bind(key.to_string()).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(key)
    }

    async fn claim_once(&self, node: &str, limit: u32, now: Timestamp, lease_ttl: Duration) -> TxResult<Vec<Job>> {
        let rows = sqlx::query(concat!(
            "WITH picked AS MATERIALIZED ( \
                SELECT id FROM jobs WHERE status = 'queued' ORDER BY queued_at, id LIMIT $4 \
                FOR UPDATE SKIP LOCKED \
             ), claimed AS ( \
                UPDATE jobs j SET status = 'running', owner = $1, epoch = j.epoch + 1, lease_expires_at = $2, \
                heartbeat_at = $3, started_at = $3 FROM picked WHERE j.id = picked.id RETURNING ",
            job_columns_j!(),
            " ), marked AS ( \
                UPDATE items SET status = 'running', updated_at = $3 WHERE key IN (SELECT item FROM claimed) \
             ) SELECT ",
            job_columns!(),
            " FROM claimed"
        ))
        .bind(node)
        .bind(now.add(lease_ttl).as_millis())
        .bind(now.as_millis())
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        let mut jobs = rows.iter().map(job_from_row).collect::<Result<Vec<_>>>()?;
        jobs.sort_by_key(|j| (j.queued_at, j.id));
        Ok(jobs)
    }

    /// Runs one owner write: a single statement that updates the job only at
    /// `epoch` and appends the event from the updated row (binds: $1 job, $2 epoch,
    /// $3 now, $4 kind, $5 reason, $6 data, then the statement's own). One round
    /// trip, atomic without an explicit transaction.
    async fn owner_write(
        &self,
        job: JobId,
        epoch: i64,
        q: sqlx::query::Query<'static, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> Result<()> {
        if q.fetch_optional(&self.pool).await.map_err(|e| self.err(e))?.is_some() {
            return Ok(());
        }
        let mut conn = self.pool.acquire().await.map_err(|e| self.err(e))?;
        Err(self.fail(Self::fenced_or_missing(&mut conn, job, epoch).await))
    }

    #[allow(clippy::too_many_arguments)]
    async fn take_over_once(
        &self,
        job: JobId,
        expected_epoch: i64,
        node: &str,
        now: Timestamp,
        lease_ttl: Duration,
        when: TakeOver,
        reason: &str,
    ) -> TxResult<Option<Job>> {
        let mut tx = self.begin().await?;
        let previous: Option<Option<String>> = sqlx::query_scalar("SELECT owner FROM jobs WHERE id = $1 FOR UPDATE")
            .bind(job.0)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(previous) = previous else { return Err(Error::NotFound { what: format!("job {job}") }.into()) };
        let row = sqlx::query(concat!(
            "UPDATE jobs SET owner = $3, epoch = epoch + 1, lease_expires_at = $4, heartbeat_at = $5 \
             WHERE id = $1 AND epoch = $2 AND status IN ('running', 'finishing') \
               AND ($6 OR lease_expires_at IS NULL OR lease_expires_at < $5) RETURNING ",
            job_columns!()
        ))
        .bind(job.0)
        .bind(expected_epoch)
        .bind(node)
        .bind(now.add(lease_ttl).as_millis())
        .bind(now.as_millis())
        .bind(when == TakeOver::Force)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            tx.rollback().await?;
            return Ok(None);
        };
        let taken = job_from_row(&row)?;
        let mut ev = NewEvent::new(taken.item.clone(), EventKind::ReaperTookOver);
        ev.job = Some(job);
        ev.epoch = Some(taken.epoch);
        ev.from = previous;
        ev.to = Some(node.to_owned());
        ev.reason = Some(reason.to_owned());
        ev.data = json!({ "previous_epoch": expected_epoch, "status": taken.status });
        insert_event(&mut tx, &ev, now).await?;
        tx.commit().await?;
        Ok(Some(taken))
    }

    async fn release_once(&self, job: JobId, epoch: i64, reason: &str, now: Timestamp) -> TxResult<()> {
        let mut tx = self.begin().await?;
        let row = sqlx::query(
            "UPDATE jobs SET status = 'queued', owner = NULL, epoch = epoch + 1, lease_expires_at = NULL, \
             heartbeat_at = NULL, pid = NULL, pgid = NULL, proc_start = NULL, started_at = NULL, \
             finished_at = NULL, exit_code = NULL, log_path = NULL, reason = $3 \
             WHERE id = $1 AND epoch = $2 AND status IN ('running', 'finishing') RETURNING item, epoch",
        )
        .bind(job.0)
        .bind(epoch)
        .bind(reason)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else { return Err(Self::fenced_or_missing(&mut tx, job, epoch).await) };
        let item: String = row.try_get("item")?;
        let new_epoch: i64 = row.try_get("epoch")?;
        sqlx::query("UPDATE items SET status = 'queued', updated_at = $2 WHERE key = $1")
            .bind(&item)
            .bind(now.as_millis())
            .execute(&mut *tx)
            .await?;
        let mut ev = NewEvent::new(key_of(&item)?, EventKind::JobReleased);
        ev.job = Some(job);
        ev.epoch = Some(new_epoch);
        ev.reason = Some(reason.to_owned());
        insert_event(&mut tx, &ev, now).await?;
        tx.commit().await?;
        Ok(())
    }

    /// One attempt at `register_node`. The id's row is locked (`FOR UPDATE`) before
    /// it is judged, so a concurrent registration waits and then sees the winner's
    /// row. With no row yet, racing inserts meet on the primary key: the loser's
    /// `ON CONFLICT DO NOTHING` waits for the winner to commit and inserts nothing,
    /// and its next look finds the winner's row (READ COMMITTED takes a new
    /// snapshot per statement; rows are never deleted), so two looks suffice.
    async fn register_node_once(
        &self,
        reg: &NodeRegistration,
        now: Timestamp,
        live_for: Duration,
    ) -> TxResult<Option<NodeRecord>> {
        const LOOKS: usize = 2;
        let mut tx = self.begin().await?;
        for _ in 0..LOOKS {
            let previous = sqlx::query(concat!("SELECT ", node_columns!(), " FROM nodes WHERE id = $1 FOR UPDATE"))
                .bind(&reg.id)
                .fetch_optional(&mut *tx)
                .await?
                .as_ref()
                .map(node_from_row)
                .transpose()?;
            let Some(previous) = previous else {
                let inserted = sqlx::query(
                    "INSERT INTO nodes (id, incarnation, host, pid, data_dir, started_at, last_seen, stopped_at, \
                     clock_offset_ms) VALUES ($1, $2, $3, $4, $5, $6, $6, NULL, 0) ON CONFLICT (id) DO NOTHING",
                )
                .bind(&reg.id)
                .bind(&reg.incarnation)
                .bind(&reg.host)
                .bind(i64::from(reg.pid))
                .bind(&reg.data_dir)
                .bind(now.as_millis())
                .execute(&mut *tx)
                .await?;
                if inserted.rows_affected() == 1 {
                    tx.commit().await?;
                    return Ok(None);
                }
                continue;
            };
            if common::node_is_live(&previous, now, live_for) {
                tx.rollback().await?;
                return Err(common::node_id_in_use(&previous).into());
            }
            sqlx::query(
                "UPDATE nodes SET incarnation = $2, host = $3, pid = $4, data_dir = $5, started_at = $6, \
                 last_seen = $6, stopped_at = NULL, clock_offset_ms = 0 WHERE id = $1",
            )
            .bind(&reg.id)
            .bind(&reg.incarnation)
            .bind(&reg.host)
            .bind(i64::from(reg.pid))
            .bind(&reg.data_dir)
            .bind(now.as_millis())
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            return Ok(Some(previous));
        }
        Err(Error::Database(format!(
            "registering node {}: the id's row was neither insertable nor readable after {LOOKS} looks",
            reg.id
        ))
        .into())
    }

    async fn commit_once(&self, commit: &TransitionCommit, attempts: &str, now: Timestamp) -> TxResult<CommitOutcome> {
        if !commit.cancel_active_jobs {
            return commit_one_statement(&self.pool, commit, attempts, now).await;
        }
        let key = commit.item.to_string();
        let mut tx = self.begin().await?;

        // 1. The committer must still own its job; ending it is the fenced write.
        if let Some(job) = &commit.job {
            let end = job.run_end.clone().unwrap_or_default();
            let done = sqlx::query(
                "UPDATE jobs SET status = $3, reason = COALESCE($4, reason), verdict = COALESCE($5, verdict), \
                 finished_at = COALESCE(finished_at, $6), heartbeat_at = $6, lease_expires_at = NULL, \
                 exit_code = COALESCE($8, exit_code), usage = COALESCE($9, usage), pid = COALESCE($10, pid), \
                 pgid = COALESCE($11, pgid), proc_start = COALESCE($12, proc_start), \
                 log_path = COALESCE($13, log_path) \
                 WHERE id = $1 AND epoch = $2 AND item = $7 AND status IN ('running', 'finishing')",
            )
            .bind(job.id.0)
            .bind(job.epoch)
            .bind(job.status.as_str())
            .bind(job.reason.as_deref())
            .bind(job.verdict.as_ref().map(Json))
            .bind(now.as_millis())
            .bind(&key)
            .bind_run_end(&end)
            .execute(&mut *tx)
            .await?;
            if done.rows_affected() != 1 {
                let owner_item: Option<String> = sqlx::query_scalar("SELECT item FROM jobs WHERE id = $1")
                    .bind(job.id.0)
                    .fetch_optional(&mut *tx)
                    .await?;
                tx.rollback().await?;
                return Ok(common::job_miss(commit, job.id, owner_item)?);
            }
        }

        // Lock order is jobs before items everywhere (claims lock the job, then its
        // item), so the jobs a cancel will end are locked before the item.
        if commit.cancel_active_jobs {
            sqlx::query(
                "SELECT id FROM jobs WHERE item = $1 AND status IN ('queued', 'running', 'finishing') \
                 ORDER BY id FOR UPDATE",
            )
            .bind(&key)
            .fetch_all(&mut *tx)
            .await?;
        }

        // 2. The item must still be at the version the decision was made from.
        let done = sqlx::query(
            "UPDATE items SET track = $3, stage = $4, status = $5, version = $6, attempts = $7, updated_at = $8 \
             WHERE key = $1 AND version = $2",
        )
        .bind(&key)
        .bind(commit.expected_version)
        .bind(commit.next.track.as_str())
        .bind(commit.next.stage.as_str())
        .bind(commit.next.status.as_str())
        .bind(commit.next.version)
        .bind(attempts)
        .bind(now.as_millis())
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            let exists =
                sqlx::query("SELECT 1 FROM items WHERE key = $1").bind(&key).fetch_optional(&mut *tx).await?.is_some();
            tx.rollback().await?;
            return Ok(common::item_miss(commit, exists)?);
        }

        // 3. Operator actions end whatever else is in flight, fencing its owner.
        if commit.cancel_active_jobs {
            let reason = common::cancel_reason(commit);
            let cancelled = sqlx::query(
                "UPDATE jobs SET status = 'cancelled', epoch = epoch + 1, lease_expires_at = NULL, \
                 finished_at = COALESCE(finished_at, $2), reason = $3 \
                 WHERE item = $1 AND status IN ('queued', 'running', 'finishing') RETURNING id, epoch",
            )
            .bind(&key)
            .bind(now.as_millis())
            .bind(&reason)
            .fetch_all(&mut *tx)
            .await?;
            for row in cancelled {
                let mut ev = NewEvent::new(commit.item.clone(), EventKind::JobCancelled);
                ev.job = Some(JobId(row.try_get("id")?));
                ev.epoch = Some(row.try_get("epoch")?);
                ev.reason = Some(reason.clone());
                insert_event(&mut tx, &ev, now).await?;
            }
        }

        // 4. The caller's events, owned by this item and job.
        for ev in &common::commit_events(commit) {
            insert_event(&mut tx, ev, now).await?;
        }

        // 5. The next job.
        let enqueued = match &commit.enqueue {
            Some((stage, attempt)) => Some(enqueue(&mut tx, &commit.item, stage.as_str(), *attempt, now).await?),
            None => None,
        };
        tx.commit().await?;
        Ok(CommitOutcome::Applied { enqueued })
    }
}

/// A commit without cancels as one statement: end the job at its epoch, move
/// the item from its expected version, append the events in order, queue the
/// next job and its `job.queued`. Each step reads the previous one's output, so
/// a fenced job writes nothing; a moved version after a matched job aborts the
/// whole statement through `orch_version_conflict()` (SQLSTATE OR409).
async fn commit_one_statement(
    pool: &PgPool,
    commit: &TransitionCommit,
    attempts: &str,
    now: Timestamp,
) -> TxResult<CommitOutcome> {
    let key = commit.item.to_string();
    let job = commit.job.as_ref();
    let end = job.and_then(|j| j.run_end.clone()).unwrap_or_default();
    // A claimed next job makes the item `running`, as a claim would.
    let status = if commit.claim_next.is_some() { ItemStatus::Running } else { commit.next.status };
    let events = common::commit_events(commit);
    let row = sqlx::query(
        "WITH j AS ( \
            UPDATE jobs SET status = $3, reason = COALESCE($4, reason), verdict = COALESCE($5, verdict), \
            finished_at = COALESCE(finished_at, $6), heartbeat_at = $6, lease_expires_at = NULL, \
            exit_code = COALESCE($25, exit_code), usage = COALESCE($26, usage), pid = COALESCE($27, pid), \
            pgid = COALESCE($28, pgid), proc_start = COALESCE($29, proc_start), \
            log_path = COALESCE($30, log_path) \
            WHERE $13 AND id = $1 AND epoch = $2 AND item = $7 AND status IN ('running', 'finishing') \
            RETURNING id \
         ), i AS ( \
            UPDATE items SET track = $8, stage = $9, status = $10, version = $11, attempts = $12, \
            updated_at = $6 WHERE key = $7 AND version = $14 AND (NOT $13 OR EXISTS (SELECT 1 FROM j)) \
            RETURNING key \
         ), guard AS ( \
            SELECT orch_version_conflict() FROM j WHERE NOT EXISTS (SELECT 1 FROM i) \
         ), ev AS ( \
            INSERT INTO events (at, item, job, kind, from_, to_, epoch, reason, data) \
            SELECT $6, i.key, e.job, e.kind, e.from_, e.to_, e.epoch, e.reason, e.data \
            FROM i, UNNEST($15::BIGINT[], $16::TEXT[], $17::TEXT[], $18::TEXT[], $19::BIGINT[], \
                           $20::TEXT[], $21::JSONB[]) WITH ORDINALITY \
                    AS e(job, kind, from_, to_, epoch, reason, data, ord) \
            ORDER BY e.ord RETURNING seq \
         ), nj AS ( \
            INSERT INTO jobs (item, stage, attempt, status, epoch, queued_at, owner, lease_expires_at, \
                              heartbeat_at, started_at) \
            SELECT i.key, $22, $23, CASE WHEN $31::TEXT IS NULL THEN 'queued' ELSE 'running' END, \
                   CASE WHEN $31::TEXT IS NULL THEN 0 ELSE 1 END, $6, $31, $32, \
                   CASE WHEN $31::TEXT IS NULL THEN NULL ELSE $6 END, \
                   CASE WHEN $31::TEXT IS NULL THEN NULL ELSE $6 END \
            FROM i WHERE $22::TEXT IS NOT NULL \
            RETURNING id, item \
         ), nq AS ( \
            INSERT INTO events (at, item, job, kind, to_, epoch, data) \
            SELECT $6, nj.item, nj.id, $24, $22, 0, jsonb_build_object('attempt', $23) \
            FROM nj, (SELECT COUNT(*) FROM ev) AS after_events \
            RETURNING seq \
         ) SELECT (SELECT COUNT(*) FROM j) AS job_rows, (SELECT COUNT(*) FROM i) AS item_rows, \
                  (SELECT id FROM nj) AS enqueued, (SELECT COUNT(*) FROM guard) AS guarded, \
                  (SELECT COUNT(*) FROM nq) AS queued_events",
    )
    .bind(job.map_or(0, |j| j.id.0))
    .bind(job.map_or(0, |j| j.epoch))
    .bind(job.map(|j| j.status.as_str()))
    .bind(job.and_then(|j| j.reason.clone()))
    .bind(job.and_then(|j| j.verdict.as_ref()).map(Json))
    .bind(now.as_millis())
    .bind(&key)
    .bind(commit.next.track.as_str())
    .bind(commit.next.stage.as_str())
    .bind(status.as_str())
    .bind(commit.next.version)
    .bind(attempts)
    .bind(job.is_some())
    .bind(commit.expected_version)
    .bind(events.iter().map(|e| e.job.map(|j| j.0)).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.from.clone()).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.to.clone()).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.epoch).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.reason.clone()).collect::<Vec<_>>())
    .bind(events.iter().map(|e| Json(e.data.clone())).collect::<Vec<_>>())
    .bind(commit.enqueue.as_ref().map(|(stage, _)| stage.as_str()))
    .bind(commit.enqueue.as_ref().map_or(0, |(_, attempt)| i64::from(*attempt)))
    .bind(EventKind::JobQueued.as_str())
    .bind_run_end(&end)
    .bind(commit.claim_next.as_ref().map(|c| c.node.as_str()))
    .bind(commit.claim_next.as_ref().map(|c| now.add(c.lease_ttl).as_millis()))
    .fetch_one(pool)
    .await;
    let row = match row {
        Ok(row) => row,
        Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("OR409") => {
            return Ok(CommitOutcome::Conflict);
        }
        Err(e) if common::is_unique_violation(&e) => {
            return Err(common::second_active_job(&commit.item).into());
        }
        Err(e) => return Err(e.into()),
    };
    let job_rows: i64 = row.try_get("job_rows")?;
    let item_rows: i64 = row.try_get("item_rows")?;
    if let Some(job) = job
        && job_rows != 1
    {
        let owner_item: Option<String> =
            sqlx::query_scalar("SELECT item FROM jobs WHERE id = $1").bind(job.id.0).fetch_optional(pool).await?;
        return Ok(common::job_miss(commit, job.id, owner_item)?);
    }
    if item_rows != 1 {
        let exists = sqlx::query("SELECT 1 FROM items WHERE key = $1").bind(&key).fetch_optional(pool).await?.is_some();
        return Ok(common::item_miss(commit, exists)?);
    }
    let enqueued: Option<i64> = row.try_get("enqueued")?;
    Ok(CommitOutcome::Applied { enqueued: enqueued.map(JobId) })
}

/// Binds a `RunEnd`'s six job columns in the order both commit paths declare
/// them: exit code, usage, pid, pgid, process start, log path.
trait BindRunEnd<'q> {
    fn bind_run_end(self, end: &'q crate::RunEnd) -> Self;
}

impl<'q> BindRunEnd<'q> for sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    fn bind_run_end(self, end: &'q crate::RunEnd) -> Self {
        let run = end.run.as_ref();
        self.bind(end.exit_code.map(i64::from))
            .bind(end.usage.as_ref().map(|u| Json(json!(u))))
            .bind(run.map(|r| i64::from(r.pid)))
            .bind(run.map(|r| i64::from(r.pgid)))
            .bind(run.and_then(|r| r.proc_start))
            .bind(run.map(|r| r.log_path.as_str()))
    }
}

async fn insert_event(conn: &mut PgConnection, ev: &NewEvent, now: Timestamp) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO events (at, item, job, kind, from_, to_, epoch, reason, data) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(now.as_millis())
    .bind(ev.item.to_string())
    .bind(ev.job.map(|j| j.0))
    .bind(ev.kind.as_str())
    .bind(ev.from.as_deref())
    .bind(ev.to.as_deref())
    .bind(ev.epoch)
    .bind(ev.reason.as_deref())
    .bind(Json(&ev.data))
    .execute(conn)
    .await
    .map(|_| ())
}

/// Queues a job and appends its `job.queued` in one statement; returns the new id.
async fn enqueue(
    conn: &mut PgConnection,
    item: &ItemKey,
    stage: &str,
    attempt: u32,
    now: Timestamp,
) -> TxResult<JobId> {
    let id = sqlx::query_scalar::<_, i64>(
        "WITH nj AS ( \
            INSERT INTO jobs (item, stage, attempt, status, epoch, queued_at) \
            VALUES ($1, $2, $3, 'queued', 0, $4) RETURNING id, item \
         ) INSERT INTO events (at, item, job, kind, to_, epoch, data) \
         SELECT $4, nj.item, nj.id, $5, $2, 0, $6 FROM nj RETURNING job",
    )
    .bind(item.to_string())
    .bind(stage)
    .bind(i64::from(attempt))
    .bind(now.as_millis())
    .bind(EventKind::JobQueued.as_str())
    .bind(Json(json!({ "attempt": attempt })))
    .fetch_one(&mut *conn)
    .await
    .map_err(|e| {
        if common::is_unique_violation(&e) { Fail::Store(common::second_active_job(item)) } else { Fail::Sql(e) }
    })?;
    Ok(JobId(id))
}

fn key_of(s: &str) -> Result<ItemKey> {
    ItemKey::from_str(s).map_err(|e| Error::Corrupt { table: "jobs", reason: format!("column item: {e}") })
}

/// Retries `$body` (an expression producing `TxResult<T>`) on deadlock or
/// serialization failure, then maps the failure to `Error`.
macro_rules! with_retry {
    ($self:ident, $what:literal, $body:expr) => {{
        let mut attempt = 1;
        loop {
            match $body {
                Ok(v) => break Ok(v),
                Err(f) if $self.retry(&f, attempt, $what) => attempt += 1,
                Err(f) => break Err($self.fail(f)),
            }
        }
    }};
}

#[async_trait]
impl Store for PgStore {
    fn backend(&self) -> Backend {
        Backend::Postgres
    }

    fn work_signal(&self) -> Arc<Notify> {
        self.signal.clone()
    }

    async fn create_item(&self, new: NewItem, now: Timestamp) -> Result<Item> {
        let attempts = common::attempts_json(&new.state.attempts)?;
        let key: ItemKey = with_retry!(self, "create_item", self.create_item_once(&new, &attempts, now).await)?;
        self.signal.notify_waiters();
        Ok(new.into_item(key, now))
    }

    async fn get_item(&self, key: &ItemKey) -> Result<Option<Item>> {
        let row = sqlx::query(concat!(item_select!(), "WHERE i.key = $1"))
            .bind(key.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        row.as_ref().map(item_from_row).transpose()
    }

    async fn list_items(&self, filter: &ItemFilter, page: Page) -> Result<Vec<Item>> {
        let rows = sqlx::query(concat!(
            item_select!(),
            "WHERE ($1::TEXT IS NULL OR i.repo = $1) AND ($2::TEXT IS NULL OR i.stage = $2) \
             AND ($3::TEXT IS NULL OR i.status = $3) AND ($6::TEXT IS NULL OR i.kind = $6) \
             AND ($7::TEXT IS NULL OR i.prefix > $7 OR (i.prefix = $7 AND i.number > $8)) \
             ORDER BY i.prefix, i.number LIMIT $4 OFFSET $5"
        ))
        .bind(filter.repo.as_deref())
        .bind(filter.stage.as_ref().map(|s| s.as_str()))
        .bind(filter.status.map(|s| s.as_str()))
        .bind(i64::from(page.limit))
        .bind(i64::from(page.offset))
        .bind(filter.kind.map(|k| k.as_str()))
        .bind(filter.after.as_ref().map(|k| k.prefix().as_str()))
        .bind(filter.after.as_ref().map(|k| i64::try_from(k.number().get()).unwrap_or(i64::MAX)))
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        rows.iter().map(item_from_row).collect()
    }

    async fn set_branch(&self, key: &ItemKey, branch: &str, now: Timestamp) -> Result<()> {
        let done = sqlx::query("UPDATE items SET branch = $2, updated_at = $3 WHERE key = $1")
            .bind(key.to_string())
            .bind(branch)
            .bind(now.as_millis())
            .execute(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        if done.rows_affected() == 1 { Ok(()) } else { Err(Error::NotFound { what: format!("item {key}") }) }
    }

    async fn get_job(&self, id: JobId) -> Result<Option<Job>> {
        let q = sqlx::query(concat!("SELECT ", job_columns!(), " FROM jobs WHERE id = $1")).bind(id.0);
        Ok(self.fetch_jobs(q).await?.pop())
    }

    async fn jobs_for_item(&self, key: &ItemKey) -> Result<Vec<Job>> {
        let q = sqlx::query(concat!("SELECT ", job_columns!(), " FROM jobs WHERE item = $1 ORDER BY id"))
            .bind(key.to_string());
        self.fetch_jobs(q).await
    }

    async fn active_job(&self, key: &ItemKey) -> Result<Option<Job>> {
        let q = sqlx::query(concat!(
            "SELECT ",
            job_columns!(),
            " FROM jobs WHERE item = $1 AND status IN ('queued', 'running', 'finishing')"
        ))
        .bind(key.to_string());
        Ok(self.fetch_jobs(q).await?.pop())
    }

    async fn claim_jobs(&self, node: &str, limit: u32, now: Timestamp, lease_ttl: Duration) -> Result<Vec<Job>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        with_retry!(self, "claim_jobs", self.claim_once(node, limit, now, lease_ttl).await)
    }

    async fn renew_leases(
        &self,
        node: &str,
        jobs: &[(JobId, i64)],
        now: Timestamp,
        lease_ttl: Duration,
    ) -> Result<Vec<JobId>> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<i64> = jobs.iter().map(|(id, _)| id.0).collect();
        let epochs: Vec<i64> = jobs.iter().map(|(_, e)| *e).collect();
        let renewed: Vec<i64> = sqlx::query_scalar(
            "UPDATE jobs SET lease_expires_at = $3, heartbeat_at = $2 \
             FROM UNNEST($1::BIGINT[], $5::BIGINT[]) AS r(id, epoch) \
             WHERE jobs.id = r.id AND jobs.epoch = r.epoch AND jobs.owner = $4 \
               AND jobs.status IN ('running', 'finishing') \
             RETURNING jobs.id",
        )
        .bind(&ids)
        .bind(now.as_millis())
        .bind(now.add(lease_ttl).as_millis())
        .bind(node)
        .bind(&epochs)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        let mut renewed: Vec<JobId> = renewed.into_iter().map(JobId).collect();
        renewed.sort();
        renewed.dedup();
        Ok(renewed)
    }

    async fn record_started(&self, job: JobId, epoch: i64, run: RunInfo, now: Timestamp) -> Result<()> {
        let data = common::started_data(&run);
        let q = sqlx::query(
            "WITH j AS ( \
                UPDATE jobs SET pid = $7, pgid = $8, proc_start = $9, log_path = $10, heartbeat_at = $3 \
                WHERE id = $1 AND epoch = $2 AND status = 'running' RETURNING item \
             ) INSERT INTO events (at, item, job, kind, epoch, reason, data) \
             SELECT $3, j.item, $1, $4, $2, $5, $6 FROM j RETURNING seq",
        )
        .bind(job.0)
        .bind(epoch)
        .bind(now.as_millis())
        .bind(EventKind::JobStarted.as_str())
        .bind(None::<String>)
        .bind(Json(data))
        .bind(i64::from(run.pid))
        .bind(i64::from(run.pgid))
        .bind(run.proc_start)
        .bind(run.log_path);
        self.owner_write(job, epoch, q).await
    }

    async fn record_finished(&self, job: JobId, epoch: i64, exit: ExitInfo, now: Timestamp) -> Result<()> {
        let q = sqlx::query(
            "WITH j AS ( \
                UPDATE jobs SET status = 'finishing', finished_at = $3, exit_code = $7, reason = $5, \
                heartbeat_at = $3, verdict = COALESCE($8, verdict), usage = COALESCE($9, usage) \
                WHERE id = $1 AND epoch = $2 AND status = 'running' RETURNING item \
             ) INSERT INTO events (at, item, job, kind, epoch, reason, data) \
             SELECT $3, j.item, $1, $4, $2, $5, $6 FROM j RETURNING seq",
        )
        .bind(job.0)
        .bind(epoch)
        .bind(now.as_millis())
        .bind(EventKind::JobFinished.as_str())
        .bind(exit.reason.clone())
        .bind(Json(common::finished_data(&exit)))
        .bind(exit.exit_code.map(i64::from))
        .bind(exit.verdict.map(Json))
        .bind(exit.usage.map(|u| Json(json!(u))));
        self.owner_write(job, epoch, q).await
    }

    async fn record_gate_result(&self, job: JobId, epoch: i64, result: GateResult, now: Timestamp) -> Result<()> {
        let kind = if result.passed { EventKind::GatePassed } else { EventKind::GateFailed };
        let data = common::gate_event_data(&result);
        let q = sqlx::query(
            "WITH j AS ( \
                UPDATE jobs SET heartbeat_at = $3 \
                WHERE id = $1 AND epoch = $2 AND status IN ('running', 'finishing') RETURNING item \
             ), g AS ( \
                INSERT INTO gate_results (job, epoch, gate, passed, exit_code, metric, duration_ms, reason, at, sha) \
                SELECT $1, $2, $7, $8, $9, $10, $11, $5, $3, $12 FROM j \
             ) INSERT INTO events (at, item, job, kind, epoch, reason, data) \
             SELECT $3, j.item, $1, $4, $2, $5, $6 FROM j RETURNING seq",
        )
        .bind(job.0)
        .bind(epoch)
        .bind(now.as_millis())
        .bind(kind.as_str())
        .bind(result.reason)
        .bind(Json(data))
        .bind(result.gate)
        .bind(result.passed)
        .bind(result.exit_code.map(i64::from))
        .bind(result.metric)
        .bind(result.duration_ms)
        .bind(result.sha);
        self.owner_write(job, epoch, q).await
    }

    async fn gate_results(&self, job: JobId) -> Result<Vec<GateResult>> {
        let rows = sqlx::query(
            "SELECT gate, passed, exit_code, metric, duration_ms, reason, sha FROM gate_results \
             WHERE job = $1 ORDER BY id",
        )
        .bind(job.0)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        rows.iter().map(gate_result_from_row).collect()
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
        common::require("a pushed branch", branch)?;
        common::require("a pushed SHA", head_sha)?;
        with_retry!(self, "record_push", self.record_push_once(job, epoch, branch, head_sha, events, now).await)
    }

    async fn open_pr(&self, new: NewPr, now: Timestamp) -> Result<(PullRequest, bool)> {
        common::validate_new_pr(&new)?;
        with_retry!(self, "open_pr", self.open_pr_once(&new, now).await)
    }

    async fn update_pr(&self, item: &ItemKey, update: PrUpdate, now: Timestamp) -> Result<PullRequest> {
        with_retry!(self, "update_pr", self.update_pr_once(item, update.clone(), now).await)
    }

    async fn get_pr(&self, item: &ItemKey) -> Result<Option<PullRequest>> {
        self.fetch_pr(sqlx::query(concat!(pr_select!(), "WHERE p.item = $1")).bind(item.to_string())).await
    }

    async fn list_prs(&self, repo: Option<&str>, state: Option<&str>) -> Result<Vec<PullRequest>> {
        if let Some(state) = state {
            common::check_pr_state(state)?;
        }
        let rows = sqlx::query(concat!(
            pr_select!(),
            "JOIN items i ON i.key = p.item WHERE ($1::TEXT IS NULL OR p.repo = $1) \
             AND ($2::TEXT IS NULL OR p.state = $2) ORDER BY i.prefix, i.number"
        ))
        .bind(repo)
        .bind(state)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        rows.iter().map(|r| pr_from_row(r)?.ok_or_else(missing_pr_item)).collect()
    }

    async fn find_pr_by_branch(&self, branch: &str) -> Result<Option<PullRequest>> {
        self.fetch_pr(sqlx::query(concat!(pr_select!(), "WHERE p.branch = $1")).bind(branch.to_owned())).await
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
        with_retry!(
            self,
            "take_over",
            self.take_over_once(job, expected_epoch, node, now, lease_ttl, when, reason).await
        )
    }

    async fn release_job(&self, job: JobId, epoch: i64, reason: &str, now: Timestamp) -> Result<()> {
        with_retry!(self, "release_job", self.release_once(job, epoch, reason, now).await)?;
        self.wake();
        Ok(())
    }

    async fn commit_transition(&self, commit: TransitionCommit, now: Timestamp) -> Result<CommitOutcome> {
        common::validate_commit(&commit)?;
        let attempts = common::attempts_json(&commit.next.attempts)?;
        // A job claimed by the commit is nobody else's: no one needs waking for it.
        let queues = commit.claim_next.is_none();
        let out = if commit.cancel_active_jobs {
            with_retry!(self, "commit_transition", self.commit_once(&commit, &attempts, now).await)?
        } else {
            let (reply, answer) = tokio::sync::oneshot::channel();
            match self.group.try_send(group_commit::Pending { commit, attempts, now, reply }) {
                Ok(()) => answer.await.map_err(|_| {
                    Error::Database("the group committer stopped before answering; the transition may or may not have been committed".into())
                })??,
                // A full queue (or a stopped committer): commit this one alone.
                Err(mpsc::error::TrySendError::Full(p) | mpsc::error::TrySendError::Closed(p)) => {
                    group_commit::one(&self.pool, &self.url, &p).await?
                }
            }
        };
        if queues && matches!(out, CommitOutcome::Applied { enqueued: Some(_) }) {
            self.wake();
        }
        Ok(out)
    }

    async fn append_events(&self, events: &[NewEvent], now: Timestamp) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await.map_err(|e| self.err(e))?;
        for ev in events {
            insert_event(&mut tx, ev, now).await.map_err(|e| self.err(e))?;
        }
        tx.commit().await.map_err(|e| self.err(e))
    }

    async fn expired_running(&self, now: Timestamp, limit: u32) -> Result<Vec<Job>> {
        let q = sqlx::query(concat!(
            "SELECT ",
            job_columns!(),
            " FROM jobs WHERE status = 'running' AND lease_expires_at < $1 ORDER BY lease_expires_at, id LIMIT $2"
        ))
        .bind(now.as_millis())
        .bind(i64::from(limit));
        self.fetch_jobs(q).await
    }

    async fn stale_finishing(&self, finished_before: Timestamp, limit: u32) -> Result<Vec<Job>> {
        let q = sqlx::query(concat!(
            "SELECT ",
            job_columns!(),
            " FROM jobs WHERE status = 'finishing' AND finished_at < $1 ORDER BY finished_at, id LIMIT $2"
        ))
        .bind(finished_before.as_millis())
        .bind(i64::from(limit));
        self.fetch_jobs(q).await
    }

    async fn overdue(&self, started_before: Timestamp, limit: u32) -> Result<Vec<Job>> {
        let q = sqlx::query(concat!(
            "SELECT ",
            job_columns!(),
            " FROM jobs WHERE status IN ('running', 'finishing') AND started_at < $1 ORDER BY started_at, id LIMIT $2"
        ))
        .bind(started_before.as_millis())
        .bind(i64::from(limit));
        self.fetch_jobs(q).await
    }

    async fn jobs_owned_by(&self, node: &str) -> Result<Vec<Job>> {
        let q = sqlx::query(concat!(
            "SELECT ",
            job_columns!(),
            " FROM jobs WHERE status IN ('running', 'finishing') AND owner = $1 ORDER BY id"
        ))
        .bind(node.to_owned());
        self.fetch_jobs(q).await
    }

    async fn events_for_item(&self, key: &ItemKey) -> Result<Vec<Event>> {
        let rows = sqlx::query(concat!("SELECT ", event_columns!(), " FROM events WHERE item = $1 ORDER BY seq"))
            .bind(key.to_string())
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        rows.iter().map(event_from_row).collect()
    }

    async fn events_since(&self, after: i64, limit: u32) -> Result<Vec<Event>> {
        // Seqs come from a sequence, so concurrent writers can commit seq n+1 before
        // seq n. Handing out n+1 first would let a tailing reader skip n for ever.
        // An event is handed out only once it is settled: every transaction of
        // this database that was still writing when it committed has ended (the
        // bound `events_after` uses; docs/STORE.md). The cost is a delay of as long
        // as the oldest open write transaction of this database.
        let others = self.other_database_xids().await?;
        let rows = sqlx::query(concat!(
            "SELECT ",
            event_columns!(),
            " FROM events WHERE seq > $1 AND xid < ",
            settled_bound!("$3"),
            " ORDER BY seq LIMIT $2"
        ))
        .bind(after)
        .bind(i64::from(limit))
        .bind(others)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        rows.iter().map(event_from_row).collect()
    }

    async fn event_head(&self) -> Result<EventPosition> {
        // The last settled event: no event that becomes visible later can sort
        // before it (docs/STORE.md, "The event stream").
        let others = self.other_database_xids().await?;
        let row: Option<(i64, i64)> = sqlx::query_as(concat!(
            "SELECT xid::text::bigint, seq FROM events WHERE xid < ",
            settled_bound!("$1"),
            " ORDER BY xid DESC, seq DESC LIMIT 1"
        ))
        .bind(others)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        Ok(row.map_or(EventPosition::START, |(xid, seq)| EventPosition { xid, seq }))
    }

    async fn event_position(&self, seq: i64) -> Result<Option<EventPosition>> {
        let xid: Option<i64> = sqlx::query_scalar("SELECT xid::text::bigint FROM events WHERE seq = $1")
            .bind(seq)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        Ok(xid.map(|xid| EventPosition { xid, seq }))
    }

    async fn events_after(
        &self,
        after: EventPosition,
        item: Option<&ItemKey>,
        limit: u32,
    ) -> Result<Vec<PositionedEvent>> {
        // Stream order is (xid, seq), and only settled transactions are handed
        // out: older than every transaction of this database still running when
        // the statement's snapshot was taken. Every event not handed out yet
        // belongs to a transaction that was running or had no xid then, so its
        // xid is at or above that bound, above everything handed out: the order
        // never goes back (the argument is in docs/STORE.md).
        let others = self.other_database_xids().await?;
        let rows = sqlx::query(concat!(
            "SELECT ",
            event_columns!(),
            ", xid::text::bigint AS xid_n FROM events \
             WHERE (xid, seq) > ($1::text::xid8, $2) AND xid < ",
            settled_bound!("$5"),
            " AND ($3::text IS NULL OR item = $3) ORDER BY xid, seq LIMIT $4"
        ))
        .bind(after.xid.to_string())
        .bind(after.seq)
        .bind(item.map(ToString::to_string))
        .bind(i64::from(limit))
        .bind(others)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        rows.iter()
            .map(|r| {
                let event = event_from_row(r)?;
                let xid: i64 = r.try_get("xid_n").map_err(|e| self.err(e))?;
                Ok(PositionedEvent { position: EventPosition { xid, seq: event.seq }, event })
            })
            .collect()
    }

    async fn record_reaper_pass(&self, counts: ReaperPassCounts, at: Timestamp) -> Result<()> {
        sqlx::query(REAPER_PASS_SQL)
            .bind(common::count_i64(counts.finalizer_defers))
            .bind(common::count_i64(counts.reaped_tier1))
            .bind(common::count_i64(counts.reaped_tier2))
            .bind(common::count_i64(counts.reaped_tier3))
            .bind(at.as_millis())
            .execute(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    async fn reaper_totals(&self, now: Timestamp) -> Result<ReaperTotals> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT name, value FROM reaper_counters UNION ALL \
             SELECT 'finalizer_owned', COUNT(*) FROM jobs WHERE status = 'finishing' AND lease_expires_at > $1",
        )
        .bind(now.as_millis())
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        Ok(common::reaper_totals(&rows))
    }

    async fn queue_stats(&self) -> Result<QueueStats> {
        // One snapshot, so the counts agree with each other.
        let mut tx =
            self.pool.begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY").await.map_err(|e| self.err(e))?;
        // Open items counted live (partial index), terminal ones from the
        // trigger-kept counters, so the cost does not grow with history.
        let items: Vec<(String, i64)> = sqlx::query_as(
            "SELECT status, COUNT(*) FROM items WHERE status NOT IN ('done', 'cancelled') GROUP BY status \
             UNION ALL SELECT status, SUM(n)::BIGINT FROM status_counts WHERE tbl = 'items' GROUP BY status",
        )
        .fetch_all(&mut *tx)
        .await
        .map_err(|e| self.err(e))?;
        let stages: Vec<(String, i64)> = sqlx::query_as(
            "SELECT stage, COUNT(*) FROM items WHERE status NOT IN ('done', 'cancelled') GROUP BY stage",
        )
        .fetch_all(&mut *tx)
        .await
        .map_err(|e| self.err(e))?;
        let jobs: Vec<(String, i64)> = sqlx::query_as(
            "SELECT status, COUNT(*) FROM jobs WHERE status IN ('queued', 'running', 'finishing') GROUP BY status \
             UNION ALL SELECT status, SUM(n)::BIGINT FROM status_counts WHERE tbl = 'jobs' GROUP BY status",
        )
        .fetch_all(&mut *tx)
        .await
        .map_err(|e| self.err(e))?;
        let active = sqlx::query(
            "SELECT id, item, stage, status, owner, epoch, started_at, lease_expires_at FROM jobs \
             WHERE status IN ('running', 'finishing') ORDER BY started_at, id",
        )
        .fetch_all(&mut *tx)
        .await
        .map_err(|e| self.err(e))?;
        tx.commit().await.map_err(|e| self.err(e))?;
        Ok(QueueStats {
            items_by_status: common::counts_with_zeroes(ItemStatus::ALL.iter().map(|s| s.as_str()), items),
            items_by_stage: stages.into_iter().collect(),
            jobs_by_status: common::counts_with_zeroes(JobStatus::ALL.iter().map(|s| s.as_str()), jobs),
            active_jobs: active.iter().map(active_job_from_row).collect::<Result<_>>()?,
        })
    }

    async fn register_node(
        &self,
        reg: NodeRegistration,
        now: Timestamp,
        live_for: Duration,
    ) -> Result<Option<NodeRecord>> {
        with_retry!(self, "register_node", self.register_node_once(&reg, now, live_for).await)
    }

    async fn touch_node(&self, id: &str, incarnation: &str, now: Timestamp, clock_offset_ms: i64) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE nodes SET last_seen = $3, clock_offset_ms = $4 \
             WHERE id = $1 AND incarnation = $2 AND stopped_at IS NULL",
        )
        .bind(id)
        .bind(incarnation)
        .bind(now.as_millis())
        .bind(clock_offset_ms)
        .execute(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        Ok(done.rows_affected() == 1)
    }

    async fn deregister_node(&self, id: &str, incarnation: &str, now: Timestamp) -> Result<()> {
        sqlx::query("UPDATE nodes SET stopped_at = $3 WHERE id = $1 AND incarnation = $2 AND stopped_at IS NULL")
            .bind(id)
            .bind(incarnation)
            .bind(now.as_millis())
            .execute(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    async fn nodes(&self) -> Result<Vec<NodeRecord>> {
        let rows = sqlx::query(concat!("SELECT ", node_columns!(), " FROM nodes ORDER BY id"))
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        rows.iter().map(node_from_row).collect()
    }

    async fn store_time(&self) -> Result<Option<Timestamp>> {
        // clock_timestamp(), not now(): now() is the start of the transaction.
        let ms: i64 = sqlx::query_scalar("SELECT floor(extract(epoch FROM clock_timestamp()) * 1000)::BIGINT")
            .fetch_one(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        Ok(Some(Timestamp::from_millis(ms)))
    }
}

#[cfg(test)]
mod tests;
