//! `orch audit` through the real binary on a SQLite store: clean, it exits 0 with
//! what it checked; with a run of a later epoch injected before a fenced-out
//! owner's processes were dead, it exits 1 naming the job and both epochs, and
//! `--json` carries the breach and the fenced-out notice.

mod common;

use common::{orch, orch_output};
use orch_core::{EventKind, Timestamp};
use orch_store::NewEvent;
use serde_json::Value;

#[test]
fn audit_exits_1_naming_the_job_and_both_epochs_of_an_injected_overlap() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (ok, _, err) = orch(d, &["init", "."]);
    assert!(ok, "{err}");
    let (ok, _, err) = orch(d, &["item", "add", "--repo", "demo", "--kind", "bug", "--title", "t"]);
    assert!(ok, "{err}");
    let (ok, out, err) = orch(d, &["audit"]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("audit: 2 events of 1 item(s) checked, invariants I1-I4 hold"), "{out}");

    // The store's public API appends any event: epoch 2 of DEMO-1's job starts at
    // t0 + 1 s; epoch 1's owner later reports its processes dead only at t0 + 2 s.
    let url = format!("sqlite://{}", d.join(".orch/orch.db").display());
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let job = rt.block_on(async {
        let store = orch_store::open(&url).await.unwrap();
        let key: orch_core::ItemKey = "DEMO-1".parse().unwrap();
        let job = store.jobs_for_item(&key).await.unwrap()[0].id;
        let t0 = 1_800_000_000_000;
        let mut started = NewEvent::new(key.clone(), EventKind::JobStarted);
        (started.job, started.epoch) = (Some(job), Some(2));
        store.append_events(&[started], Timestamp::from_millis(t0 + 1_000)).await.unwrap();
        let mut fenced = NewEvent::new(key, EventKind::JobFencedOut);
        (fenced.job, fenced.epoch) = (Some(job), Some(1));
        fenced.data = serde_json::json!({ "node": "old-node", "step": "agent", "killed_at": t0 + 2_000 });
        store.append_events(&[fenced], Timestamp::from_millis(t0 + 3_000)).await.unwrap();
        job
    });

    let out = orch_output(d, &["audit"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let breach = stdout.lines().find(|l| l.starts_with("I3 breach on DEMO-1")).unwrap_or_else(|| panic!("{stdout}"));
    assert!(breach.contains(&format!("job {job}: run of epoch 2 started at")), "{breach}");
    assert!(breach.contains("before epoch 1's processes were dead at"), "{breach}");
    assert!(breach.contains("(events [3, 4])"), "{breach}");
    assert!(stdout.contains(&format!("notice: DEMO-1 job {job} fenced out at epoch 1 (step agent, node old-node")));
    assert!(String::from_utf8_lossy(&out.stderr).contains("audit: 1 breach(es) in 4 events of 1 item(s)"), "{out:?}");

    let out = orch_output(d, &["audit", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((report["items_checked"].as_u64(), report["events_checked"].as_u64()), (Some(1), Some(4)));
    assert_eq!(report["breaches_total"], 1);
    let b = &report["breaches"][0];
    assert_eq!((b["invariant"].as_str(), b["item"].as_str()), (Some("I3"), Some("DEMO-1")), "{report}");
    assert_eq!(b["events"], serde_json::json!([3, 4]));
    let n = &report["notices"][0];
    assert_eq!((n["job"].as_i64(), n["epoch"].as_i64(), n["node"].as_str()), (Some(job.0), Some(1), Some("old-node")));
}
