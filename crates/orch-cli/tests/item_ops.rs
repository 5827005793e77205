//! `orch item retry|cancel|escalate|approve` through the real binary on a SQLite
//! store: actions that fit the item's status apply and print the new state; ones
//! that do not exit 1 with the reason, changing nothing.

mod common;

use common::orch;

#[test]
fn operator_verbs_apply_or_refuse_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (ok, _, err) = orch(d, &["init", "."]);
    assert!(ok, "{err}");
    for _ in 0..2 {
        let (ok, _, err) = orch(d, &["item", "add", "--repo", "demo", "--kind", "bug", "--title", "t"]);
        assert!(ok, "{err}");
    }

    let (ok, _, err) = orch(d, &["item", "approve", "DEMO-1"]);
    assert!(!ok);
    assert!(err.contains("cannot approve DEMO-1") && err.contains("queued"), "{err}");

    let (ok, out, err) = orch(d, &["item", "escalate", "DEMO-1"]);
    assert!(ok, "{err}");
    assert!(out.contains("queued at analysis on full-cycle"), "{out}");

    let (ok, out, err) = orch(d, &["item", "cancel", "DEMO-2", "--json"]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["status"], "cancelled");

    let (ok, _, err) = orch(d, &["item", "retry", "DEMO-2"]);
    assert!(!ok);
    assert!(err.contains("takes no further transitions"), "{err}");
    let (ok, out, _) = orch(d, &["item", "show", "DEMO-2", "--json"]);
    assert!(ok);
    assert!(out.contains("\"status\": \"cancelled\""), "{out}");

    let (ok, _, err) = orch(d, &["item", "cancel", "NOPE-1"]);
    assert!(!ok);
    assert!(err.contains("NOPE-1"), "{err}");
    let (ok, out, err) = orch(d, &["audit"]);
    assert!(ok, "{out}{err}");
}
