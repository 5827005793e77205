//! Bulk data for benchmarks: a store that looks like a long-lived deployment.

use sqlx::Connection as _;

/// Bulk-loads `n` items into the migrated store at `url` in the shape of a
/// long-lived deployment, straight through SQL, since creating them one by one
/// would take minutes: keys `Q-1`… of repo `bench` at stage `deploy`, 1 %
/// running (their leases expired long ago), 1 % queued, the rest done; four jobs
/// each. For the store's and the API's benchmarks.
///
/// # Panics
/// When the store cannot be reached or refuses the load.
pub async fn bulk_load_items(url: &str, n: usize) {
    let n = i64::try_from(n).unwrap_or(i64::MAX);
    let items = "INSERT INTO items (key, prefix, number, repo, kind, title, body, track, stage, status, version, \
                 attempts, created_at, updated_at) \
                 SELECT 'Q-' || i, 'Q', i, 'bench', 'bug', 'item ' || i, '', 'quick', 'deploy', \
                 CASE i % 100 WHEN 0 THEN 'running' WHEN 1 THEN 'queued' ELSE 'done' END, 4, '{}', 0, 0 FROM n";
    let done_jobs = "INSERT INTO jobs (item, stage, attempt, status, epoch, queued_at, started_at, finished_at, owner) \
                     SELECT i.key, s.stage, 1, 'done', 1, 0, 0, 1, 'n1' FROM items i, \
                     (SELECT 'development' AS stage UNION ALL SELECT 'testing' UNION ALL SELECT 'deploy-staging') s";
    let last_jobs = "INSERT INTO jobs (item, stage, attempt, status, epoch, queued_at, started_at, finished_at, owner, \
                     lease_expires_at) SELECT key, 'deploy', 1, status, 1, 0, \
                     CASE WHEN status = 'queued' THEN NULL ELSE 0 END, CASE WHEN status = 'done' THEN 1 END, \
                     CASE WHEN status = 'queued' THEN NULL ELSE 'n1' END, \
                     CASE WHEN status = 'running' THEN 1700000030000 END FROM items";
    if let Some(path) = url.strip_prefix("sqlite://") {
        let c = rusqlite::Connection::open(path).expect("open");
        let series = format!("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {n}) ");
        c.execute_batch(&format!("BEGIN; {series}{items}; {done_jobs}; {last_jobs}; COMMIT; ANALYZE;")).expect("load");
    } else {
        let mut c = sqlx::PgConnection::connect(url).await.expect("connect");
        let series = format!("WITH n AS (SELECT generate_series(1, {n}) AS i) ");
        for q in [format!("{series}{items}"), done_jobs.to_owned(), last_jobs.to_owned(), "VACUUM ANALYZE".to_owned()] {
            sqlx::raw_sql(sqlx::AssertSqlSafe(q)).execute(&mut c).await.expect("load");
        }
    }
}
