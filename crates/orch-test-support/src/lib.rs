//! What orch's test suites share: a fresh PostgreSQL database per test on the
//! server named by `ORCH_TEST_DATABASE_URL`, dropped when the test ends, pass or
//! fail; and the base config the engine's scenarios start from. One copy, so
//! every suite finds the server the same way and fails the same loud way when it
//! is missing (a test that needs a service and cannot find it must fail, never
//! skip). The real agent CLIs (Claude Code, Codex) are found through
//! [`agent_cli`] and run against the scripted [`model_stub`].

use std::future::Future;

mod bulk;
mod config;
mod git;
pub mod model_stub;

pub use bulk::bulk_load_items;

pub use config::{FAST_REAPER, config_text};
pub use git::{PRE_RECEIVE_ONLY_ITEM_MERGES, git_out, install_hook, origin_for, origin_with_ignore, remote_sha};

/// The admin URL of the test server: `ORCH_TEST_DATABASE_URL`, or the local
/// server `scripts/test` makes sure of.
pub fn pg_admin_url() -> String {
    std::env::var("ORCH_TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// The path of a real agent CLI the tests drive: `claude` (from
/// `ORCH_TEST_CLAUDE_BIN`) or `codex` (from `ORCH_TEST_CODEX_BIN`), which
/// `scripts/ensure-agent-clis` installs at pinned versions and `scripts/test`
/// exports. Without the variable, the default cache folder that script fills is
/// tried.
///
/// # Panics
/// When the program is not there: a test that needs it fails loudly, never skips.
pub fn agent_cli(name: &str) -> std::path::PathBuf {
    let var = match name {
        "claude" => "ORCH_TEST_CLAUDE_BIN",
        "codex" => "ORCH_TEST_CODEX_BIN",
        other => panic!("no agent CLI named {other}"),
    };
    let path = std::env::var_os(var).map(std::path::PathBuf::from).or_else(|| {
        let cache = std::env::var_os("XDG_CACHE_HOME")
            .map(std::path::PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".cache")))?;
        Some(cache.join("orch-test-tools/npm/node_modules/.bin").join(name))
    });
    match path {
        Some(p) if p.is_file() => p,
        other => panic!(
            "the {name} CLI is not installed (looked at {other:?}, from ${var} or the default cache): \
             run scripts/ensure-agent-clis, or scripts/test, which does (these tests are never skipped)"
        ),
    }
}

/// `url` with its database name replaced by `db`; a `?query` (say `sslmode`)
/// is kept.
pub fn with_database(url: &str, db: &str) -> String {
    let (base, query) = url.split_once('?').map_or((url, None), |(b, q)| (b, Some(q)));
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let base = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{db}?{q}"),
        None => format!("{base}/{db}"),
    }
}

/// Runs `f` on a small runtime of its own in a thread of its own, so it works
/// from sync tests, from inside another runtime, and while a test unwinds.
fn block_on<T: Send + 'static>(f: impl Future<Output = T> + Send + 'static) -> Option<T> {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
        Some(rt.block_on(f))
    })
    .join()
    .ok()
    .flatten()
}

async fn admin_execute(sql: String) -> Result<(), String> {
    use sqlx::Connection;
    let admin = pg_admin_url();
    let mut conn = sqlx::PgConnection::connect(&admin).await.map_err(|e| {
        format!(
            "cannot reach the test PostgreSQL server at {admin}: {e}\n\
                 start it (scripts/ensure-postgres), or point ORCH_TEST_DATABASE_URL at one \
                 (these tests are never skipped)"
        )
    })?;
    sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
        .execute(&mut conn)
        .await
        .map_err(|e| format!("{sql} on {admin}: {e}"))?;
    Ok(())
}

/// A database created for one test and dropped (with its connections) on drop.
#[derive(Debug)]
pub struct PgDatabase {
    name: String,
    url: String,
}

impl PgDatabase {
    /// Creates `<prefix>_<random>` on the test server.
    ///
    /// # Panics
    /// When the server cannot be reached or refuses: the test must fail loudly.
    pub fn create(prefix: &str) -> Self {
        let name = format!("{prefix}_{:016x}", rand::random::<u64>());
        let created = block_on(admin_execute(format!("CREATE DATABASE {name}")));
        match created {
            Some(Ok(())) => {}
            Some(Err(e)) => panic!("{e}"),
            None => panic!("could not create a test database on {}", pg_admin_url()),
        }
        Self { url: with_database(&pg_admin_url(), &name), name }
    }

    /// The database's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let _ = block_on(admin_execute(format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name)));
    }
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn with_database_replaces_only_the_database_name() {
        assert_eq!(with_database("postgres://u@h:5432/test", "t1"), "postgres://u@h:5432/t1");
        assert_eq!(with_database("postgres://u@h:5432", "t1"), "postgres://u@h:5432/t1");
        assert_eq!(with_database("postgres://u@h/test?sslmode=disable", "t1"), "postgres://u@h/t1?sslmode=disable");
    }
}

/// The store backends a suite runs its scenarios on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// A SQLite file in the test's folder.
    Sqlite,
    /// A fresh database on the test PostgreSQL server (`ORCH_TEST_DATABASE_URL`).
    Postgres,
}

impl Backend {
    /// The store URL a test opens on this backend: `orch.db` in `dir`, or a fresh
    /// PostgreSQL database named after `pg_prefix`, returned beside the URL so it
    /// lives (and is dropped) with the test.
    pub fn store_url(self, dir: &std::path::Path, pg_prefix: &str) -> (String, Option<PgDatabase>) {
        match self {
            Backend::Sqlite => (format!("sqlite://{}", dir.join("orch.db").display()), None),
            Backend::Postgres => {
                let db = PgDatabase::create(pg_prefix);
                (db.url().to_owned(), Some(db))
            }
        }
    }
}

/// Runs each named `async fn(Backend)` scenario twice, as `sqlite::NAME` and
/// `postgres::NAME`, on a two-thread runtime, so one suite proves both backends
/// and a failure names the one that broke. `Backend` must be in scope where the
/// macro is used.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
               async fn $name() { super::$name(super::Backend::Sqlite).await } )*
        }
        mod postgres {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
               async fn $name() { super::$name(super::Backend::Postgres).await } )*
        }
    };
}
