//! The HTTP API's latency benchmark (`cargo bench -p orch-server --bench
//! api_bench`): `GET /queue` and `GET /items?limit=50` with `ORCH_BENCH_ITEMS`
//! (default 100,000) items in the store, under `ORCH_BENCH_CLIENTS` (default 32)
//! concurrent keep-alive clients, on SQLite and PostgreSQL; p50/p99 and requests/s
//! as `wrk --latency` measures them.
//!
//! The server is the real router (every layer: request ids, access log, auth,
//! body limits) on a real socket in this process, writing its access log through
//! a `tracing` subscriber into a sink, so formatting each line is paid for as in
//! `orch serve`. No node runs beside it: the figures are the API's and the
//! store's, not a scheduler's. `wrk` (Debian package; `scripts/ensure-bench-tools`)
//! is the load generator, in its own process.
//!
//! Knobs: `ORCH_BENCH_BACKENDS` (default `sqlite,postgres`), `ORCH_BENCH_SECS`
//! (seconds per case, default 10), `ORCH_TEST_DATABASE_URL` (the PostgreSQL
//! server; a fresh database per backend, dropped after).

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;

use orch_core::Timestamp;
use orch_engine::{Clock, ManualClock};
use orch_server::{AppState, router};

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

/// A store of the given backend with `n` bulk-loaded items; the guard keeps the
/// SQLite folder or the PostgreSQL database alive.
async fn store_with_items(
    backend: &str,
    n: usize,
) -> (Arc<dyn orch_store::Store>, Option<tempfile::TempDir>, Option<orch_test_support::PgDatabase>) {
    let (url, dir, pg) = if backend == "sqlite" {
        let dir = tempfile::tempdir().expect("temp dir");
        (format!("sqlite://{}", dir.path().join("orch.db").display()), Some(dir), None)
    } else {
        let db = orch_test_support::PgDatabase::create("orch_api_bench");
        (db.url().to_owned(), None, Some(db))
    };
    drop(orch_store::open(&url).await.expect("open (migrate)"));
    orch_test_support::bulk_load_items(&url, n).await;
    (orch_store::open(&url).await.expect("open"), dir, pg)
}

/// Latency in milliseconds from wrk's `1.23ms` / `456.78us` / `1.02s`.
fn millis(text: &str) -> Option<f64> {
    let (num, unit) = text.split_at(text.find(|c: char| c.is_ascii_alphabetic())?);
    let n: f64 = num.parse().ok()?;
    Some(match unit {
        "us" => n / 1000.0,
        "ms" => n,
        "s" => n * 1000.0,
        "m" => n * 60_000.0,
        _ => return None,
    })
}

/// Runs wrk against `url` and returns (p50 ms, p99 ms, requests/s).
fn wrk(url: &str, clients: usize, secs: u64) -> (f64, f64, f64) {
    let threads = clients.min(2);
    let out = Command::new("wrk")
        .args(["-t", &threads.to_string(), "-c", &clients.to_string(), "-d", &format!("{secs}s"), "--latency", url])
        .output()
        .unwrap_or_else(|e| panic!("cannot run wrk ({e}): run scripts/ensure-bench-tools"));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "wrk failed: {text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(!text.contains("Non-2xx"), "the API answered errors under load:\n{text}");
    assert!(!text.contains("Socket errors"), "connections failed under load:\n{text}");
    let pct = |p: &str| {
        text.lines()
            .map(str::trim)
            .find_map(|l| l.strip_prefix(p).map(str::trim))
            .and_then(millis)
            .unwrap_or_else(|| panic!("no {p} in wrk's output:\n{text}"))
    };
    let rps = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no Requests/sec in wrk's output:\n{text}"));
    (pct("50%"), pct("99%"), rps)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    // The access log is formatted as `orch serve` would, into a sink.
    tracing_subscriber::fmt().with_writer(std::io::sink).with_ansi(false).init();
    let n: usize = env_or("ORCH_BENCH_ITEMS", "100000").parse().expect("ORCH_BENCH_ITEMS");
    let clients: usize = env_or("ORCH_BENCH_CLIENTS", "32").parse().expect("ORCH_BENCH_CLIENTS");
    let secs: u64 = env_or("ORCH_BENCH_SECS", "10").parse().expect("ORCH_BENCH_SECS");
    let config_dir = tempfile::tempdir().expect("temp dir");
    let text = orch_test_support::config_text("", orch_test_support::FAST_REAPER);
    let path = config_dir.path().join("orch.toml");
    std::fs::write(&path, &text).expect("write config");
    let config = Arc::new(orch_core::config::load(&path, &text, &BTreeMap::new()).expect("config"));
    println!("| backend  | route              | items   | clients |  p50 ms |  p99 ms |  req/s |");
    println!("|----------|--------------------|--------:|--------:|--------:|--------:|-------:|");
    for backend in env_or("ORCH_BENCH_BACKENDS", "sqlite,postgres").split(',').map(str::trim) {
        let (store, _dir, _pg) = store_with_items(backend, n).await;
        let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(Timestamp::from_millis(1_700_000_060_000)));
        let app = router(AppState::new(Arc::clone(&store), Arc::clone(&config), Arc::clone(&clock)));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        // What the routes return, checked once before timing them.
        let queue = orch_server::queue::document(store.as_ref(), &config, clock.now()).await.expect("queue");
        assert_eq!(queue["running"].as_array().map(Vec::len), Some(n / 100), "the load is not as expected");
        for route in ["/queue", "/items?limit=50"] {
            let (p50, p99, rps) =
                tokio::task::spawn_blocking(move || wrk(&format!("http://{addr}{route}"), clients, secs))
                    .await
                    .expect("wrk task");
            println!("| {backend:<8} | {route:<18} | {n:>7} | {clients:>7} | {p50:>7.2} | {p99:>7.2} | {rps:>6.0} |");
        }
        server.abort();
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn wrk_units_are_read() {
        assert_eq!(super::millis("1.50ms"), Some(1.5));
        assert_eq!(super::millis("250.00us"), Some(0.25));
        assert_eq!(super::millis("1.02s"), Some(1020.0));
        assert_eq!(super::millis("x"), None);
    }
}
