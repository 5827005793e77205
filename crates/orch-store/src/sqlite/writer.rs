//! The SQLite store's threads: one writer that group-commits every queued write
//! in one transaction (each in its own savepoint), and the readers.

use super::*;

/// Called with the batch's commit error (if any) once the batch has ended.
pub(super) type Finish = Box<dyn FnOnce(Option<&Error>) + Send>;
/// One queued write: run inside the batch (or told why the batch could not start);
/// says whether to keep its changes, and how to answer its caller after commit.
pub(super) type WriteOp = Box<dyn FnOnce(std::result::Result<&Connection, Error>) -> Ran + Send>;

/// What running one queued write left for the batch to decide.
pub(super) struct Ran {
    /// Whether its changes stay (else it is rolled back to its savepoint).
    pub(super) kept: bool,
    /// Its own failure, if it failed: what every write of the batch is told when
    /// that failure made SQLite roll the whole transaction back.
    pub(super) error: Option<Error>,
    pub(super) finish: Finish,
}
/// One queued read, answering its caller itself.
pub(super) type ReadOp = Box<dyn FnOnce(&Connection) + Send>;

/// Wraps `body` as a queued write for `run_batch`, and returns the receiver its
/// caller's answer arrives on once the batch has ended.
pub(super) fn write_op<T, F>(
    url: Arc<str>,
    keep: fn(&Result<T>) -> bool,
    body: F,
) -> (WriteOp, oneshot::Receiver<Result<T>>)
where
    T: Send + 'static,
    F: FnOnce(W<'_>) -> Result<T> + Send + 'static,
{
    let (reply, answer) = oneshot::channel::<Result<T>>();
    let op: WriteOp = Box::new(move |conn| {
        let result = match conn {
            Ok(conn) => body(W { conn, url: &url }),
            Err(e) => Err(e),
        };
        let kept = keep(&result);
        let error = result.as_ref().err().cloned();
        let finish: Finish = Box::new(move |commit_err| {
            // When the batch fails, every write in it gets the error, kept or not:
            // a write that was refused (fenced, conflict) may have been judged
            // against a batch-mate's changes that were never committed.
            let answer = match commit_err {
                Some(e) => Err(e.clone()),
                None => result,
            };
            let _ = reply.send(answer);
        });
        Ran { kept, error, finish }
    });
    (op, answer)
}

pub(super) fn spawn_thread<F: FnOnce() + Send + 'static>(name: &str, f: F) -> Result<()> {
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(f)
        .map(|_| ())
        .map_err(|e| Error::Database(format!("cannot start thread {name}: {e}")))
}

/// The single writer. Policy: runs until the store (every sender) is dropped, then
/// ends after the last batch; a failed batch is reported to its callers and the
/// thread goes on with the next.
pub(super) fn writer_thread(conn: Connection, url: &str, mut queue: mpsc::Receiver<WriteOp>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = queue.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        run_batch(&conn, url, std::mem::take(&mut batch));
    }
}

/// A reader. Policy: runs until the store is dropped.
pub(super) fn reader_thread(conn: Connection, queue: &Mutex<mpsc::Receiver<ReadOp>>) {
    loop {
        // The lock is held only while waiting: the other readers are idle then too.
        let op = match queue.lock() {
            Ok(mut q) => q.blocking_recv(),
            Err(_) => return,
        };
        match op {
            Some(op) => op(&conn),
            None => return,
        }
    }
}

pub(super) fn exec(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

/// Runs `ops` in one `BEGIN IMMEDIATE` transaction, each in a savepoint unless it
/// is alone, commits once, then answers every caller.
///
/// Once the batch cannot commit (it is poisoned), the writes still queued in it
/// are failed without running. That matters most when a write hits SQLITE_FULL,
/// SQLITE_IOERR or SQLITE_NOMEM: SQLite may then roll the whole transaction back
/// by itself, and a later write's `SAVEPOINT` would open a transaction of its own
/// that its `RELEASE` commits — a durable write reported as failed. So after
/// every write the connection is asked whether it is still inside the batch's
/// transaction (`is_autocommit`); if not, the failed write's error goes to every
/// write of the batch: the earlier ones were rolled back with it.
pub(super) fn run_batch(conn: &Connection, url: &str, ops: Vec<WriteOp>) {
    if let Err(e) = exec(conn, "BEGIN IMMEDIATE") {
        let e = map_err(url, e);
        for op in ops {
            (op(Err(e.clone())).finish)(None);
        }
        return;
    }
    let alone = ops.len() == 1;
    let mut finishes = Vec::with_capacity(ops.len());
    let mut any_kept = false;
    // Why nothing of the batch may commit: a savepoint that could not be rolled
    // back (a failed write's partial changes would stay), or a transaction SQLite
    // rolled back itself.
    let mut poisoned: Option<Error> = None;
    for op in ops {
        if let Some(e) = &poisoned {
            (op(Err(e.clone())).finish)(None);
            continue;
        }
        if !alone && let Err(e) = exec(conn, "SAVEPOINT op") {
            let e = map_err(url, e);
            (op(Err(e.clone())).finish)(None);
            poisoned = Some(e);
            continue;
        }
        let Ran { kept, error, finish } = op(Ok(conn));
        finishes.push(finish);
        if conn.is_autocommit() {
            poisoned = Some(error.unwrap_or_else(|| rolled_back_without_error(url)));
            continue;
        }
        any_kept |= kept;
        if alone {
            continue;
        }
        let ended = if kept { Ok(()) } else { exec(conn, "ROLLBACK TO op") }.and_then(|()| exec(conn, "RELEASE op"));
        if let Err(e) = ended {
            poisoned = Some(map_err(url, e));
        }
    }
    let outcome = match poisoned {
        Some(e) => Err(e),
        None if any_kept => exec(conn, "COMMIT").map_err(|e| map_err(url, e)),
        None => exec(conn, "ROLLBACK").map_err(|e| map_err(url, e)),
    };
    if let Err(e) = &outcome {
        // A poisoned batch, or a failed COMMIT, may leave the transaction open; end it
        // so the next batch starts clean (SQLite may have ended it already).
        if !conn.is_autocommit() {
            let _ = exec(conn, "ROLLBACK");
        }
        tracing::warn!(store = %url, error = %e, "write batch failed");
    }
    for finish in finishes {
        finish(outcome.as_ref().err());
    }
}

/// The error for a write that returned success although SQLite had rolled the
/// batch's transaction back under it (a write must never swallow such an error).
pub(super) fn rolled_back_without_error(url: &str) -> Error {
    Error::Database(format!("{url}: SQLite rolled the write batch back although no write reported an error"))
}
