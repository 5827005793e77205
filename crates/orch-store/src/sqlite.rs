//! The embedded SQLite backend (`sqlite://PATH`), orch's default store.
//!
//! Durability and concurrency settings, and why:
//! - **WAL journal**: readers never block the writer and vice versa, so the CLI and
//!   `orch serve` can share one file.
//! - **`synchronous=FULL`**: every commit fsyncs the WAL before it returns, so an
//!   acknowledged write survives power loss as well as `kill -9` (I7). `NORMAL` would
//!   only fsync at checkpoints: still safe against a process crash, but a power cut
//!   or kernel panic could roll back the last acknowledged transactions (an item
//!   whose 201 was sent would vanish). FULL costs one fsync per write transaction;
//!   the benchmark in `docs/BENCHMARKS.md` gives the figure on these machines.
//! - **One write path**: all writes go through a single-connection pool and start
//!   with `BEGIN IMMEDIATE`, which takes the file's write lock up front. Two
//!   processes therefore queue on SQLite's lock (bounded by `busy_timeout`) instead
//!   of deadlocking on a read-to-write lock upgrade. Reads use a separate pool.
//! - **Group commit**: one writer task drains the queue of pending writes and runs
//!   them in one transaction, each inside its own savepoint (a write that fails or
//!   is fenced out rolls back alone), then commits once. Every caller is answered
//!   only after that commit, so durability per write is unchanged while N
//!   concurrent writes cost one fsync instead of N.
//! - **Foreign keys on**, so a job can never name a missing item.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use orch_core::{EventKind, ItemKey, ItemStatus, JobStatus, Timestamp};
use serde_json::json;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::types::Json;
use sqlx::{Connection, Row, SqliteConnection};
use tokio::sync::{Notify, mpsc, oneshot};

use crate::common::{
    self, active_job_from_row, event_columns, event_from_row, item_from_row, item_select, job_columns, job_from_row,
};
use crate::{
    Backend, CommitOutcome, Error, Event, ExitInfo, GateResult, Item, ItemFilter, Job, JobId, NewEvent, NewItem, Page,
    QueueStats, Result, RunInfo, Store, TransitionCommit,
};

/// How long a writer waits for another process's write lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// Read connections: enough for the API and the reaper to read while a write runs.
const READ_CONNECTIONS: u32 = 4;
/// Most writes committed together; bounds a batch's latency and savepoint count.
const MAX_BATCH: usize = 128;
/// Writes waiting for the writer task before callers wait to enqueue.
const WRITE_QUEUE: usize = 1024;

/// Migrations embedded in the binary, in order. Forward-only: never edit one that
/// has shipped; add the next number.
const MIGRATIONS: &[(i64, &str)] = &[(1, include_str!("../migrations/sqlite/0001_init.sql"))];

/// The highest schema version this binary knows.
pub(crate) fn known_version() -> i64 {
    MIGRATIONS.last().map_or(0, |m| m.0)
}

/// Called with the batch's commit error (if any) once the batch has ended.
type Finish = Box<dyn FnOnce(Option<&Error>) + Send>;
type OpFuture<'c> = Pin<Box<dyn Future<Output = (bool, Finish)> + Send + 'c>>;
/// One queued write: run inside the batch (or told why the batch could not start);
/// returns whether to keep its changes, and how to answer its caller after commit.
type Op = Box<dyn for<'c> FnOnce(std::result::Result<Tx<'c>, Error>) -> OpFuture<'c> + Send>;
/// The body of a write, given the batch's connection.
type WriteFuture<'c, T> = Pin<Box<dyn Future<Output = Result<T>> + Send + 'c>>;

/// A SQLite store: one writer task (group commit), a small pool of readers.
pub(crate) struct SqliteStore {
    url: Arc<str>,
    read: SqlitePool,
    writer: mpsc::Sender<Op>,
    signal: Arc<Notify>,
}

/// Where a `sqlite:` URL points.
enum Target {
    File(PathBuf),
    Memory,
}

fn parse_url(url: &str) -> Option<Target> {
    if url == "sqlite::memory:" || url == "sqlite://:memory:" {
        return Some(Target::Memory);
    }
    let path = url.strip_prefix("sqlite://")?;
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    if path.is_empty() {
        return None;
    }
    Some(Target::File(PathBuf::from(path)))
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `url` and applies migrations.
    pub(crate) async fn open(url: &str) -> Result<Self> {
        let unavailable = |reason: String| Error::Unavailable { url: url.to_owned(), reason };
        let target = parse_url(url).ok_or_else(|| unavailable("expected sqlite://PATH or sqlite::memory:".into()))?;
        // No journal_mode here: switching a file to WAL takes a lock the busy
        // timeout does not wait for, so it is done once, with retries, below.
        let base = SqliteConnectOptions::new()
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        let (write, read) = match target {
            Target::Memory => {
                // Every connection to `:memory:` is its own database, so one
                // connection serves both reads and writes.
                let opts = base.in_memory(true).journal_mode(SqliteJournalMode::Memory);
                let pool = SqlitePoolOptions::new()
                    .max_connections(1)
                    .connect_with(opts)
                    .await
                    .map_err(|e| common::map_err(url, e))?;
                (pool.clone(), pool)
            }
            Target::File(path) => {
                prepare_path(&path).map_err(unavailable)?;
                let opts = base.filename(&path).create_if_missing(true);
                let path_err = |e: sqlx::Error| match common::map_err(url, e) {
                    Error::Unavailable { reason, .. } => {
                        unavailable(format!("{reason}; is {} an orch SQLite database?", path.display()))
                    }
                    other => other,
                };
                let write =
                    SqlitePoolOptions::new().max_connections(1).connect_with(opts.clone()).await.map_err(path_err)?;
                use_wal(&write).await.map_err(path_err)?;
                let read = SqlitePoolOptions::new()
                    .max_connections(READ_CONNECTIONS)
                    .connect_with(opts)
                    .await
                    .map_err(path_err)?;
                (write, read)
            }
        };
        migrate(&write, url).await?;
        let (writer, queue) = mpsc::channel(WRITE_QUEUE);
        tokio::spawn(writer_task(write, Arc::from(url), queue));
        Ok(Self { url: Arc::from(url), read, writer, signal: Arc::new(Notify::new()) })
    }

    fn err(&self, e: sqlx::Error) -> Error {
        common::map_err(&self.url, e)
    }

    /// Queues `body` for the writer task and waits until its batch has committed.
    /// `keep` decides from the body's result whether its changes stay (a fenced or
    /// conflicting write rolls back to its savepoint).
    async fn write<T, F>(&self, keep: fn(&Result<T>) -> bool, body: F) -> Result<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(Tx<'c>) -> WriteFuture<'c, T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel::<Result<T>>();
        let op: Op = Box::new(move |tx| {
            Box::pin(async move {
                let result = match tx {
                    Ok(tx) => body(tx).await,
                    Err(e) => Err(e),
                };
                let kept = keep(&result);
                let finish: Finish = Box::new(move |commit_err| {
                    let answer = match commit_err {
                        Some(e) if kept => Err(e.clone()),
                        _ => result,
                    };
                    let _ = reply.send(answer);
                });
                (kept, finish)
            })
        });
        let gone = || Error::Unavailable { url: self.url.to_string(), reason: "the store's writer has stopped".into() };
        self.writer.send(op).await.map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }

    async fn fetch_jobs(&self, sql: &'static str, binds: &[i64], text: Option<&str>) -> Result<Vec<Job>> {
        let mut q = sqlx::query(sql);
        if let Some(t) = text {
            q = q.bind(t.to_owned());
        }
        for b in binds {
            q = q.bind(*b);
        }
        let rows = q.fetch_all(&self.read).await.map_err(|e| self.err(e))?;
        rows.iter().map(job_from_row).collect()
    }
}

/// Applies every embedded migration newer than the file's, in one transaction
/// under the write lock, so two processes opening a fresh file do not race.
async fn migrate(pool: &SqlitePool, url: &str) -> Result<()> {
    let migration_err = |e: sqlx::Error| match common::map_err(url, e) {
        e @ Error::Unavailable { .. } => e,
        other => Error::Migration { url: url.to_owned(), reason: other.to_string() },
    };
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.map_err(|e| common::map_err(url, e))?;
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)",
    )
    .execute(&mut *tx)
    .await
    .map_err(migration_err)?;
    let found: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
        .fetch_one(&mut *tx)
        .await
        .map_err(migration_err)?;
    let known = known_version();
    if found > known {
        return Err(Error::SchemaTooNew { url: url.to_owned(), found, known });
    }
    for (version, sql) in MIGRATIONS.iter().filter(|m| m.0 > found) {
        sqlx::raw_sql(*sql).execute(&mut *tx).await.map_err(migration_err)?;
        // Bookkeeping only: the database's clock stamps when a migration ran.
        sqlx::query(
            "INSERT INTO schema_migrations (version, applied_at) \
             VALUES ($1, CAST(unixepoch('subsec') * 1000 AS INTEGER))",
        )
        .bind(version)
        .execute(&mut *tx)
        .await
        .map_err(migration_err)?;
        tracing::info!(store = %url, version, "applied migration");
    }
    tx.commit().await.map_err(migration_err)
}

/// Puts the file in WAL mode (a persistent property of the file). Another process
/// opening the file at the same moment can make the switch fail at once with
/// SQLITE_BUSY, which the busy timeout does not cover, so it is retried (bounded).
async fn use_wal(pool: &SqlitePool) -> sqlx::Result<()> {
    const ATTEMPTS: u32 = 100;
    let mut attempt = 1;
    loop {
        match sqlx::query_scalar::<_, String>("PRAGMA journal_mode = WAL").fetch_one(pool).await {
            Ok(mode) if mode.eq_ignore_ascii_case("wal") => return Ok(()),
            Ok(mode) => {
                return Err(sqlx::Error::Protocol(format!("the file stayed in journal mode {mode:?}, not WAL")));
            }
            Err(sqlx::Error::Database(e))
                if attempt < ATTEMPTS && e.code().is_some_and(|c| c.parse::<i64>().is_ok_and(|n| n & 0xff == 5)) =>
            {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

fn prepare_path(path: &Path) -> std::result::Result<(), String> {
    if path.is_dir() {
        return Err(format!("{} is a directory, not a database file", path.display()));
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .map_err(|e| format!("cannot create directory {} for the database: {e}", parent.display()))?;
    }
    Ok(())
}

/// `job_columns!` for the SQLite dialect's RETURNING clauses.
macro_rules! returning_job {
    () => {
        concat!(" RETURNING ", job_columns!())
    };
}

/// One write's view of the batch transaction: the connection, inside the write's
/// savepoint, and the URL to name in errors.
struct Tx<'c> {
    conn: &'c mut SqliteConnection,
    url: &'c str,
}

impl Tx<'_> {
    fn err(&self, e: sqlx::Error) -> Error {
        common::map_err(self.url, e)
    }

    /// After a fenced write affected no row: NotFound if the job does not exist, else
    /// the owner's epoch (or the job's status) is stale.
    async fn fenced_or_missing(&mut self, job: JobId, epoch: i64) -> Error {
        match sqlx::query("SELECT 1 FROM jobs WHERE id = $1").bind(job.0).fetch_optional(&mut *self.conn).await {
            Ok(None) => Error::NotFound { what: format!("job {job}") },
            Ok(Some(_)) => Error::FencedOut { job, epoch },
            Err(e) => self.err(e),
        }
    }

    async fn insert_event(&mut self, ev: &NewEvent, now: Timestamp) -> Result<()> {
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
        .execute(&mut *self.conn)
        .await
        .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Queues a job and appends its `job.queued`; returns the new id.
    async fn enqueue(&mut self, item: &ItemKey, stage: &str, attempt: u32, now: Timestamp) -> Result<JobId> {
        let id = sqlx::query_scalar::<_, i64>(
            "INSERT INTO jobs (item, stage, attempt, status, epoch, queued_at) \
             VALUES ($1, $2, $3, 'queued', 0, $4) RETURNING id",
        )
        .bind(item.to_string())
        .bind(stage)
        .bind(i64::from(attempt))
        .bind(now.as_millis())
        .fetch_one(&mut *self.conn)
        .await
        .map_err(|e| if common::is_unique_violation(&e) { common::second_active_job(item) } else { self.err(e) })?;
        let id = JobId(id);
        let mut ev = NewEvent::new(item.clone(), EventKind::JobQueued);
        ev.job = Some(id);
        ev.epoch = Some(0);
        ev.to = Some(stage.to_owned());
        ev.data = json!({ "attempt": attempt });
        self.insert_event(&ev, now).await?;
        Ok(id)
    }

    async fn create_item(&mut self, new: &NewItem, now: Timestamp) -> Result<ItemKey> {
        let attempts = common::attempts_json(&new.state.attempts)?;
        let first_attempt = new.state.attempts_at(&new.state.stage).max(1);
        let number: i64 = sqlx::query_scalar(
            "INSERT INTO key_counters (prefix, last) VALUES ($1, 1) \
             ON CONFLICT (prefix) DO UPDATE SET last = key_counters.last + 1 RETURNING last",
        )
        .bind(new.prefix.as_str())
        .fetch_one(&mut *self.conn)
        .await
        .map_err(|e| self.err(e))?;
        let key = common::item_key(&new.prefix, number)?;
        let number_i64 = number;
        sqlx::query(
            "INSERT INTO items (key, prefix, number, repo, kind, title, body, track, stage, status, version, \
             attempts, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $13)",
        )
        .bind(key.to_string())
        .bind(new.prefix.as_str())
        .bind(number_i64)
        .bind(&new.repo)
        .bind(new.kind.as_str())
        .bind(&new.title)
        .bind(&new.body)
        .bind(new.state.track.as_str())
        .bind(new.state.stage.as_str())
        .bind(new.state.status.as_str())
        .bind(new.state.version)
        .bind(&attempts)
        .bind(now.as_millis())
        .execute(&mut *self.conn)
        .await
        .map_err(|e| self.err(e))?;
        let mut created = NewEvent::new(key.clone(), EventKind::ItemCreated);
        created.to = Some(new.state.stage.to_string());
        created.data = json!({ "repo": new.repo, "kind": new.kind, "track": new.state.track });
        self.insert_event(&created, now).await?;
        self.enqueue(&key, new.state.stage.as_str(), first_attempt, now).await?;
        Ok(key)
    }

    async fn set_branch(&mut self, key: &ItemKey, branch: &str, now: Timestamp) -> Result<()> {
        let done = sqlx::query("UPDATE items SET branch = $2, updated_at = $3 WHERE key = $1")
            .bind(key.to_string())
            .bind(branch)
            .bind(now.as_millis())
            .execute(&mut *self.conn)
            .await
            .map_err(|e| self.err(e))?;
        if done.rows_affected() == 1 { Ok(()) } else { Err(Error::NotFound { what: format!("item {key}") }) }
    }

    async fn claim_jobs(&mut self, node: &str, limit: u32, now: Timestamp, lease_ttl: Duration) -> Result<Vec<Job>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(concat!(
            "UPDATE jobs SET status = 'running', owner = $1, epoch = epoch + 1, lease_expires_at = $2, \
             heartbeat_at = $3, started_at = $3 \
             WHERE id IN (SELECT id FROM jobs WHERE status = 'queued' ORDER BY queued_at, id LIMIT $4)",
            returning_job!()
        ))
        .bind(node)
        .bind(now.add(lease_ttl).as_millis())
        .bind(now.as_millis())
        .bind(i64::from(limit))
        .fetch_all(&mut *self.conn)
        .await
        .map_err(|e| self.err(e))?;
        let mut jobs = rows.iter().map(job_from_row).collect::<Result<Vec<_>>>()?;
        if jobs.is_empty() {
            return Ok(jobs);
        }
        let keys: Vec<String> = jobs.iter().map(|j| j.item.to_string()).collect();
        sqlx::query(
            "UPDATE items SET status = 'running', updated_at = $1 WHERE key IN (SELECT value FROM json_each($2))",
        )
        .bind(now.as_millis())
        .bind(Json(&keys))
        .execute(&mut *self.conn)
        .await
        .map_err(|e| self.err(e))?;
        jobs.sort_by_key(|j| (j.queued_at, j.id));
        Ok(jobs)
    }

    async fn renew_leases(
        &mut self,
        node: &str,
        jobs: &[(JobId, i64)],
        now: Timestamp,
        lease_ttl: Duration,
    ) -> Result<Vec<JobId>> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let pairs: Vec<(i64, i64)> = jobs.iter().map(|(id, epoch)| (id.0, *epoch)).collect();
        let ids: Vec<i64> = sqlx::query_scalar(
            "UPDATE jobs SET lease_expires_at = $3, heartbeat_at = $2 \
             WHERE id IN (SELECT json_extract(value, '$[0]') FROM json_each($1)) \
               AND owner = $4 AND status IN ('running', 'finishing') \
               AND EXISTS (SELECT 1 FROM json_each($1) \
                           WHERE json_extract(value, '$[0]') = jobs.id AND json_extract(value, '$[1]') = jobs.epoch) \
             RETURNING id",
        )
        .bind(Json(&pairs))
        .bind(now.as_millis())
        .bind(now.add(lease_ttl).as_millis())
        .bind(node)
        .fetch_all(&mut *self.conn)
        .await
        .map_err(|e| self.err(e))?;
        let mut ids: Vec<JobId> = ids.into_iter().map(JobId).collect();
        ids.sort();
        Ok(ids)
    }

    async fn record_started(&mut self, job: JobId, epoch: i64, run: RunInfo, now: Timestamp) -> Result<()> {
        let item: Option<String> = sqlx::query_scalar(
            "UPDATE jobs SET pid = $3, pgid = $4, proc_start = $5, log_path = $6, heartbeat_at = $7 \
             WHERE id = $1 AND epoch = $2 AND status = 'running' RETURNING item",
        )
        .bind(job.0)
        .bind(epoch)
        .bind(i64::from(run.pid))
        .bind(i64::from(run.pgid))
        .bind(run.proc_start)
        .bind(&run.log_path)
        .bind(now.as_millis())
        .fetch_optional(&mut *self.conn)
        .await
        .map_err(|e| self.err(e))?;
        let Some(item) = item else { return Err(self.fenced_or_missing(job, epoch).await) };
        let mut ev = NewEvent::new(common_key(&item)?, EventKind::JobStarted);
        ev.job = Some(job);
        ev.epoch = Some(epoch);
        ev.data = json!({ "pid": run.pid, "pgid": run.pgid, "log_path": run.log_path });
        self.insert_event(&ev, now).await?;
        Ok(())
    }

    async fn record_finished(&mut self, job: JobId, epoch: i64, exit: ExitInfo, now: Timestamp) -> Result<()> {
        let item: Option<String> = sqlx::query_scalar(
            "UPDATE jobs SET status = 'finishing', finished_at = $3, exit_code = $4, reason = $5, heartbeat_at = $3 \
             WHERE id = $1 AND epoch = $2 AND status = 'running' RETURNING item",
        )
        .bind(job.0)
        .bind(epoch)
        .bind(now.as_millis())
        .bind(exit.exit_code.map(i64::from))
        .bind(exit.reason.as_deref())
        .fetch_optional(&mut *self.conn)
        .await
        .map_err(|e| self.err(e))?;
        let Some(item) = item else { return Err(self.fenced_or_missing(job, epoch).await) };
        let mut ev = NewEvent::new(common_key(&item)?, EventKind::JobFinished);
        ev.job = Some(job);
        ev.epoch = Some(epoch);
        ev.reason = exit.reason;
        ev.data = json!({ "exit_code": exit.exit_code });
        self.insert_event(&ev, now).await?;
        Ok(())
    }

    async fn record_gate_result(&mut self, job: JobId, epoch: i64, result: GateResult, now: Timestamp) -> Result<()> {
        let item: Option<String> = sqlx::query_scalar(
            "UPDATE jobs SET heartbeat_at = $3 \
             WHERE id = $1 AND epoch = $2 AND status IN ('running', 'finishing') RETURNING item",
        )
        .bind(job.0)
        .bind(epoch)
        .bind(now.as_millis())
        .fetch_optional(&mut *self.conn)
        .await
        .map_err(|e| self.err(e))?;
        let Some(item) = item else { return Err(self.fenced_or_missing(job, epoch).await) };
        sqlx::query(
            "INSERT INTO gate_results (job, epoch, gate, passed, exit_code, metric, duration_ms, reason, at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(job.0)
        .bind(epoch)
        .bind(&result.gate)
        .bind(result.passed)
        .bind(result.exit_code.map(i64::from))
        .bind(result.metric)
        .bind(result.duration_ms)
        .bind(result.reason.as_deref())
        .bind(now.as_millis())
        .execute(&mut *self.conn)
        .await
        .map_err(|e| self.err(e))?;
        let kind = if result.passed { EventKind::GatePassed } else { EventKind::GateFailed };
        let mut ev = NewEvent::new(common_key(&item)?, kind);
        ev.job = Some(job);
        ev.epoch = Some(epoch);
        ev.reason = result.reason.clone();
        ev.data = json!({
            "gate": result.gate, "exit_code": result.exit_code, "metric": result.metric,
            "duration_ms": result.duration_ms,
        });
        self.insert_event(&ev, now).await?;
        Ok(())
    }

    async fn take_over(
        &mut self,
        job: JobId,
        expected_epoch: i64,
        node: &str,
        now: Timestamp,
        lease_ttl: Duration,
        reason: &str,
    ) -> Result<Option<Job>> {
        let previous: Option<Option<String>> = sqlx::query_scalar("SELECT owner FROM jobs WHERE id = $1")
            .bind(job.0)
            .fetch_optional(&mut *self.conn)
            .await
            .map_err(|e| self.err(e))?;
        let Some(previous) = previous else { return Err(Error::NotFound { what: format!("job {job}") }) };
        let row = sqlx::query(concat!(
            "UPDATE jobs SET owner = $3, epoch = epoch + 1, lease_expires_at = $4, heartbeat_at = $5 \
             WHERE id = $1 AND epoch = $2 AND status IN ('running', 'finishing')",
            returning_job!()
        ))
        .bind(job.0)
        .bind(expected_epoch)
        .bind(node)
        .bind(now.add(lease_ttl).as_millis())
        .bind(now.as_millis())
        .fetch_optional(&mut *self.conn)
        .await
        .map_err(|e| self.err(e))?;
        let Some(row) = row else {
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
        self.insert_event(&ev, now).await?;
        Ok(Some(taken))
    }

    async fn release_job(&mut self, job: JobId, epoch: i64, reason: &str, now: Timestamp) -> Result<()> {
        let row = sqlx::query(
            "UPDATE jobs SET status = 'queued', owner = NULL, epoch = epoch + 1, lease_expires_at = NULL, \
             heartbeat_at = NULL, pid = NULL, pgid = NULL, proc_start = NULL, started_at = NULL, \
             finished_at = NULL, exit_code = NULL, log_path = NULL, reason = $3 \
             WHERE id = $1 AND epoch = $2 AND status IN ('running', 'finishing') RETURNING item, epoch",
        )
        .bind(job.0)
        .bind(epoch)
        .bind(reason)
        .fetch_optional(&mut *self.conn)
        .await
        .map_err(|e| self.err(e))?;
        let Some(row) = row else { return Err(self.fenced_or_missing(job, epoch).await) };
        let item: String = row.try_get("item").map_err(|e| self.err(e))?;
        let new_epoch: i64 = row.try_get("epoch").map_err(|e| self.err(e))?;
        sqlx::query("UPDATE items SET status = 'queued', updated_at = $2 WHERE key = $1")
            .bind(&item)
            .bind(now.as_millis())
            .execute(&mut *self.conn)
            .await
            .map_err(|e| self.err(e))?;
        let mut ev = NewEvent::new(common_key(&item)?, EventKind::JobReleased);
        ev.job = Some(job);
        ev.epoch = Some(new_epoch);
        ev.reason = Some(reason.to_owned());
        self.insert_event(&ev, now).await?;
        Ok(())
    }

    async fn commit_transition(&mut self, commit: &TransitionCommit, now: Timestamp) -> Result<CommitOutcome> {
        let key = commit.item.to_string();
        let attempts = common::attempts_json(&commit.next.attempts)?;

        // 1. The committer must still own its job; ending it is the fenced write.
        if let Some(job) = &commit.job {
            let done = sqlx::query(
                "UPDATE jobs SET status = $3, reason = COALESCE($4, reason), verdict = COALESCE($5, verdict), \
                 finished_at = COALESCE(finished_at, $6), heartbeat_at = $6, lease_expires_at = NULL \
                 WHERE id = $1 AND epoch = $2 AND item = $7 AND status IN ('running', 'finishing')",
            )
            .bind(job.id.0)
            .bind(job.epoch)
            .bind(job.status.as_str())
            .bind(job.reason.as_deref())
            .bind(job.verdict.as_ref().map(Json))
            .bind(now.as_millis())
            .bind(&key)
            .execute(&mut *self.conn)
            .await
            .map_err(|e| self.err(e))?;
            if done.rows_affected() != 1 {
                let owner_item: Option<String> = sqlx::query_scalar("SELECT item FROM jobs WHERE id = $1")
                    .bind(job.id.0)
                    .fetch_optional(&mut *self.conn)
                    .await
                    .map_err(|e| self.err(e))?;
                return match owner_item {
                    None => Err(Error::NotFound { what: format!("job {}", job.id) }),
                    Some(other) if other != key => {
                        Err(Error::Invalid(format!("job {} belongs to {other}, not {key}", job.id)))
                    }
                    Some(_) => Ok(CommitOutcome::FencedOut),
                };
            }
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
        .bind(&attempts)
        .bind(now.as_millis())
        .execute(&mut *self.conn)
        .await
        .map_err(|e| self.err(e))?;
        if done.rows_affected() != 1 {
            let exists = sqlx::query("SELECT 1 FROM items WHERE key = $1")
                .bind(&key)
                .fetch_optional(&mut *self.conn)
                .await
                .map_err(|e| self.err(e))?
                .is_some();
            return if exists {
                Ok(CommitOutcome::Conflict)
            } else {
                Err(Error::NotFound { what: format!("item {key}") })
            };
        }

        // 3. Operator actions end whatever else is in flight, fencing its owner.
        if commit.cancel_active_jobs {
            let reason = format!("cancelled by the transition of {key} from version {}", commit.expected_version);
            let cancelled = sqlx::query(
                "UPDATE jobs SET status = 'cancelled', epoch = epoch + 1, lease_expires_at = NULL, \
                 finished_at = COALESCE(finished_at, $2), reason = $3 \
                 WHERE item = $1 AND status IN ('queued', 'running', 'finishing') RETURNING id, epoch",
            )
            .bind(&key)
            .bind(now.as_millis())
            .bind(&reason)
            .fetch_all(&mut *self.conn)
            .await
            .map_err(|e| self.err(e))?;
            for row in cancelled {
                let mut ev = NewEvent::new(commit.item.clone(), EventKind::JobCancelled);
                ev.job = Some(JobId(row.try_get("id").map_err(|e| self.err(e))?));
                ev.epoch = Some(row.try_get("epoch").map_err(|e| self.err(e))?);
                ev.reason = Some(reason.clone());
                self.insert_event(&ev, now).await?;
            }
        }

        // 4. The caller's events, owned by this item and job.
        for ev in &commit.events {
            let filled = NewEvent {
                item: commit.item.clone(),
                job: ev.job.or(commit.job.as_ref().map(|j| j.id)),
                kind: ev.kind,
                from: ev.from.clone(),
                to: ev.to.clone(),
                epoch: ev.epoch.or(commit.job.as_ref().map(|j| j.epoch)),
                reason: ev.reason.clone(),
                data: common::event_data(ev.kind, &ev.data, Some(commit.expected_version)),
            };
            self.insert_event(&filled, now).await?;
        }

        // 5. The next job.
        let enqueued = match &commit.enqueue {
            Some((stage, attempt)) => Some(self.enqueue(&commit.item, stage.as_str(), *attempt, now).await?),
            None => None,
        };
        Ok(CommitOutcome::Applied { enqueued })
    }

    async fn append_events(&mut self, events: &[NewEvent], now: Timestamp) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        for ev in events {
            self.insert_event(ev, now).await?;
        }
        Ok(())
    }
}

/// The single writer. Policy: runs until the store (every sender) is dropped, then
/// ends after the last batch; a failure of one batch is reported to its callers and
/// the task goes on with the next.
async fn writer_task(pool: SqlitePool, url: Arc<str>, mut queue: mpsc::Receiver<Op>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
        run_batch(&pool, &url, std::mem::take(&mut batch)).await;
    }
}

/// Fails every op of a batch that could not start.
async fn fail_all(ops: Vec<Op>, err: &Error) {
    for op in ops {
        let (_, finish) = op(Err(err.clone())).await;
        finish(None);
    }
}

/// Runs `ops` in one `BEGIN IMMEDIATE` transaction, each in a savepoint unless it
/// is alone, commits once, then answers every caller.
async fn run_batch(pool: &SqlitePool, url: &str, ops: Vec<Op>) {
    let mut conn = match pool.acquire().await {
        Ok(c) => c,
        Err(e) => return fail_all(ops, &common::map_err(url, e)).await,
    };
    let mut tx = match conn.begin_with("BEGIN IMMEDIATE").await {
        Ok(tx) => tx,
        Err(e) => return fail_all(ops, &common::map_err(url, e)).await,
    };
    let alone = ops.len() == 1;
    let mut finishes = Vec::with_capacity(ops.len());
    let mut any_kept = false;
    // A savepoint that cannot be rolled back leaves a failed write's partial
    // changes in the transaction: then nothing of the batch may commit.
    let mut poisoned: Option<Error> = None;
    for op in ops {
        if alone {
            let (kept, finish) = op(Ok(Tx { conn: &mut tx, url })).await;
            any_kept |= kept;
            finishes.push(finish);
            continue;
        }
        let mut sp = match tx.begin().await {
            Ok(sp) => sp,
            Err(e) => {
                let e = common::map_err(url, e);
                let (_, finish) = op(Err(e.clone())).await;
                finish(None);
                poisoned.get_or_insert(e);
                continue;
            }
        };
        let (kept, finish) = op(Ok(Tx { conn: &mut sp, url })).await;
        let ended = if kept { sp.commit().await } else { sp.rollback().await };
        if let Err(e) = ended {
            poisoned.get_or_insert(common::map_err(url, e));
        }
        any_kept |= kept;
        finishes.push(finish);
    }
    let outcome = match poisoned {
        Some(e) => {
            let _ = tx.rollback().await;
            Err(e)
        }
        None if any_kept => tx.commit().await.map_err(|e| common::map_err(url, e)),
        None => tx.rollback().await.map_err(|e| common::map_err(url, e)),
    };
    if let Err(e) = &outcome {
        tracing::warn!(store = %url, error = %e, "write batch failed");
    }
    for finish in finishes {
        finish(outcome.as_ref().err());
    }
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> Backend {
        Backend::Sqlite
    }

    fn work_signal(&self) -> Arc<Notify> {
        self.signal.clone()
    }

    async fn create_item(&self, new: NewItem, now: Timestamp) -> Result<Item> {
        common::attempts_json(&new.state.attempts)?;
        let (key, new) = self
            .write(Result::is_ok, move |mut tx| {
                Box::pin(async move { tx.create_item(&new, now).await.map(|key| (key, new)) })
            })
            .await?;
        self.signal.notify_waiters();
        Ok(Item {
            key,
            repo: new.repo,
            kind: new.kind,
            title: new.title,
            body: new.body,
            track: new.state.track,
            stage: new.state.stage,
            status: new.state.status,
            version: new.state.version,
            attempts: new.state.attempts,
            branch: None,
            pr: None,
            created_at: now,
            updated_at: now,
        })
    }

    async fn set_branch(&self, key: &ItemKey, branch: &str, now: Timestamp) -> Result<()> {
        let (key, branch) = (key.clone(), branch.to_owned());
        self.write(Result::is_ok, move |mut tx| Box::pin(async move { tx.set_branch(&key, &branch, now).await })).await
    }

    async fn claim_jobs(&self, node: &str, limit: u32, now: Timestamp, lease_ttl: Duration) -> Result<Vec<Job>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let node = node.to_owned();
        self.write(Result::is_ok, move |mut tx| {
            Box::pin(async move { tx.claim_jobs(&node, limit, now, lease_ttl).await })
        })
        .await
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
        let (node, jobs) = (node.to_owned(), jobs.to_vec());
        self.write(Result::is_ok, move |mut tx| {
            Box::pin(async move { tx.renew_leases(&node, &jobs, now, lease_ttl).await })
        })
        .await
    }

    async fn record_started(&self, job: JobId, epoch: i64, run: RunInfo, now: Timestamp) -> Result<()> {
        self.write(Result::is_ok, move |mut tx| Box::pin(async move { tx.record_started(job, epoch, run, now).await }))
            .await
    }

    async fn record_finished(&self, job: JobId, epoch: i64, exit: ExitInfo, now: Timestamp) -> Result<()> {
        self.write(Result::is_ok, move |mut tx| {
            Box::pin(async move { tx.record_finished(job, epoch, exit, now).await })
        })
        .await
    }

    async fn record_gate_result(&self, job: JobId, epoch: i64, result: GateResult, now: Timestamp) -> Result<()> {
        self.write(Result::is_ok, move |mut tx| {
            Box::pin(async move { tx.record_gate_result(job, epoch, result, now).await })
        })
        .await
    }

    async fn take_over(
        &self,
        job: JobId,
        expected_epoch: i64,
        node: &str,
        now: Timestamp,
        lease_ttl: Duration,
        reason: &str,
    ) -> Result<Option<Job>> {
        let (node, reason) = (node.to_owned(), reason.to_owned());
        self.write(
            |r| matches!(r, Ok(Some(_))),
            move |mut tx| {
                Box::pin(async move { tx.take_over(job, expected_epoch, &node, now, lease_ttl, &reason).await })
            },
        )
        .await
    }

    async fn release_job(&self, job: JobId, epoch: i64, reason: &str, now: Timestamp) -> Result<()> {
        let reason = reason.to_owned();
        self.write(Result::is_ok, move |mut tx| {
            Box::pin(async move { tx.release_job(job, epoch, &reason, now).await })
        })
        .await?;
        self.signal.notify_waiters();
        Ok(())
    }

    async fn commit_transition(&self, commit: TransitionCommit, now: Timestamp) -> Result<CommitOutcome> {
        common::validate_commit(&commit)?;
        let out = self
            .write(
                |r| matches!(r, Ok(CommitOutcome::Applied { .. })),
                move |mut tx| Box::pin(async move { tx.commit_transition(&commit, now).await }),
            )
            .await?;
        if matches!(out, CommitOutcome::Applied { enqueued: Some(_) }) {
            self.signal.notify_waiters();
        }
        Ok(out)
    }

    async fn append_events(&self, events: &[NewEvent], now: Timestamp) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let events = events.to_vec();
        self.write(Result::is_ok, move |mut tx| Box::pin(async move { tx.append_events(&events, now).await })).await
    }

    async fn get_item(&self, key: &ItemKey) -> Result<Option<Item>> {
        let row = sqlx::query(concat!(item_select!(), "WHERE i.key = $1"))
            .bind(key.to_string())
            .fetch_optional(&self.read)
            .await
            .map_err(|e| self.err(e))?;
        row.as_ref().map(item_from_row).transpose()
    }

    async fn list_items(&self, filter: &ItemFilter, page: Page) -> Result<Vec<Item>> {
        let rows = sqlx::query(concat!(
            item_select!(),
            "WHERE ($1 IS NULL OR i.repo = $1) AND ($2 IS NULL OR i.stage = $2) AND ($3 IS NULL OR i.status = $3) \
             ORDER BY i.prefix, i.number LIMIT $4 OFFSET $5"
        ))
        .bind(filter.repo.as_deref())
        .bind(filter.stage.as_ref().map(|s| s.as_str()))
        .bind(filter.status.map(|s| s.as_str()))
        .bind(i64::from(page.limit))
        .bind(i64::from(page.offset))
        .fetch_all(&self.read)
        .await
        .map_err(|e| self.err(e))?;
        rows.iter().map(item_from_row).collect()
    }

    async fn get_job(&self, id: JobId) -> Result<Option<Job>> {
        Ok(self.fetch_jobs(concat!("SELECT ", job_columns!(), " FROM jobs WHERE id = $1"), &[id.0], None).await?.pop())
    }

    async fn jobs_for_item(&self, key: &ItemKey) -> Result<Vec<Job>> {
        self.fetch_jobs(
            concat!("SELECT ", job_columns!(), " FROM jobs WHERE item = $1 ORDER BY id"),
            &[],
            Some(&key.to_string()),
        )
        .await
    }

    async fn active_job(&self, key: &ItemKey) -> Result<Option<Job>> {
        Ok(self
            .fetch_jobs(
                concat!(
                    "SELECT ",
                    job_columns!(),
                    " FROM jobs WHERE item = $1 AND status IN ('queued', 'running', 'finishing')"
                ),
                &[],
                Some(&key.to_string()),
            )
            .await?
            .pop())
    }

    async fn expired_running(&self, now: Timestamp, limit: u32) -> Result<Vec<Job>> {
        self.fetch_jobs(
            concat!(
                "SELECT ",
                job_columns!(),
                " FROM jobs WHERE status = 'running' AND lease_expires_at < $1 ORDER BY lease_expires_at, id LIMIT $2"
            ),
            &[now.as_millis(), i64::from(limit)],
            None,
        )
        .await
    }

    async fn stale_finishing(&self, finished_before: Timestamp, limit: u32) -> Result<Vec<Job>> {
        self.fetch_jobs(
            concat!(
                "SELECT ",
                job_columns!(),
                " FROM jobs WHERE status = 'finishing' AND finished_at < $1 ORDER BY finished_at, id LIMIT $2"
            ),
            &[finished_before.as_millis(), i64::from(limit)],
            None,
        )
        .await
    }

    async fn overdue(&self, started_before: Timestamp, limit: u32) -> Result<Vec<Job>> {
        self.fetch_jobs(
            concat!(
                "SELECT ",
                job_columns!(),
                " FROM jobs WHERE status IN ('running', 'finishing') AND started_at < $1 \
                 ORDER BY started_at, id LIMIT $2"
            ),
            &[started_before.as_millis(), i64::from(limit)],
            None,
        )
        .await
    }

    async fn jobs_owned_by(&self, node: &str) -> Result<Vec<Job>> {
        self.fetch_jobs(
            concat!(
                "SELECT ",
                job_columns!(),
                " FROM jobs WHERE status IN ('running', 'finishing') AND owner = $1 ORDER BY id"
            ),
            &[],
            Some(node),
        )
        .await
    }

    async fn events_for_item(&self, key: &ItemKey) -> Result<Vec<Event>> {
        let rows = sqlx::query(concat!("SELECT ", event_columns!(), " FROM events WHERE item = $1 ORDER BY seq"))
            .bind(key.to_string())
            .fetch_all(&self.read)
            .await
            .map_err(|e| self.err(e))?;
        rows.iter().map(event_from_row).collect()
    }

    async fn events_since(&self, after: i64, limit: u32) -> Result<Vec<Event>> {
        // One writer at a time means seqs are assigned in commit order: a reader
        // never sees seq n+1 before seq n.
        let rows =
            sqlx::query(concat!("SELECT ", event_columns!(), " FROM events WHERE seq > $1 ORDER BY seq LIMIT $2"))
                .bind(after)
                .bind(i64::from(limit))
                .fetch_all(&self.read)
                .await
                .map_err(|e| self.err(e))?;
        rows.iter().map(event_from_row).collect()
    }

    async fn queue_stats(&self) -> Result<QueueStats> {
        // One read transaction, so the counts agree with each other.
        let mut tx = self.read.begin().await.map_err(|e| self.err(e))?;
        let items: Vec<(String, i64)> = sqlx::query_as("SELECT status, COUNT(*) FROM items GROUP BY status")
            .fetch_all(&mut *tx)
            .await
            .map_err(|e| self.err(e))?;
        let stages: Vec<(String, i64)> = sqlx::query_as(
            "SELECT stage, COUNT(*) FROM items WHERE status NOT IN ('done', 'cancelled') GROUP BY stage",
        )
        .fetch_all(&mut *tx)
        .await
        .map_err(|e| self.err(e))?;
        let jobs: Vec<(String, i64)> = sqlx::query_as("SELECT status, COUNT(*) FROM jobs GROUP BY status")
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
}

fn common_key(s: &str) -> Result<ItemKey> {
    ItemKey::from_str(s).map_err(|e| Error::Corrupt { table: "jobs", reason: format!("column item: {e}") })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        assert!(matches!(parse_url("sqlite::memory:"), Some(Target::Memory)));
        assert!(
            matches!(parse_url("sqlite://.orch/orch.db"), Some(Target::File(p)) if p == Path::new(".orch/orch.db"))
        );
        assert!(matches!(parse_url("sqlite:///tmp/x.db"), Some(Target::File(p)) if p == Path::new("/tmp/x.db")));
        assert!(parse_url("sqlite://").is_none());
        assert!(parse_url("postgres://x").is_none());
    }

    #[test]
    fn every_migration_file_is_embedded() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/sqlite");
        let files = std::fs::read_dir(dir).unwrap().count();
        assert_eq!(files, MIGRATIONS.len(), "add new migration files to MIGRATIONS");
    }

    /// The reaper's, the claim's and the stats' queries must be index searches, not
    /// table scans, or a pass over 100,000 items would cost a full scan each.
    #[tokio::test]
    async fn hot_queries_use_indexes() {
        let store = SqliteStore::open("sqlite::memory:").await.unwrap();
        let queries = [
            "SELECT id FROM jobs WHERE status = 'queued' ORDER BY queued_at, id LIMIT 5",
            "SELECT id FROM jobs WHERE status = 'running' AND lease_expires_at < 5 ORDER BY lease_expires_at, id LIMIT 5",
            "SELECT id FROM jobs WHERE status = 'finishing' AND finished_at < 5 ORDER BY finished_at, id LIMIT 5",
            "SELECT id FROM jobs WHERE status IN ('running', 'finishing') AND started_at < 5 ORDER BY started_at, id LIMIT 5",
            "SELECT id FROM jobs WHERE status IN ('running', 'finishing') AND owner = 'n' ORDER BY id",
            "SELECT id FROM jobs WHERE item = 'A-1' AND status IN ('queued', 'running', 'finishing')",
            "SELECT id FROM jobs WHERE item = 'A-1' ORDER BY id",
            "SELECT seq FROM events WHERE item = 'A-1' ORDER BY seq",
            "SELECT seq FROM events WHERE seq > 5 ORDER BY seq LIMIT 5",
            "SELECT status, COUNT(*) FROM items GROUP BY status",
            "SELECT stage, COUNT(*) FROM items WHERE status NOT IN ('done', 'cancelled') GROUP BY stage",
            "SELECT status, COUNT(*) FROM jobs GROUP BY status",
            "SELECT id FROM jobs WHERE status IN ('running', 'finishing') ORDER BY started_at, id",
        ];
        for q in queries {
            let plan: Vec<(i64, i64, i64, String)> =
                sqlx::query_as(sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {q}")))
                    .fetch_all(&store.read)
                    .await
                    .unwrap();
            let text: Vec<&str> = plan.iter().map(|p| p.3.as_str()).collect();
            let scans_table = text.iter().any(|l| l.starts_with("SCAN") && !l.contains("INDEX"));
            assert!(!scans_table, "{q}\nplan: {text:?}");
        }
    }
}
