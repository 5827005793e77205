//! Connecting to PostgreSQL: the sessions' server-side bounds, the pool, the
//! migrations under an advisory lock, and the LISTEN / NOTIFY helper tasks.

use super::*;

/// The URL's connect options with the server-side bounds every session of the
/// store runs under. They come after the URL's own `options`, so a URL cannot
/// loosen them.
pub(super) fn connect_options(url: &str, shown: &str) -> Result<PgConnectOptions> {
    let opts = PgConnectOptions::from_str(url)
        .map_err(|e| Error::Unavailable { url: shown.to_owned(), reason: format!("bad URL: {e}") })?;
    Ok(opts.options([
        ("statement_timeout", pg_millis(STATEMENT_TIMEOUT)),
        ("idle_in_transaction_session_timeout", pg_millis(IDLE_IN_TRANSACTION_TIMEOUT)),
    ]))
}

/// The main pool's settings.
pub(super) fn pool_options() -> PgPoolOptions {
    PgPoolOptions::new().max_connections(POOL_CONNECTIONS).acquire_timeout(ACQUIRE_TIMEOUT)
}

/// A duration as a PostgreSQL setting value in milliseconds (`"5000ms"`).
pub(super) fn pg_millis(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

/// Applies every embedded migration newer than the database's, in one transaction
/// under an advisory lock, so nodes starting together do not race.
pub(super) async fn migrate(pool: &PgPool, url: &str) -> Result<()> {
    let migration_err = |e: sqlx::Error| match common::map_err(url, e) {
        e @ Error::Unavailable { .. } => e,
        other => Error::Migration { url: url.to_owned(), reason: other.to_string() },
    };
    let mut tx = pool.begin().await.map_err(migration_err)?;
    // Waiting for another node's migration, or rebuilding an index, may outlast
    // STATEMENT_TIMEOUT; this transaction alone gets the migration bound.
    sqlx::query(sqlx::AssertSqlSafe(format!("SET LOCAL statement_timeout = '{}'", pg_millis(MIGRATION_TIMEOUT))))
        .execute(&mut *tx)
        .await
        .map_err(migration_err)?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(MIGRATION_LOCK)
        .execute(&mut *tx)
        .await
        .map_err(migration_err)?;
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)",
    )
    .execute(&mut *tx)
    .await
    .map_err(migration_err)?;
    let found: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(version), 0)::BIGINT FROM schema_migrations")
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
             VALUES ($1, (EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT)",
        )
        .bind(version)
        .execute(&mut *tx)
        .await
        .map_err(migration_err)?;
        tracing::info!(store = %url, version, "applied migration");
    }
    tx.commit().await.map_err(migration_err)
}

/// Wakes `signal` on every `orch_jobs` notification. Policy: runs until the store
/// is dropped (aborted then); on error it logs, backs off (bounded) and reconnects,
/// and wakes the signal anyway since notifications may have been missed meanwhile.
pub(super) async fn listen_task(pool: PgPool, signal: Arc<Notify>, url: String) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let mut listener = match PgListener::connect_with(&pool).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(store = %url, error = %e, "cannot connect for LISTEN; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(LISTEN_BACKOFF_MAX);
                continue;
            }
        };
        if let Err(e) = listener.listen(CHANNEL).await {
            tracing::warn!(store = %url, error = %e, "LISTEN failed; retrying");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(LISTEN_BACKOFF_MAX);
            continue;
        }
        backoff = Duration::from_millis(100);
        signal.notify_waiters();
        loop {
            match listener.recv().await {
                Ok(_) => signal.notify_waiters(),
                Err(e) => {
                    tracing::warn!(store = %url, error = %e, "LISTEN connection lost; reconnecting");
                    signal.notify_waiters();
                    tokio::time::sleep(backoff).await;
                    break;
                }
            }
        }
    }
}

/// Sends one `NOTIFY orch_jobs` per burst of pokes. Policy: runs until the store is
/// dropped (aborted then) or every sender is gone; a failed or unanswered NOTIFY
/// (bounded by `CALL_TIMEOUT`, so a frozen network cannot stop the task for good)
/// is logged and dropped (other nodes poll).
pub(super) async fn notify_task(pool: PgPool, mut rx: mpsc::Receiver<()>, url: String) {
    while rx.recv().await.is_some() {
        let sent = sqlx::query("SELECT pg_notify($1, '')").bind(CHANNEL).execute(&pool);
        match tokio::time::timeout(CALL_TIMEOUT, sent).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::warn!(store = %url, error = %e, "NOTIFY failed; other nodes will find the job by polling");
            }
            Err(_) => tracing::warn!(
                store = %url,
                timeout = ?CALL_TIMEOUT,
                "NOTIFY got no answer; other nodes will find the job by polling"
            ),
        }
    }
}
