//! I7, nothing accepted is lost: a child process creates items in a loop and prints
//! each key only after `create_item` returned; the parent SIGKILLs it at a random
//! moment, reopens the store, and checks every printed key is there.
//!
//! The child is this same test binary re-executed with `--exact` on
//! `durability::writer_child` and `ORCH_STORE_CHILD_URL` set; without that variable
//! the `writer_child` test returns at once.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use orch_core::ItemKey;

use crate::support::{T0, TestDb, new_item};

const CHILD_URL: &str = "ORCH_STORE_CHILD_URL";

/// The child's body: create items forever, printing `KEY <key>` after each returns.
#[tokio::test]
async fn writer_child() {
    let Ok(url) = std::env::var(CHILD_URL) else { return };
    let store = orch_store::open(&url).await.expect("child opens the store");
    for i in 0.. {
        let item = store.create_item(new_item("DUR", &format!("d{i}")), T0).await.expect("create_item");
        println!("KEY {}", item.key);
    }
}

/// Runs the writer against `db`, kills it with SIGKILL after a random number of
/// acknowledged items (waiting for that count, with a deadline), then checks that
/// every acknowledged key survived.
pub(crate) async fn acknowledged_items_survive_kill_9(db: &TestDb) {
    let exe = std::env::current_exe().expect("test binary path");
    let mut child = Command::new(exe)
        .args(["--exact", "durability::writer_child", "--nocapture", "--test-threads=1"])
        .env(CHILD_URL, &db.url)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn writer child");
    let stdout = child.stdout.take().expect("child stdout");
    let kill_after = 20 + rand::random::<u32>() % 180;
    // Read on a thread: the pipe is blocking, and the deadline must hold even if
    // the child stops printing.
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(key) = line.strip_prefix("KEY ")
                && tx.send(key.to_owned()).is_err()
            {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut acked: Vec<String> = Vec::new();
    while acked.len() < kill_after as usize {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(key) => acked.push(key),
            Err(e) => {
                let _ = child.kill();
                panic!("writer child printed {} of {kill_after} keys before {e:?}", acked.len());
            }
        }
    }
    child.kill().expect("SIGKILL the writer");
    child.wait().expect("reap the writer");
    // Keys printed before the kill landed were acknowledged too.
    reader.join().expect("reader thread");
    acked.extend(rx.try_iter());

    let store = db.reopen().await;
    for key in &acked {
        let key: ItemKey = key.parse().expect("child printed a key");
        assert!(store.get_item(&key).await.unwrap().is_some(), "acknowledged item {key} was lost");
    }
    // The key sequence stays gap-free across the crash: the next key follows the
    // last one that committed, acknowledged or not.
    let next = store.create_item(new_item("DUR", "after"), T0).await.unwrap().key;
    assert!(next.number().get() > acked.len() as u64);
    eprintln!("killed the writer after {} acknowledged items; all present", acked.len());
}
