//! The embedded SQLite backend (`sqlite://PATH`), orch's default store.
//!
//! Durability and concurrency settings, and why:
//! - **WAL journal**: readers never block the writer and vice versa, so the CLI and
//!   `orch serve` can share one file.
//! - **`synchronous=FULL`**: every commit fsyncs the WAL before it returns, so an
//!   acknowledged write survives power loss as well as `kill -9` (I7). `NORMAL` would
//!   only fsync at checkpoints: still safe against a process crash, but a power cut
//!   or kernel panic could roll back the last acknowledged transactions (an item
//!   whose 201 was sent would vanish). FULL costs one fsync per commit, paid once
//!   per batch (next point); `docs/BENCHMARKS.md` gives the figures.
//! - **One writer thread, group commit**: every write is queued to one thread that
//!   owns the only write connection. It drains the queue and runs the pending writes
//!   in one `BEGIN IMMEDIATE` transaction, each inside its own savepoint (a write
//!   that fails or is fenced out rolls back alone), commits once, and only then
//!   answers each caller: durability per write is unchanged while N concurrent
//!   writes cost one fsync. A failure SQLite answers by rolling the whole
//!   transaction back (disk full, I/O error, out of memory) fails the whole batch,
//!   and the writes behind it never run (`run_batch` says why). `BEGIN IMMEDIATE` takes the file's write lock up front,
//!   so two processes queue on SQLite's lock (bounded by `busy_timeout`) instead of
//!   deadlocking on a read-to-write upgrade.
//! - **Reader threads** with their own connections serve reads, never blocking the
//!   writer.
//! - **Foreign keys on**, so a job can never name a missing item.
//!
//! The driver is rusqlite on plain threads rather than sqlx: sqlx-sqlite sends every
//! statement to a worker thread and back (about 75 µs per statement here), which
//! capped the single writer at a few hundred transitions a second; prepared
//! statements on the writer's own thread cost a few microseconds. Both link the same
//! `libsqlite3-sys`, so there is one SQLite library (and one set of POSIX locks) in
//! the process.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use orch_core::{EventKind, ItemKey, ItemKind, ItemStatus, JobStatus, StageName, Timestamp, TrackName};
use rusqlite::types::FromSql;
use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension, Row, params};
use serde_json::{Value, json};
use tokio::sync::{Notify, mpsc, oneshot};

use crate::common::{self, event_columns, item_select, job_columns, node_columns, pr_select};

mod rows;
mod writer;

use crate::{
    ActiveJob, Backend, ClaimNext, CommitOutcome, Error, Event, EventPosition, ExitInfo, GateResult, Item, ItemFilter,
    Job, JobId, NewEvent, NewItem, NewPr, NodeRecord, NodeRegistration, Page, PositionedEvent, PrUpdate, PullRequest,
    QueueStats, ReaperPassCounts, ReaperTotals, Result, RunInfo, Store, TakeOver, TransitionCommit,
};
use rows::*;
use writer::*;

/// How long a writer waits for another process's write lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// Reader threads (each with a connection): the machines orch targets have 2 cores.
const READERS: usize = 2;
/// Most writes committed together; bounds a batch's latency and savepoint count.
const MAX_BATCH: usize = 128;
/// Requests waiting for the writer (or the readers) before callers wait to enqueue.
const QUEUE: usize = 1024;
/// Prepared statements kept per connection (the store uses a few dozen).
const STATEMENT_CACHE: usize = 128;

/// Migrations embedded in the binary, in order. Forward-only: never edit one that
/// has shipped; add the next number.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../migrations/sqlite/0001_init.sql")),
    (2, include_str!("../migrations/sqlite/0002_status_counts.sql")),
    (3, include_str!("../migrations/sqlite/0003_commit_guard.sql")),
    (4, include_str!("../migrations/sqlite/0004_nodes.sql")),
    (5, include_str!("../migrations/sqlite/0005_vcs.sql")),
    (6, include_str!("../migrations/sqlite/0006_event_stream.sql")),
    (7, include_str!("../migrations/sqlite/0007_usage.sql")),
    (8, include_str!("../migrations/sqlite/0008_seed_status_counts.sql")),
    (9, include_str!("../migrations/sqlite/0009_counters_without_in_lists.sql")),
];

/// The highest schema version this binary knows.
fn known_version() -> i64 {
    MIGRATIONS.last().map_or(0, |m| m.0)
}

/// A SQLite store: one writer thread (group commit) and a few reader threads.
pub(crate) struct SqliteStore {
    url: Arc<str>,
    writer: mpsc::Sender<WriteOp>,
    /// `None` for `sqlite::memory:`, whose one connection is the writer's.
    readers: Option<mpsc::Sender<ReadOp>>,
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

/// Maps a rusqlite error to the backend-neutral kinds, naming `url` when the file
/// itself is the problem.
fn map_err(url: &str, e: rusqlite::Error) -> Error {
    let unavailable = |what: &str| Error::Unavailable { url: url.to_owned(), reason: format!("{what} ({e})") };
    match e.sqlite_error_code() {
        Some(ErrorCode::ReadOnly) => unavailable("the database is read-only"),
        Some(ErrorCode::SystemIoFailure) => unavailable("disk I/O error"),
        Some(ErrorCode::DatabaseCorrupt) => unavailable("the database file is corrupt"),
        Some(ErrorCode::DiskFull) => unavailable("the disk is full"),
        Some(ErrorCode::CannotOpen) => unavailable("the file cannot be opened"),
        Some(ErrorCode::NotADatabase) => unavailable("the file is not a database"),
        Some(ErrorCode::PermissionDenied) => unavailable("access denied"),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
            Error::Database(format!("{url} is locked by another writer and stayed locked past the busy timeout"))
        }
        _ => match e {
            rusqlite::Error::FromSqlConversionFailure(..) | rusqlite::Error::InvalidColumnType(..) => {
                Error::Corrupt { table: "row", reason: e.to_string() }
            }
            other => Error::Database(other.to_string()),
        },
    }
}

fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
            || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY)
}

/// Opens one connection with orch's settings.
fn connect(target: &Target, url: &str) -> Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = match target {
        Target::Memory => Connection::open_in_memory(),
        Target::File(path) => Connection::open_with_flags(path, flags),
    }
    .map_err(|e| map_err(url, e))?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(|e| map_err(url, e))?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    // Reading a pragma touches the file header: a file that is not a database fails here.
    conn.pragma_update(None, "foreign_keys", "ON").map_err(|e| map_err(url, e))?;
    conn.pragma_update(None, "synchronous", "FULL").map_err(|e| map_err(url, e))?;
    // The writer's savepoints journal every page they touch. A batch of writes
    // outgrows SQLite's 64 KiB in-memory sub-journal at once, and the spilled one
    // is a temp file written with pwrite for every page: a fifth of the writer's
    // time in a profile. In memory it costs a batch's pages (a few MiB at most).
    conn.pragma_update(None, "temp_store", "MEMORY").map_err(|e| map_err(url, e))?;
    conn.query_row("SELECT COUNT(*) FROM sqlite_master", [], |r| r.get::<_, i64>(0)).map_err(|e| map_err(url, e))?;
    Ok(conn)
}

/// Puts the file in WAL mode (a persistent property of the file). Another process
/// opening the file at the same moment can make the switch fail at once with
/// SQLITE_BUSY, which the busy timeout does not cover, so it is retried (bounded).
fn use_wal(conn: &Connection, url: &str) -> Result<()> {
    const ATTEMPTS: u32 = 100;
    for attempt in 1.. {
        match conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get::<_, String>(0)) {
            Ok(mode) if mode.eq_ignore_ascii_case("wal") => return Ok(()),
            Ok(mode) => {
                return Err(Error::Unavailable {
                    url: url.to_owned(),
                    reason: format!("the file stayed in journal mode {mode:?}, not WAL"),
                });
            }
            Err(e) if attempt < ATTEMPTS && e.sqlite_error_code() == Some(ErrorCode::DatabaseBusy) => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => return Err(map_err(url, e)),
        }
    }
    Ok(())
}

/// Applies every embedded migration newer than the file's, in one transaction
/// under the write lock, so two processes opening a fresh file do not race.
fn migrate(conn: &Connection, url: &str) -> Result<()> {
    let migration_err = |e: rusqlite::Error| match map_err(url, e) {
        e @ Error::Unavailable { .. } => e,
        other => Error::Migration { url: url.to_owned(), reason: other.to_string() },
    };
    conn.execute_batch("BEGIN IMMEDIATE").map_err(migration_err)?;
    let run = || -> Result<()> {
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)",
        )
        .map_err(migration_err)?;
        let found: i64 = conn
            .query_row("SELECT COALESCE(MAX(version), 0) FROM schema_migrations", [], |r| r.get(0))
            .map_err(migration_err)?;
        let known = known_version();
        if found > known {
            return Err(Error::SchemaTooNew { url: url.to_owned(), found, known });
        }
        for (version, sql) in MIGRATIONS.iter().filter(|m| m.0 > found) {
            conn.execute_batch(sql).map_err(migration_err)?;
            // Bookkeeping only: the database's clock stamps when a migration ran.
            conn.execute(
                "INSERT INTO schema_migrations (version, applied_at) \
                 VALUES (?1, CAST(unixepoch('subsec') * 1000 AS INTEGER))",
                params![version],
            )
            .map_err(migration_err)?;
            tracing::info!(store = %url, version, "applied migration");
        }
        Ok(())
    };
    match run() {
        Ok(()) => conn.execute_batch("COMMIT").map_err(migration_err),
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
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

impl SqliteStore {
    /// Opens (creating if needed) the database at `url`, applies migrations and
    /// starts the writer and reader threads.
    pub(crate) async fn open(url: &str) -> Result<Self> {
        let owned = url.to_owned();
        let opened = tokio::task::spawn_blocking(move || Self::open_blocking(&owned))
            .await
            .map_err(|e| Error::Unavailable { url: url.to_owned(), reason: format!("opening failed: {e}") })??;
        let (writer_conn, reader_conns) = opened;
        let url: Arc<str> = Arc::from(url);
        let (writer, queue) = mpsc::channel(QUEUE);
        spawn_thread("orch-sqlite-writer", {
            let url = url.clone();
            move || writer_thread(writer_conn, &url, queue)
        })?;
        let readers = if reader_conns.is_empty() {
            None
        } else {
            let (tx, rx) = mpsc::channel::<ReadOp>(QUEUE);
            let rx = Arc::new(Mutex::new(rx));
            for (i, conn) in reader_conns.into_iter().enumerate() {
                let rx = rx.clone();
                spawn_thread(&format!("orch-sqlite-reader-{i}"), move || reader_thread(conn, &rx))?;
            }
            Some(tx)
        };
        Ok(Self { url, writer, readers, signal: Arc::new(Notify::new()) })
    }

    fn open_blocking(url: &str) -> Result<(Connection, Vec<Connection>)> {
        let unavailable = |reason: String| Error::Unavailable { url: url.to_owned(), reason };
        let target = parse_url(url).ok_or_else(|| unavailable("expected sqlite://PATH or sqlite::memory:".into()))?;
        if let Target::File(path) = &target {
            prepare_path(path).map_err(unavailable)?;
        }
        let name_path = |e: Error| match (e, &target) {
            (Error::Unavailable { reason, .. }, Target::File(path)) => {
                unavailable(format!("{reason}; is {} an orch SQLite database?", path.display()))
            }
            (other, _) => other,
        };
        let writer = connect(&target, url).map_err(name_path)?;
        if matches!(target, Target::File(_)) {
            use_wal(&writer, url).map_err(name_path)?;
        }
        migrate(&writer, url).map_err(name_path)?;
        let readers = match target {
            // Every connection to `:memory:` is its own database: reads go to the writer.
            Target::Memory => Vec::new(),
            Target::File(_) => (0..READERS).map(|_| connect(&target, url)).collect::<Result<_>>()?,
        };
        Ok((writer, readers))
    }

    fn gone(&self) -> Error {
        Error::Unavailable { url: self.url.to_string(), reason: "the store's writer has stopped".into() }
    }

    /// Queues `body` for the writer thread and waits until its batch has committed.
    /// `keep` decides from the body's result whether its changes stay (a fenced or
    /// conflicting write rolls back to its savepoint).
    async fn write<T, F>(&self, keep: fn(&Result<T>) -> bool, body: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(W<'_>) -> Result<T> + Send + 'static,
    {
        let (op, answer) = write_op(self.url.clone(), keep, body);
        self.writer.send(op).await.map_err(|_| self.gone())?;
        answer.await.map_err(|_| self.gone())?
    }

    /// Runs `body` on a reader thread (or, in memory, on the writer).
    async fn read<T, F>(&self, body: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(W<'_>) -> Result<T> + Send + 'static,
    {
        let Some(readers) = &self.readers else { return self.write(|_| false, body).await };
        let (reply, answer) = oneshot::channel::<Result<T>>();
        let url = self.url.clone();
        let op: ReadOp = Box::new(move |conn| {
            let _ = reply.send(body(W { conn, url: &url }));
        });
        readers.send(op).await.map_err(|_| self.gone())?;
        answer.await.map_err(|_| self.gone())?
    }
}

/// Items per status: open ones counted live (partial index), terminal ones from
/// the trigger-kept counters, so the cost does not grow with history.
const OPEN_AND_DONE_ITEMS: &str = "SELECT status AS k, COUNT(*) AS n FROM items \
     WHERE status NOT IN ('done', 'cancelled') GROUP BY status \
     UNION ALL SELECT status AS k, SUM(n) AS n FROM status_counts WHERE tbl = 'items' GROUP BY status";
/// Jobs per status, the same way.
const OPEN_AND_DONE_JOBS: &str = "SELECT status AS k, COUNT(*) AS n FROM jobs \
     WHERE status IN ('queued', 'running', 'finishing') GROUP BY status \
     UNION ALL SELECT status AS k, SUM(n) AS n FROM status_counts WHERE tbl = 'jobs' GROUP BY status";

/// Most event rows one `INSERT` carries (`W::insert_events`); each row count is
/// its own cached statement, so this also bounds how many of them the cache holds.
const EVENT_ROWS: usize = 8;

/// The multi-row event `INSERT` for `rows` rows, numbered parameters in row order.
fn events_insert_sql(rows: usize) -> String {
    let mut sql = String::from("INSERT INTO events (at, item, job, kind, from_, to_, epoch, reason, data) VALUES ");
    for row in 0..rows {
        if row > 0 {
            sql.push_str(", ");
        }
        let p = row * 9;
        sql.push_str(&format!(
            "(?{}, ?{}, ?{}, ?{}, ?{}, ?{}, ?{}, ?{}, ?{})",
            p + 1,
            p + 2,
            p + 3,
            p + 4,
            p + 5,
            p + 6,
            p + 7,
            p + 8,
            p + 9
        ));
    }
    sql
}

/// The one column list both backends read items with (`common::item_select!`).
const ITEM_SELECT: &str = item_select!();

fn json_text(v: &Value) -> Result<String> {
    serde_json::to_string(v).map_err(|e| Error::Invalid(format!("JSON cannot be encoded: {e}")))
}

/// One request's view of a connection: the writer's (inside the request's
/// savepoint) or a reader's, and the URL to name in errors.
struct W<'c> {
    conn: &'c Connection,
    url: &'c str,
}

impl W<'_> {
    fn err(&self, e: rusqlite::Error) -> Error {
        map_err(self.url, e)
    }

    /// Every row of `sql` decoded by `decode`.
    fn rows<T>(&self, sql: &str, args: impl rusqlite::Params, decode: fn(&Row<'_>) -> Result<T>) -> Result<Vec<T>> {
        let mut stmt = self.conn.prepare_cached(sql).map_err(|e| self.err(e))?;
        let mut rows = stmt.query(args).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(|e| self.err(e))? {
            out.push(decode(row)?);
        }
        Ok(out)
    }

    fn execute(&self, sql: &str, args: impl rusqlite::Params) -> Result<usize> {
        self.conn.prepare_cached(sql).and_then(|mut s| s.execute(args)).map_err(|e| self.err(e))
    }

    fn one<T: FromSql>(&self, sql: &str, args: impl rusqlite::Params) -> Result<Option<T>> {
        self.conn
            .prepare_cached(sql)
            .and_then(|mut s| s.query_row(args, |r| r.get(0)).optional())
            .map_err(|e| self.err(e))
    }

    /// After a fenced write affected no row: NotFound if the job does not exist, else
    /// the owner's epoch (or the job's status) is stale.
    fn fenced_or_missing(&self, job: JobId, epoch: i64) -> Error {
        match self.one::<i64>("SELECT 1 FROM jobs WHERE id = ?1", params![job.0]) {
            Ok(None) => Error::NotFound { what: format!("job {job}") },
            Ok(Some(_)) => Error::FencedOut { job, epoch },
            Err(e) => e,
        }
    }

    fn insert_event(&self, ev: &NewEvent, now: Timestamp) -> Result<()> {
        self.execute(
            "INSERT INTO events (at, item, job, kind, from_, to_, epoch, reason, data) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                now.as_millis(),
                ev.item.to_string(),
                ev.job.map(|j| j.0),
                ev.kind.as_str(),
                ev.from,
                ev.to,
                ev.epoch,
                ev.reason,
                json_text(&ev.data)?,
            ],
        )?;
        Ok(())
    }

    /// Appends `events` in their order with one multi-row `INSERT` per
    /// `EVENT_ROWS` of them: a transition's events cost one statement step instead
    /// of one each. Rows of one `VALUES` list get ascending seqs in list order, as
    /// separate inserts would.
    fn insert_events(&self, events: &[NewEvent], now: Timestamp) -> Result<()> {
        use rusqlite::types::Value;
        for chunk in events.chunks(EVENT_ROWS) {
            let mut args: Vec<Value> = Vec::with_capacity(chunk.len() * 9);
            for ev in chunk {
                args.extend([
                    Value::Integer(now.as_millis()),
                    Value::Text(ev.item.to_string()),
                    ev.job.map(|j| j.0).into(),
                    Value::Text(ev.kind.as_str().to_owned()),
                    ev.from.clone().into(),
                    ev.to.clone().into(),
                    ev.epoch.into(),
                    ev.reason.clone().into(),
                    Value::Text(json_text(&ev.data)?),
                ]);
            }
            self.execute(&events_insert_sql(chunk.len()), rusqlite::params_from_iter(args))?;
        }
        Ok(())
    }

    /// Inserts a queued job, or with `claim` a job already claimed (see
    /// `ClaimNext`), and returns its id with the `job.queued` event still to be
    /// appended, so a transition can append it together with its others.
    fn insert_job(
        &self,
        item: &ItemKey,
        stage: &str,
        attempt: u32,
        claim: Option<&ClaimNext>,
        now: Timestamp,
    ) -> Result<(JobId, NewEvent)> {
        let (owner, lease) = match claim {
            Some(c) => (Some(c.node.as_str()), Some(now.add(c.lease_ttl).as_millis())),
            None => (None, None),
        };
        // Not `RETURNING id`: SQLite gathers RETURNING rows in an ephemeral table,
        // opened and closed at every call (5 % of the writer's time in a profile of
        // the hand-off). The rowid of the row just inserted is the same answer; the
        // status-counter triggers write no rowid table, so they cannot change it.
        self.conn
            .prepare_cached(
                "INSERT INTO jobs (item, stage, attempt, status, epoch, queued_at, owner, lease_expires_at, \
                 heartbeat_at, started_at) \
                 VALUES (?1, ?2, ?3, CASE WHEN ?5 IS NULL THEN 'queued' ELSE 'running' END, \
                 CASE WHEN ?5 IS NULL THEN 0 ELSE 1 END, ?4, ?5, ?6, \
                 CASE WHEN ?5 IS NULL THEN NULL ELSE ?4 END, CASE WHEN ?5 IS NULL THEN NULL ELSE ?4 END)",
            )
            .and_then(|mut s| s.execute(params![item.to_string(), stage, attempt, now.as_millis(), owner, lease]))
            .map_err(|e| if is_unique_violation(&e) { common::second_active_job(item) } else { self.err(e) })?;
        let id = self.conn.last_insert_rowid();
        let id = JobId(id);
        let mut ev = NewEvent::new(item.clone(), EventKind::JobQueued);
        ev.job = Some(id);
        ev.epoch = Some(0);
        ev.to = Some(stage.to_owned());
        ev.data = json!({ "attempt": attempt });
        Ok((id, ev))
    }

    /// Queues a job and appends its `job.queued`; returns the new id.
    fn enqueue(&self, item: &ItemKey, stage: &str, attempt: u32, now: Timestamp) -> Result<JobId> {
        let (id, ev) = self.insert_job(item, stage, attempt, None, now)?;
        self.insert_event(&ev, now)?;
        Ok(id)
    }

    fn create_item(&self, new: &NewItem, now: Timestamp) -> Result<ItemKey> {
        let attempts = common::attempts_json(&new.state.attempts)?;
        let first_attempt = new.state.attempts_at(&new.state.stage).max(1);
        let number: i64 = self
            .one(
                "INSERT INTO key_counters (prefix, last) VALUES (?1, 1) \
                 ON CONFLICT (prefix) DO UPDATE SET last = key_counters.last + 1 RETURNING last",
                params![new.prefix.as_str()],
            )?
            .ok_or_else(|| corrupt("key_counters", "the counter upsert returned no row"))?;
        let key = common::item_key(&new.prefix, number)?;
        self.execute(
            "INSERT INTO items (key, prefix, number, repo, kind, title, body, track, stage, status, version, \
             attempts, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?13)",
            params![
                key.to_string(),
                new.prefix.as_str(),
                number,
                new.repo,
                new.kind.as_str(),
                new.title,
                new.body,
                new.state.track.as_str(),
                new.state.stage.as_str(),
                new.state.status.as_str(),
                new.state.version,
                attempts,
                now.as_millis(),
            ],
        )?;
        let mut created = NewEvent::new(key.clone(), EventKind::ItemCreated);
        created.to = Some(new.state.stage.to_string());
        created.data = json!({ "repo": new.repo, "kind": new.kind, "track": new.state.track });
        self.insert_event(&created, now)?;
        self.enqueue(&key, new.state.stage.as_str(), first_attempt, now)?;
        Ok(key)
    }

    fn set_branch(&self, key: &ItemKey, branch: &str, now: Timestamp) -> Result<()> {
        let n = self.execute(
            "UPDATE items SET branch = ?2, updated_at = ?3 WHERE key = ?1",
            params![key.to_string(), branch, now.as_millis()],
        )?;
        if n == 1 { Ok(()) } else { Err(Error::NotFound { what: format!("item {key}") }) }
    }

    /// The claim. `LIMIT +?4`, not `LIMIT ?4`: SQLite marks a statement whose plan read
    /// a bound LIMIT as expired whenever that parameter is bound again, so every claim
    /// recompiled this UPDATE, its RETURNING and its triggers (15 % of the writer's
    /// samples in `perf`, docs/BENCHMARKS.md); the unary plus keeps the value out of
    /// the planner, and the plan is the same.
    /// Items matching a filter, a page of them (`LIMIT +?4 OFFSET +?5`, see `CLAIM`).
    const LIST_ITEMS: &'static str = concat!(
        item_select!(),
        "WHERE (?1 IS NULL OR i.repo = ?1) AND (?2 IS NULL OR i.stage = ?2) \
         AND (?3 IS NULL OR i.status = ?3) AND (?6 IS NULL OR i.kind = ?6) \
         AND (?7 IS NULL OR i.prefix > ?7 OR (i.prefix = ?7 AND i.number > ?8)) \
         ORDER BY i.prefix, i.number LIMIT +?4 OFFSET +?5"
    );
    /// The reaper's first tier: running jobs whose lease ran out (`LIMIT +?2`, see `CLAIM`).
    const EXPIRED_RUNNING: &'static str = concat!(
        "SELECT ",
        job_columns!(),
        " FROM jobs WHERE status = 'running' AND lease_expires_at < ?1 \
         ORDER BY lease_expires_at, id LIMIT +?2"
    );
    /// The reaper's second tier: jobs left `finishing` too long.
    const STALE_FINISHING: &'static str = concat!(
        "SELECT ",
        job_columns!(),
        " FROM jobs WHERE status = 'finishing' AND finished_at < ?1 ORDER BY finished_at, id LIMIT +?2"
    );
    /// The reaper's third tier: jobs past their stage's time limit.
    const OVERDUE: &'static str = concat!(
        "SELECT ",
        job_columns!(),
        " FROM jobs WHERE status IN ('running', 'finishing') AND started_at < ?1 \
         ORDER BY started_at, id LIMIT +?2"
    );
    /// Events after a seq, every item's (`events_since`, `events_after`).
    const EVENTS_SINCE: &'static str =
        concat!("SELECT ", event_columns!(), " FROM events WHERE seq > ?1 ORDER BY seq LIMIT +?2");
    /// Events after a seq, one item's (`events_after`).
    const ITEM_EVENTS_SINCE: &'static str =
        concat!("SELECT ", event_columns!(), " FROM events WHERE item = ?1 AND seq > ?2 ORDER BY seq LIMIT +?3");

    const CLAIM: &'static str = concat!(
        "UPDATE jobs SET status = 'running', owner = ?1, epoch = epoch + 1, lease_expires_at = ?2, \
         heartbeat_at = ?3, started_at = ?3 \
         WHERE id IN (SELECT id FROM jobs WHERE status = 'queued' ORDER BY queued_at, id LIMIT +?4) \
         RETURNING ",
        job_columns!()
    );

    fn claim_jobs(&self, node: &str, limit: u32, now: Timestamp, lease_ttl: Duration) -> Result<Vec<Job>> {
        let mut jobs = self.rows(
            Self::CLAIM,
            params![node, now.add(lease_ttl).as_millis(), now.as_millis(), limit],
            job_from_row,
        )?;
        for job in &jobs {
            self.execute(
                "UPDATE items SET status = 'running', updated_at = ?2 WHERE key = ?1",
                params![job.item.to_string(), now.as_millis()],
            )?;
        }
        jobs.sort_by_key(|j| (j.queued_at, j.id));
        Ok(jobs)
    }

    fn renew_leases(
        &self,
        node: &str,
        jobs: &[(JobId, i64)],
        now: Timestamp,
        lease_ttl: Duration,
    ) -> Result<Vec<JobId>> {
        let mut renewed = Vec::with_capacity(jobs.len());
        let expires = now.add(lease_ttl).as_millis();
        // One prepared statement per job inside one transaction: each is a primary-key
        // update costing microseconds, and a job named twice is renewed once.
        for (id, epoch) in jobs {
            let n = self.execute(
                "UPDATE jobs SET lease_expires_at = ?3, heartbeat_at = ?4 \
                 WHERE id = ?1 AND epoch = ?2 AND owner = ?5 AND status IN ('running', 'finishing')",
                params![id.0, epoch, expires, now.as_millis(), node],
            )?;
            if n == 1 {
                renewed.push(*id);
            }
        }
        renewed.sort();
        renewed.dedup();
        Ok(renewed)
    }

    /// An owner write: `sql` updates the job at `epoch` and returns its item.
    fn fenced_update(&self, job: JobId, epoch: i64, sql: &str, args: impl rusqlite::Params) -> Result<ItemKey> {
        match self.one::<String>(sql, args)? {
            Some(item) => parse("jobs", "item", &item),
            None => Err(self.fenced_or_missing(job, epoch)),
        }
    }

    /// Appends the event of an owner write, stamped with the job and epoch.
    fn owner_event(&self, mut ev: NewEvent, job: JobId, epoch: i64, now: Timestamp) -> Result<()> {
        ev.job = Some(job);
        ev.epoch = Some(epoch);
        self.insert_event(&ev, now)
    }

    fn record_started(&self, job: JobId, epoch: i64, run: &RunInfo, now: Timestamp) -> Result<()> {
        let item = self.fenced_update(
            job,
            epoch,
            "UPDATE jobs SET pid = ?3, pgid = ?4, proc_start = ?5, log_path = ?6, heartbeat_at = ?7 \
             WHERE id = ?1 AND epoch = ?2 AND status = 'running' RETURNING item",
            params![job.0, epoch, run.pid, run.pgid, run.proc_start, run.log_path, now.as_millis()],
        )?;
        self.insert_event(&NewEvent::job_started(item, job, epoch, run), now)
    }

    fn record_finished(&self, job: JobId, epoch: i64, exit: &ExitInfo, now: Timestamp) -> Result<()> {
        let verdict = exit.verdict.as_ref().map(json_text).transpose()?;
        let usage = exit.usage.as_ref().map(|u| json_text(&json!(u))).transpose()?;
        let item = self.fenced_update(
            job,
            epoch,
            "UPDATE jobs SET status = 'finishing', finished_at = ?3, exit_code = ?4, reason = ?5, heartbeat_at = ?3, \
             verdict = COALESCE(?6, verdict), usage = COALESCE(?7, usage) \
             WHERE id = ?1 AND epoch = ?2 AND status = 'running' RETURNING item",
            params![job.0, epoch, now.as_millis(), exit.exit_code, exit.reason, verdict, usage],
        )?;
        self.insert_event(&NewEvent::job_finished(item, job, epoch, exit), now)
    }

    fn record_gate_result(&self, job: JobId, epoch: i64, result: &GateResult, now: Timestamp) -> Result<()> {
        let item = self.fenced_update(
            job,
            epoch,
            "UPDATE jobs SET heartbeat_at = ?3 \
             WHERE id = ?1 AND epoch = ?2 AND status IN ('running', 'finishing') RETURNING item",
            params![job.0, epoch, now.as_millis()],
        )?;
        self.execute(
            "INSERT INTO gate_results (job, epoch, gate, passed, exit_code, metric, duration_ms, reason, at, sha) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            params![
                job.0,
                epoch,
                result.gate,
                result.passed,
                result.exit_code,
                result.metric,
                result.duration_ms,
                result.reason,
                now.as_millis(),
                result.sha,
            ],
        )?;
        let kind = if result.passed { EventKind::GatePassed } else { EventKind::GateFailed };
        let mut ev = NewEvent::new(item, kind);
        ev.reason = result.reason.clone();
        ev.data = common::gate_event_data(result);
        self.owner_event(ev, job, epoch, now)
    }

    fn record_push(
        &self,
        job: JobId,
        epoch: i64,
        branch: &str,
        head_sha: &str,
        events: &[NewEvent],
        now: Timestamp,
    ) -> Result<()> {
        let item = self.fenced_update(
            job,
            epoch,
            "UPDATE jobs SET heartbeat_at = ?3 \
             WHERE id = ?1 AND epoch = ?2 AND status IN ('running', 'finishing') RETURNING item",
            params![job.0, epoch, now.as_millis()],
        )?;
        self.execute(
            "UPDATE items SET branch = ?2, head_sha = ?3, updated_at = ?4 WHERE key = ?1",
            params![item.to_string(), branch, head_sha, now.as_millis()],
        )?;
        let owned: Vec<NewEvent> = events.iter().map(|ev| common::owner_event(ev, &item, job, epoch)).collect();
        self.insert_events(&owned, now)
    }

    fn pr(&self, item: &ItemKey) -> Result<Option<PullRequest>> {
        Ok(self.rows(concat!(pr_select!(), "WHERE p.item = ?1"), params![item.to_string()], some_pr_from_row)?.pop())
    }

    fn open_pr(&self, new: NewPr, now: Timestamp) -> Result<(PullRequest, bool)> {
        if let Some(existing) = self.pr(&new.item)? {
            return Ok((existing, false));
        }
        let number: i64 = self
            .one("SELECT number FROM items WHERE key = ?1", params![new.item.to_string()])?
            .ok_or_else(|| Error::NotFound { what: format!("item {}", new.item) })?;
        let pr = common::new_pr(new, number, now);
        self.conn
            .prepare_cached(
                "INSERT INTO prs (item, number, repo, title, body, branch, head_sha, url, state, merge_sha, checks, \
                 created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, NULL, '{}', ?10, ?10)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    pr.item.to_string(),
                    pr.number,
                    pr.repo,
                    pr.title,
                    pr.body,
                    pr.branch,
                    pr.head_sha,
                    pr.url,
                    pr.state,
                    now.as_millis()
                ])
            })
            .map_err(|e| if is_unique_violation(&e) { common::branch_taken(&pr.branch) } else { self.err(e) })?;
        Ok((pr, true))
    }

    fn update_pr(&self, item: &ItemKey, update: PrUpdate, now: Timestamp) -> Result<PullRequest> {
        let mut pr = self.pr(item)?.ok_or_else(|| common::no_pr(item))?;
        common::apply_pr_update(&mut pr, update, now)?;
        self.execute(
            "UPDATE prs SET head_sha = ?2, body = ?3, state = ?4, merge_sha = ?5, checks = ?6, updated_at = ?7 \
             WHERE item = ?1",
            params![
                item.to_string(),
                pr.head_sha,
                pr.body,
                pr.state,
                pr.merge_sha,
                json_text(&common::pr_checks_json(&pr.checks)?)?,
                now.as_millis()
            ],
        )?;
        Ok(pr)
    }

    #[allow(clippy::too_many_arguments)]
    fn take_over(
        &self,
        job: JobId,
        expected_epoch: i64,
        node: &str,
        now: Timestamp,
        lease_ttl: Duration,
        when: TakeOver,
        reason: &str,
    ) -> Result<Option<Job>> {
        let previous: Option<Option<String>> = self.one("SELECT owner FROM jobs WHERE id = ?1", params![job.0])?;
        let Some(previous) = previous else { return Err(Error::NotFound { what: format!("job {job}") }) };
        let taken = self
            .rows(
                concat!(
                    "UPDATE jobs SET owner = ?3, epoch = epoch + 1, lease_expires_at = ?4, heartbeat_at = ?5 \
                     WHERE id = ?1 AND epoch = ?2 AND status IN ('running', 'finishing') \
                       AND (?6 OR lease_expires_at IS NULL OR lease_expires_at < ?5) RETURNING ",
                    job_columns!()
                ),
                params![
                    job.0,
                    expected_epoch,
                    node,
                    now.add(lease_ttl).as_millis(),
                    now.as_millis(),
                    when == TakeOver::Force
                ],
                job_from_row,
            )?
            .pop();
        let Some(taken) = taken else { return Ok(None) };
        let mut ev = NewEvent::new(taken.item.clone(), EventKind::ReaperTookOver);
        ev.job = Some(job);
        ev.epoch = Some(taken.epoch);
        ev.from = previous;
        ev.to = Some(node.to_owned());
        ev.reason = Some(reason.to_owned());
        ev.data = json!({ "previous_epoch": expected_epoch, "status": taken.status });
        self.insert_event(&ev, now)?;
        Ok(Some(taken))
    }

    fn release_job(&self, job: JobId, epoch: i64, reason: &str, now: Timestamp) -> Result<()> {
        let item = self.fenced_update(
            job,
            epoch,
            "UPDATE jobs SET status = 'queued', owner = NULL, epoch = epoch + 1, lease_expires_at = NULL, \
             heartbeat_at = NULL, pid = NULL, pgid = NULL, proc_start = NULL, started_at = NULL, \
             finished_at = NULL, exit_code = NULL, log_path = NULL, reason = ?3 \
             WHERE id = ?1 AND epoch = ?2 AND status IN ('running', 'finishing') RETURNING item",
            params![job.0, epoch, reason],
        )?;
        self.execute(
            "UPDATE items SET status = 'queued', updated_at = ?2 WHERE key = ?1",
            params![item.to_string(), now.as_millis()],
        )?;
        let mut ev = NewEvent::new(item, EventKind::JobReleased);
        ev.reason = Some(reason.to_owned());
        self.owner_event(ev, job, epoch + 1, now)
    }

    fn commit_transition(&self, commit: &TransitionCommit, now: Timestamp) -> Result<CommitOutcome> {
        let key = commit.item.to_string();
        let attempts = common::attempts_json(&commit.next.attempts)?;

        // 1. The committer must still own its job; ending it is the fenced write.
        if let Some(job) = &commit.job {
            let verdict = job.verdict.as_ref().map(json_text).transpose()?;
            let end = job.run_end.clone().unwrap_or_default();
            let usage = end.usage.as_ref().map(|u| json_text(&json!(u))).transpose()?;
            let run = end.run.as_ref();
            let n = self.execute(
                "UPDATE jobs SET status = ?3, reason = COALESCE(?4, reason), verdict = COALESCE(?5, verdict), \
                 finished_at = COALESCE(finished_at, ?6), heartbeat_at = ?6, lease_expires_at = NULL, \
                 exit_code = COALESCE(?8, exit_code), usage = COALESCE(?9, usage), pid = COALESCE(?10, pid), \
                 pgid = COALESCE(?11, pgid), proc_start = COALESCE(?12, proc_start), \
                 log_path = COALESCE(?13, log_path) \
                 WHERE id = ?1 AND epoch = ?2 AND item = ?7 AND status IN ('running', 'finishing')",
                params![
                    job.id.0,
                    job.epoch,
                    job.status.as_str(),
                    job.reason,
                    verdict,
                    now.as_millis(),
                    key,
                    end.exit_code,
                    usage,
                    run.map(|r| r.pid),
                    run.map(|r| r.pgid),
                    run.and_then(|r| r.proc_start),
                    run.map(|r| r.log_path.as_str())
                ],
            )?;
            if n != 1 {
                let owner_item: Option<String> = self.one("SELECT item FROM jobs WHERE id = ?1", params![job.id.0])?;
                return common::job_miss(commit, job.id, owner_item);
            }
        }

        // 2. The item must still be at the version the decision was made from.
        // A claimed next job makes it `running`, as a claim would.
        let status = if commit.claim_next.is_some() { ItemStatus::Running } else { commit.next.status };
        let n = self.execute(
            "UPDATE items SET track = ?3, stage = ?4, status = ?5, version = ?6, attempts = ?7, updated_at = ?8 \
             WHERE key = ?1 AND version = ?2",
            params![
                key,
                commit.expected_version,
                commit.next.track.as_str(),
                commit.next.stage.as_str(),
                status.as_str(),
                commit.next.version,
                attempts,
                now.as_millis()
            ],
        )?;
        if n != 1 {
            let exists = self.one::<i64>("SELECT 1 FROM items WHERE key = ?1", params![key])?.is_some();
            return common::item_miss(commit, exists);
        }

        // The events of steps 3 to 5, in that order, appended at the end in one go.
        let mut events = Vec::with_capacity(commit.events.len() + 1);

        // 3. Operator actions end whatever else is in flight, fencing its owner.
        if commit.cancel_active_jobs {
            let reason = common::cancel_reason(commit);
            let cancelled = self.rows(
                "UPDATE jobs SET status = 'cancelled', epoch = epoch + 1, lease_expires_at = NULL, \
                 finished_at = COALESCE(finished_at, ?2), reason = ?3 \
                 WHERE item = ?1 AND status IN ('queued', 'running', 'finishing') RETURNING id, epoch",
                params![key, now.as_millis(), reason],
                |r| Ok((JobId(col(r, "jobs", "id")?), col::<i64>(r, "jobs", "epoch")?)),
            )?;
            for (id, epoch) in cancelled {
                let mut ev = NewEvent::new(commit.item.clone(), EventKind::JobCancelled);
                ev.job = Some(id);
                ev.epoch = Some(epoch);
                ev.reason = Some(reason.clone());
                events.push(ev);
            }
        }

        // 4. The caller's events, owned by this item and job.
        events.extend(common::commit_events(commit));

        // 5. The next job.
        let enqueued = match &commit.enqueue {
            Some((stage, attempt)) => {
                let claim = commit.claim_next.as_ref();
                let (id, queued) = self.insert_job(&commit.item, stage.as_str(), *attempt, claim, now)?;
                events.push(queued);
                Some(id)
            }
            None => None,
        };
        self.insert_events(&events, now)?;
        Ok(CommitOutcome::Applied { enqueued })
    }

    /// Reads and replaces the id's row in one write transaction: the single writer,
    /// and `BEGIN IMMEDIATE` across processes, make the check and the upsert atomic.
    fn register_node(&self, reg: &NodeRegistration, now: Timestamp, live_for: Duration) -> Result<Option<NodeRecord>> {
        let previous = self
            .rows(concat!("SELECT ", node_columns!(), " FROM nodes WHERE id = ?1"), params![reg.id], node_from_row)?
            .pop();
        if let Some(row) = &previous
            && common::node_is_live(row, now, live_for)
        {
            return Err(common::node_id_in_use(row));
        }
        self.execute(
            "INSERT INTO nodes (id, incarnation, host, pid, data_dir, started_at, last_seen, stopped_at, \
             clock_offset_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, NULL, 0) \
             ON CONFLICT (id) DO UPDATE SET incarnation = excluded.incarnation, host = excluded.host, \
             pid = excluded.pid, data_dir = excluded.data_dir, started_at = excluded.started_at, \
             last_seen = excluded.last_seen, stopped_at = NULL, clock_offset_ms = 0",
            params![reg.id, reg.incarnation, reg.host, reg.pid, reg.data_dir, now.as_millis()],
        )?;
        Ok(previous)
    }

    fn queue_stats(&self) -> Result<QueueStats> {
        let pair = |r: &Row<'_>| -> Result<(String, i64)> { Ok((col(r, "counts", "k")?, col(r, "counts", "n")?)) };
        let items = self.rows(OPEN_AND_DONE_ITEMS, [], pair)?;
        let stages = self.rows(
            "SELECT stage AS k, COUNT(*) AS n FROM items WHERE status NOT IN ('done', 'cancelled') GROUP BY stage",
            [],
            pair,
        )?;
        let jobs = self.rows(OPEN_AND_DONE_JOBS, [], pair)?;
        let active = self.rows(
            "SELECT id, item, stage, status, owner, epoch, started_at, lease_expires_at FROM jobs \
             WHERE status IN ('running', 'finishing') ORDER BY started_at, id",
            [],
            active_job_from_row,
        )?;
        Ok(QueueStats {
            items_by_status: common::counts_with_zeroes(ItemStatus::ALL.iter().map(|s| s.as_str()), items),
            items_by_stage: stages.into_iter().collect(),
            jobs_by_status: common::counts_with_zeroes(JobStatus::ALL.iter().map(|s| s.as_str()), jobs),
            active_jobs: active,
        })
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
        let (key, new) = self.write(Result::is_ok, move |w| w.create_item(&new, now).map(|key| (key, new))).await?;
        self.signal.notify_waiters();
        Ok(new.into_item(key, now))
    }

    async fn get_item(&self, key: &ItemKey) -> Result<Option<Item>> {
        let key = key.to_string();
        self.read(move |w| {
            let sql = format!("{ITEM_SELECT}WHERE i.key = ?1");
            Ok(w.rows(&sql, params![key], item_from_row)?.pop())
        })
        .await
    }

    async fn list_items(&self, filter: &ItemFilter, page: Page) -> Result<Vec<Item>> {
        let filter = filter.clone();
        self.read(move |w| {
            let after_number = filter.after.as_ref().map(|k| i64::try_from(k.number().get()).unwrap_or(i64::MAX));
            w.rows(
                W::LIST_ITEMS,
                params![
                    filter.repo,
                    filter.stage.as_ref().map(|s| s.as_str().to_owned()),
                    filter.status.map(|s| s.as_str()),
                    page.limit,
                    page.offset,
                    filter.kind.map(|k| k.as_str()),
                    filter.after.as_ref().map(|k| k.prefix().as_str().to_owned()),
                    after_number,
                ],
                item_from_row,
            )
        })
        .await
    }

    async fn set_branch(&self, key: &ItemKey, branch: &str, now: Timestamp) -> Result<()> {
        let (key, branch) = (key.clone(), branch.to_owned());
        self.write(Result::is_ok, move |w| w.set_branch(&key, &branch, now)).await
    }

    async fn get_job(&self, id: JobId) -> Result<Option<Job>> {
        self.read(move |w| {
            Ok(w.rows(concat!("SELECT ", job_columns!(), " FROM jobs WHERE id = ?1"), params![id.0], job_from_row)?
                .pop())
        })
        .await
    }

    async fn jobs_for_item(&self, key: &ItemKey) -> Result<Vec<Job>> {
        let key = key.to_string();
        self.read(move |w| {
            w.rows(
                concat!("SELECT ", job_columns!(), " FROM jobs WHERE item = ?1 ORDER BY id"),
                params![key],
                job_from_row,
            )
        })
        .await
    }

    async fn active_job(&self, key: &ItemKey) -> Result<Option<Job>> {
        let key = key.to_string();
        self.read(move |w| {
            Ok(w.rows(
                concat!(
                    "SELECT ",
                    job_columns!(),
                    " FROM jobs WHERE item = ?1 AND status IN ('queued', 'running', 'finishing')"
                ),
                params![key],
                job_from_row,
            )?
            .pop())
        })
        .await
    }

    async fn claim_jobs(&self, node: &str, limit: u32, now: Timestamp, lease_ttl: Duration) -> Result<Vec<Job>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let node = node.to_owned();
        self.write(Result::is_ok, move |w| w.claim_jobs(&node, limit, now, lease_ttl)).await
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
        self.write(Result::is_ok, move |w| w.renew_leases(&node, &jobs, now, lease_ttl)).await
    }

    async fn record_started(&self, job: JobId, epoch: i64, run: RunInfo, now: Timestamp) -> Result<()> {
        self.write(Result::is_ok, move |w| w.record_started(job, epoch, &run, now)).await
    }

    async fn record_finished(&self, job: JobId, epoch: i64, exit: ExitInfo, now: Timestamp) -> Result<()> {
        self.write(Result::is_ok, move |w| w.record_finished(job, epoch, &exit, now)).await
    }

    async fn record_gate_result(&self, job: JobId, epoch: i64, result: GateResult, now: Timestamp) -> Result<()> {
        self.write(Result::is_ok, move |w| w.record_gate_result(job, epoch, &result, now)).await
    }

    async fn gate_results(&self, job: JobId) -> Result<Vec<GateResult>> {
        self.read(move |w| {
            w.rows(
                "SELECT gate, passed, exit_code, metric, duration_ms, reason, sha FROM gate_results \
                 WHERE job = ?1 ORDER BY id",
                params![job.0],
                gate_result_from_row,
            )
        })
        .await
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
        let (branch, head_sha, events) = (branch.to_owned(), head_sha.to_owned(), events.to_vec());
        self.write(Result::is_ok, move |w| w.record_push(job, epoch, &branch, &head_sha, &events, now)).await
    }

    async fn open_pr(&self, new: NewPr, now: Timestamp) -> Result<(PullRequest, bool)> {
        common::validate_new_pr(&new)?;
        self.write(Result::is_ok, move |w| w.open_pr(new, now)).await
    }

    async fn update_pr(&self, item: &ItemKey, update: PrUpdate, now: Timestamp) -> Result<PullRequest> {
        let item = item.clone();
        self.write(Result::is_ok, move |w| w.update_pr(&item, update, now)).await
    }

    async fn get_pr(&self, item: &ItemKey) -> Result<Option<PullRequest>> {
        let item = item.clone();
        self.read(move |w| w.pr(&item)).await
    }

    async fn list_prs(&self, repo: Option<&str>, state: Option<&str>) -> Result<Vec<PullRequest>> {
        if let Some(state) = state {
            common::check_pr_state(state)?;
        }
        let (repo, state) = (repo.map(str::to_owned), state.map(str::to_owned));
        self.read(move |w| {
            w.rows(
                concat!(
                    pr_select!(),
                    "JOIN items i ON i.key = p.item WHERE (?1 IS NULL OR p.repo = ?1) AND (?2 IS NULL OR p.state = ?2) \
                     ORDER BY i.prefix, i.number"
                ),
                params![repo, state],
                some_pr_from_row,
            )
        })
        .await
    }

    async fn find_pr_by_branch(&self, branch: &str) -> Result<Option<PullRequest>> {
        let branch = branch.to_owned();
        self.read(move |w| {
            Ok(w.rows(concat!(pr_select!(), "WHERE p.branch = ?1"), params![branch], some_pr_from_row)?.pop())
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
        when: TakeOver,
        reason: &str,
    ) -> Result<Option<Job>> {
        let (node, reason) = (node.to_owned(), reason.to_owned());
        self.write(
            |r| matches!(r, Ok(Some(_))),
            move |w| w.take_over(job, expected_epoch, &node, now, lease_ttl, when, &reason),
        )
        .await
    }

    async fn release_job(&self, job: JobId, epoch: i64, reason: &str, now: Timestamp) -> Result<()> {
        let reason = reason.to_owned();
        self.write(Result::is_ok, move |w| w.release_job(job, epoch, &reason, now)).await?;
        self.signal.notify_waiters();
        Ok(())
    }

    async fn commit_transition(&self, commit: TransitionCommit, now: Timestamp) -> Result<CommitOutcome> {
        common::validate_commit(&commit)?;
        // A job claimed by the commit is nobody else's: no one needs waking for it.
        let queues = commit.claim_next.is_none();
        let out = self
            .write(|r| matches!(r, Ok(CommitOutcome::Applied { .. })), move |w| w.commit_transition(&commit, now))
            .await?;
        if queues && matches!(out, CommitOutcome::Applied { enqueued: Some(_) }) {
            self.signal.notify_waiters();
        }
        Ok(out)
    }

    async fn append_events(&self, events: &[NewEvent], now: Timestamp) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let events = events.to_vec();
        self.write(Result::is_ok, move |w| w.insert_events(&events, now)).await
    }

    async fn expired_running(&self, now: Timestamp, limit: u32) -> Result<Vec<Job>> {
        self.read(move |w| w.rows(W::EXPIRED_RUNNING, params![now.as_millis(), limit], job_from_row)).await
    }

    async fn stale_finishing(&self, finished_before: Timestamp, limit: u32) -> Result<Vec<Job>> {
        self.read(move |w| w.rows(W::STALE_FINISHING, params![finished_before.as_millis(), limit], job_from_row)).await
    }

    async fn overdue(&self, started_before: Timestamp, limit: u32) -> Result<Vec<Job>> {
        self.read(move |w| w.rows(W::OVERDUE, params![started_before.as_millis(), limit], job_from_row)).await
    }

    async fn jobs_owned_by(&self, node: &str) -> Result<Vec<Job>> {
        let node = node.to_owned();
        self.read(move |w| {
            w.rows(
                concat!(
                    "SELECT ",
                    job_columns!(),
                    " FROM jobs WHERE status IN ('running', 'finishing') AND owner = ?1 ORDER BY id"
                ),
                params![node],
                job_from_row,
            )
        })
        .await
    }

    async fn events_for_item(&self, key: &ItemKey) -> Result<Vec<Event>> {
        let key = key.to_string();
        self.read(move |w| {
            w.rows(
                concat!("SELECT ", event_columns!(), " FROM events WHERE item = ?1 ORDER BY seq"),
                params![key],
                event_from_row,
            )
        })
        .await
    }

    async fn events_since(&self, after: i64, limit: u32) -> Result<Vec<Event>> {
        // One writer at a time means seqs are assigned in commit order: a reader
        // never sees seq n+1 before seq n.
        self.read(move |w| w.rows(W::EVENTS_SINCE, params![after, limit], event_from_row)).await
    }

    async fn event_head(&self) -> Result<EventPosition> {
        // One writer commits seqs in order, so the largest seq is settled.
        let seq = self.read(|w| w.one::<i64>("SELECT seq FROM events ORDER BY seq DESC LIMIT 1", [])).await?;
        Ok(seq.map_or(EventPosition::START, |seq| EventPosition { xid: 0, seq }))
    }

    async fn event_position(&self, seq: i64) -> Result<Option<EventPosition>> {
        let found = self.read(move |w| w.one::<i64>("SELECT seq FROM events WHERE seq = ?1", params![seq])).await?;
        Ok(found.map(|seq| EventPosition { xid: 0, seq }))
    }

    async fn events_after(
        &self,
        after: EventPosition,
        item: Option<&ItemKey>,
        limit: u32,
    ) -> Result<Vec<PositionedEvent>> {
        // Seq order is commit order here (one writer), so seq alone is the position.
        let item = item.map(ToString::to_string);
        let events = self
            .read(move |w| match item {
                None => w.rows(W::EVENTS_SINCE, params![after.seq, limit], event_from_row),
                Some(item) => w.rows(W::ITEM_EVENTS_SINCE, params![item, after.seq, limit], event_from_row),
            })
            .await?;
        Ok(events
            .into_iter()
            .map(|event| PositionedEvent { position: EventPosition { xid: 0, seq: event.seq }, event })
            .collect())
    }

    async fn record_reaper_pass(&self, counts: ReaperPassCounts, at: Timestamp) -> Result<()> {
        self.write(Result::is_ok, move |w| {
            w.execute(
                "UPDATE reaper_counters SET value = CASE name \
                 WHEN 'finalizer_defers' THEN value + ?1 WHEN 'reaped_tier1' THEN value + ?2 \
                 WHEN 'reaped_tier2' THEN value + ?3 WHEN 'reaped_tier3' THEN value + ?4 \
                 WHEN 'last_pass_at' THEN MAX(value, ?5) ELSE value END",
                params![
                    common::count_i64(counts.finalizer_defers),
                    common::count_i64(counts.reaped_tier1),
                    common::count_i64(counts.reaped_tier2),
                    common::count_i64(counts.reaped_tier3),
                    at.as_millis()
                ],
            )
            .map(|_| ())
        })
        .await
    }

    async fn reaper_totals(&self, now: Timestamp) -> Result<ReaperTotals> {
        let rows = self
            .read(move |w| {
                w.rows(
                    "SELECT name, value FROM reaper_counters UNION ALL \
                     SELECT 'finalizer_owned', COUNT(*) FROM jobs WHERE status = 'finishing' AND lease_expires_at > ?1",
                    params![now.as_millis()],
                    |r| {
                        let name: String = r.get(0).map_err(|e| corrupt("reaper_counters", e))?;
                        let value: i64 = r.get(1).map_err(|e| corrupt("reaper_counters", e))?;
                        Ok((name, value))
                    },
                )
            })
            .await?;
        Ok(common::reaper_totals(&rows))
    }

    async fn queue_stats(&self) -> Result<QueueStats> {
        // One read transaction, so the counts agree with each other.
        self.read(|w| {
            // In memory the read runs inside the writer's transaction already.
            let own_tx = w.conn.is_autocommit();
            if own_tx {
                w.conn.execute_batch("BEGIN").map_err(|e| w.err(e))?;
            }
            let stats = w.queue_stats();
            if own_tx {
                let _ = w.conn.execute_batch("COMMIT");
            }
            stats
        })
        .await
    }

    async fn register_node(
        &self,
        reg: NodeRegistration,
        now: Timestamp,
        live_for: Duration,
    ) -> Result<Option<NodeRecord>> {
        self.write(Result::is_ok, move |w| w.register_node(&reg, now, live_for)).await
    }

    async fn touch_node(&self, id: &str, incarnation: &str, now: Timestamp, clock_offset_ms: i64) -> Result<bool> {
        let (id, incarnation) = (id.to_owned(), incarnation.to_owned());
        self.write(Result::is_ok, move |w| {
            let n = w.execute(
                "UPDATE nodes SET last_seen = ?3, clock_offset_ms = ?4 \
                 WHERE id = ?1 AND incarnation = ?2 AND stopped_at IS NULL",
                params![id, incarnation, now.as_millis(), clock_offset_ms],
            )?;
            Ok(n == 1)
        })
        .await
    }

    async fn deregister_node(&self, id: &str, incarnation: &str, now: Timestamp) -> Result<()> {
        let (id, incarnation) = (id.to_owned(), incarnation.to_owned());
        self.write(Result::is_ok, move |w| {
            w.execute(
                "UPDATE nodes SET stopped_at = ?3 WHERE id = ?1 AND incarnation = ?2 AND stopped_at IS NULL",
                params![id, incarnation, now.as_millis()],
            )
            .map(|_| ())
        })
        .await
    }

    async fn nodes(&self) -> Result<Vec<NodeRecord>> {
        self.read(|w| w.rows(concat!("SELECT ", node_columns!(), " FROM nodes ORDER BY id"), [], node_from_row)).await
    }

    async fn store_time(&self) -> Result<Option<Timestamp>> {
        // SQLite's clock is this process's own clock: measuring an offset to it
        // would always give zero, so there is nothing to report.
        Ok(None)
    }
}

#[cfg(test)]
mod tests;
