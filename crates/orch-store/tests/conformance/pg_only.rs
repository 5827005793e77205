//! PostgreSQL-only behaviour that the trait cannot show on SQLite (which has one
//! writer at a time): seqs committed out of order, index use of the hot queries,
//! and a call over a frozen network ending within its deadline.

use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use orch_core::{EventKind, ItemKey};
use orch_store::{Error, NewEvent};
use sqlx::Connection;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::support::{T0, TestDb};

/// A transaction holding seq n open while seq n+1 commits: `events_since` hands out
/// neither until n commits, so a tailing reader never skips n.
#[tokio::test]
async fn events_since_never_skips_a_seq_still_in_flight() {
    let db = TestDb::postgres().await;
    let key: ItemKey = "SHOP-1".parse().unwrap();
    let mut slow = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let mut tx = slow.begin().await.unwrap();
    let held: i64 = sqlx::query_scalar(
        "INSERT INTO events (at, item, kind, data) VALUES (0, 'SHOP-1', 'reaper.deferred', '{}') RETURNING seq",
    )
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    db.store.append_events(&[NewEvent::new(key.clone(), EventKind::ReaperReaped)], T0).await.unwrap();
    let early = db.store.events_since(0, 100).await.unwrap();
    assert!(early.is_empty(), "handed out {early:?} while seq {held} was in flight");
    tx.commit().await.unwrap();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    let all = loop {
        let all = db.store.events_since(0, 100).await.unwrap();
        if all.len() == 2 || tokio::time::Instant::now() > deadline {
            break all;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    };
    let kinds: Vec<&str> = all.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["reaper.deferred", "reaper.reaped"]);
    assert_eq!(all[0].seq, held);
}

/// The order `events_after` hands out is the writing transactions' order, not
/// seq order: transaction A takes its xid first, B then appends seq n, A appends
/// seq n+1 and commits while B is still open. A's event is handed out first; B's
/// seq n, committed later, still follows it (a reader tailing by seq — as
/// `events_since` does — would have moved past n and lost it for ever).
#[tokio::test]
async fn events_after_never_goes_back_when_seqs_commit_out_of_order() {
    let db = TestDb::postgres().await;
    let mut a = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let mut b = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let mut ta = a.begin().await.unwrap();
    sqlx::query("SELECT pg_current_xact_id()").execute(&mut *ta).await.unwrap();
    let mut tb = b.begin().await.unwrap();
    let insert = "INSERT INTO events (at, item, kind, data) VALUES (0, 'SHOP-1', $1, '{}') RETURNING seq";
    let seq_b: i64 = sqlx::query_scalar(insert).bind("reaper.reaped").fetch_one(&mut *tb).await.unwrap();
    let seq_a: i64 = sqlx::query_scalar(insert).bind("reaper.deferred").fetch_one(&mut *ta).await.unwrap();
    assert!(seq_a > seq_b);
    ta.commit().await.unwrap();
    // Other tests' transactions on the same server may hold the xmin back a moment.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    let first = loop {
        let first = db.store.events_after(orch_store::EventPosition::START, None, 10).await.unwrap();
        if !first.is_empty() || tokio::time::Instant::now() > deadline {
            break first;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    };
    assert_eq!(first.iter().map(|p| p.event.seq).collect::<Vec<_>>(), [seq_a], "A settled, B still open");
    assert!(db.store.events_since(seq_a, 10).await.unwrap().is_empty());
    tb.commit().await.unwrap();
    let next = loop {
        let next = db.store.events_after(first[0].position, None, 10).await.unwrap();
        if !next.is_empty() || tokio::time::Instant::now() > deadline {
            break next;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    };
    assert_eq!(next.iter().map(|p| p.event.seq).collect::<Vec<_>>(), [seq_b], "B's lower seq still follows A's");
    assert!(db.store.events_since(seq_a, 10).await.unwrap().is_empty(), "tailing by seq loses seq {seq_b}");
    assert_eq!(db.store.event_head().await.unwrap(), next[0].position);
}

/// The reaper's, the claim's and the views' queries have an index path: with
/// sequential scans priced out, the planner still finds no need for one.
#[tokio::test]
async fn hot_queries_use_indexes() {
    let db = TestDb::postgres().await;
    let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
    sqlx::query("SET enable_seqscan = off").execute(&mut conn).await.unwrap();
    let queries = [
        "SELECT id FROM jobs WHERE status = 'queued' ORDER BY queued_at, id LIMIT 5 FOR UPDATE SKIP LOCKED",
        "SELECT id FROM jobs WHERE status = 'running' AND lease_expires_at < 5 ORDER BY lease_expires_at, id LIMIT 5",
        "SELECT id FROM jobs WHERE status = 'finishing' AND finished_at < 5 ORDER BY finished_at, id LIMIT 5",
        "SELECT id FROM jobs WHERE status IN ('running', 'finishing') AND started_at < 5 ORDER BY started_at, id LIMIT 5",
        "SELECT id FROM jobs WHERE status IN ('running', 'finishing') AND owner = 'n' ORDER BY id",
        "SELECT id FROM jobs WHERE item = 'A-1' AND status IN ('queued', 'running', 'finishing')",
        "SELECT id FROM jobs WHERE item = 'A-1' ORDER BY id",
        "SELECT seq FROM events WHERE item = 'A-1' ORDER BY seq",
        "SELECT seq FROM events WHERE seq > 5 ORDER BY seq LIMIT 5",
        "SELECT seq FROM events WHERE (xid, seq) > ('5'::xid8, 5) AND xid < '9'::xid8 ORDER BY xid, seq LIMIT 5",
        "SELECT seq FROM events WHERE xid < '9'::xid8 ORDER BY xid DESC, seq DESC LIMIT 1",
        "SELECT COUNT(*) FROM jobs WHERE status = 'finishing' AND lease_expires_at > 5",
        "SELECT status, COUNT(*) FROM items WHERE status NOT IN ('done', 'cancelled') GROUP BY status",
        "SELECT status, SUM(n) FROM status_counts WHERE tbl = 'items' GROUP BY status",
        "SELECT stage, COUNT(*) FROM items WHERE status NOT IN ('done', 'cancelled') GROUP BY stage",
        "SELECT status, COUNT(*) FROM jobs WHERE status IN ('queued', 'running', 'finishing') GROUP BY status",
        "SELECT id FROM jobs WHERE status IN ('running', 'finishing') ORDER BY started_at, id",
        "SELECT id FROM gate_results WHERE job = 5 ORDER BY id",
        "SELECT item FROM prs WHERE branch = 'feature/A-1-bug-x'",
    ];
    for q in queries {
        let plan: Vec<String> =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("EXPLAIN {q}"))).fetch_all(&mut conn).await.unwrap();
        assert!(!plan.iter().any(|l| l.contains("Seq Scan")), "{q}\n{}", plan.join("\n"));
    }
}

/// A TCP proxy to `upstream` that freezes the moment a client sends `marker`: from
/// then on it keeps every socket open but forwards nothing in either direction,
/// like a stopped proxy process (`SIGSTOP`) between a node and its database.
/// Returns its address and a receiver that turns `true` once it has frozen.
async fn freezing_proxy(upstream: SocketAddr, marker: &'static [u8]) -> (SocketAddr, watch::Receiver<bool>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (frozen_tx, frozen_rx) = watch::channel(false);
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = TcpStream::connect(upstream).await else { return };
            let (client_rd, client_wr) = client.into_split();
            let (server_rd, server_wr) = server.into_split();
            tokio::spawn(forward(client_rd, server_wr, Some(marker), frozen_tx.clone()));
            tokio::spawn(forward(server_rd, client_wr, None, frozen_tx.clone()));
        }
    });
    (addr, frozen_rx)
}

/// One direction of the proxy: copies chunks until the proxy freezes (or `marker`
/// shows up in a chunk, which freezes it), then holds its sockets for ever.
async fn forward(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    marker: Option<&'static [u8]>,
    frozen: watch::Sender<bool>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(n) = from.read(&mut buf).await {
        if n == 0 {
            return;
        }
        let chunk = &buf[..n];
        if marker.is_some_and(|m| chunk.windows(m.len()).any(|w| w == m)) {
            frozen.send_replace(true);
        }
        if *frozen.borrow() || to.write_all(chunk).await.is_err() {
            break;
        }
    }
    // Frozen (or broken): keep both halves open so the peer sees no reset either.
    let _held = (from, to);
    std::future::pending::<()>().await;
}

/// `url` with its host and port replaced by `addr`.
fn with_host_port(url: &str, addr: SocketAddr) -> String {
    let scheme_end = url.find("://").map_or(0, |i| i + 3);
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let userinfo = rest[..authority_end].rsplit_once('@').map_or("", |(u, _)| u);
    let at = if userinfo.is_empty() { "" } else { "@" };
    format!("{}{userinfo}{at}{addr}{}", &url[..scheme_end], &rest[authority_end..])
}

/// The network to the server freezes while a call is in flight (the proxy stops
/// forwarding as the query goes out): the server's own timeouts can never reach
/// the node, yet the call ends with `Unavailable` within the store's call deadline
/// (12 s) instead of waiting for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_over_a_frozen_network_fails_within_its_deadline() {
    let db = orch_test_support::PgDatabase::create("orch_t");
    let admin = orch_test_support::pg_admin_url();
    let server = sqlx::postgres::PgConnectOptions::from_str(&admin).unwrap();
    let upstream = tokio::net::lookup_host((server.get_host(), server.get_port())).await.unwrap().next().unwrap();
    let (proxy, mut frozen) = freezing_proxy(upstream, b"FROM nodes ORDER BY id").await;
    let url = with_host_port(db.url(), proxy);
    let store = orch_store::open(&url).await.unwrap_or_else(|e| panic!("opening {url} through the proxy: {e}"));
    assert!(store.store_time().await.unwrap().is_some(), "the store answers through the proxy before it freezes");

    let started = tokio::time::Instant::now();
    let outcome = tokio::time::timeout(Duration::from_secs(60), store.nodes())
        .await
        .expect("nodes() was still waiting 60 s after the network froze: no call deadline");
    let waited = started.elapsed();
    tokio::time::timeout(Duration::from_secs(1), frozen.wait_for(|f| *f))
        .await
        .expect("the proxy never saw the call, so it never froze")
        .unwrap();
    let err = outcome.expect_err("no answer can cross a frozen network");
    assert!(matches!(&err, Error::Unavailable { .. }), "{err:?}");
    assert!(err.to_string().contains("nodes got no answer"), "{err}");
    assert!(waited < Duration::from_secs(20), "gave up only after {waited:?}");
    drop(store);
    drop(db);
}
