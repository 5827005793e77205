//! Audit benchmark (figures, not assertions on speed): fills a SQLite store with
//! `ORCH_BENCH_EVENTS` (default 1,000,000) events, then audits it twice, each in a
//! fresh child process so each peak RSS (`VmHWM`) is its own:
//! - `stream`: `audit_store`, item by item, as `orch audit` does now;
//! - `load-all`: every event read into one `Vec` through `events_since` and checked
//!   by `audit`, as `orch audit` did before.
//!
//! Prints wall time, CPU time, peak RSS and RSS before the audit for each, and
//! checks that both found the same breaches (one injected overlap per 10,000
//! items) and notices (one fenced-out owner per 1,000).
//!
//! Run: `cargo bench -p orch-engine --bench audit_bench`
//! Env: `ORCH_BENCH_EVENTS` (default 1000000), `ORCH_BENCH_EVENTS_PER_ITEM`
//! (default 20), `ORCH_BENCH_DB` (a SQLite file to keep: loaded if missing, reused
//! if present, so re-runs skip the load).
//!
//! The store is filled through its public API (`create_item`, then `append_events`
//! in batches of 10,000), not SQL: only orch-store speaks SQL.

use std::collections::{BTreeMap, HashSet};
use std::num::NonZeroU64;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use orch_core::{EventKind, ItemKey, ItemKind, ItemState, KeyPrefix, StageName, Timestamp, TrackName};
use orch_engine::audit;
use orch_store::{JobId, NewEvent, NewItem, Store};
use serde_json::{Value, json};
use tokio::task::JoinSet;

const T0: Timestamp = Timestamp::from_millis(1_700_000_000_000);
const STAGES: [&str; 4] = ["development", "testing", "deploy-staging", "deploy"];
/// Every this-many items carries a fenced-out owner whose processes died in time
/// (a notice), and every `OVERLAP_EVERY` items one that died too late (a breach).
const NOTICE_EVERY: usize = 1_000;
const OVERLAP_EVERY: usize = 10_000;
const APPEND_BATCH: usize = 10_000;
const CHILD_MODE: &str = "ORCH_AUDIT_BENCH_CHILD";
const CHILD_URL: &str = "ORCH_AUDIT_BENCH_URL";

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn status_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with(field)).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()))
        .unwrap_or(0)
}

/// User + system CPU of this process so far, in seconds (every thread: the store's
/// reader and writer threads do much of an audit's work). Assumes the usual 100
/// clock ticks a second.
fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|t| t.parse::<u64>().ok()).unwrap_or(0);
    (ticks(11) + ticks(12)) as f64 / 100.0
}

fn config() -> orch_core::config::Config {
    let mut text = String::from("[[repos]]\nname = \"shop\"\nkey = \"SHOP\"\npath = \".\"\n");
    text.push_str("[[edges]]\nfrom = \"deploy-staging\"\nto = \"deploy\"\ngates = []\non_fail = \"development\"\n");
    for role in ["analyst", "architect", "developer", "tester", "deployer"] {
        text.push_str(&format!("[agents.{role}]\ncommand = [\"true\"]\n"));
    }
    orch_core::config::load(std::path::Path::new("orch.toml"), &text, &BTreeMap::new())
        .unwrap_or_else(|e| panic!("{e}"))
}

/// The events after `item.created` and the first `job.queued` of a clean walk
/// down the quick track (with a gate on deploy-staging → deploy), padded with
/// `vcs.pushed` or cut to `len`; jobs are numbered per item, as no check needs
/// them to exist.
fn walk(key: &ItemKey, index: usize, len: usize) -> Vec<NewEvent> {
    let job_of = |stage: usize| JobId(i64::try_from(index * STAGES.len() + stage).unwrap_or(i64::MAX));
    let event = |kind: EventKind, stage: usize| {
        let mut e = NewEvent::new(key.clone(), kind);
        (e.job, e.epoch) = (Some(job_of(stage)), Some(1));
        e
    };
    let mut out = Vec::with_capacity(len + 2);
    for (s, stage) in STAGES.iter().enumerate() {
        out.push(event(EventKind::JobStarted, s));
        out.push(event(EventKind::JobFinished, s));
        if *stage == "deploy-staging" {
            let mut gate = event(EventKind::GatePassed, s);
            gate.data = json!({ "gate": "retest", "duration_ms": 1200 });
            out.push(gate);
        }
        let version = i64::try_from(s).unwrap_or(0) + 1;
        let mut moved = event(if s + 1 < STAGES.len() { EventKind::ItemAdvanced } else { EventKind::ItemDone }, s);
        moved.from = Some((*stage).to_owned());
        moved.to = Some(STAGES.get(s + 1).copied().unwrap_or("done").to_owned());
        moved.data = json!({ "version": version, "track": "quick" });
        out.push(moved);
        if let Some(next) = STAGES.get(s + 1) {
            let mut queued = event(EventKind::JobQueued, s + 1);
            (queued.epoch, queued.to) = (None, Some((*next).to_owned()));
            out.push(queued);
        }
    }
    while out.len() < len {
        out.push(event(EventKind::VcsPushed, STAGES.len() - 1));
    }
    out.truncate(len);
    out
}

/// A `job.fenced_out` of the item's first job at epoch 1, and (for an overlap) the
/// epoch-2 start it overlapped: `at` is the batch's time, `killed_at` after it.
fn fenced(key: &ItemKey, index: usize, killed_at: Timestamp, overlap: bool) -> Vec<NewEvent> {
    let job = JobId(i64::try_from(index * STAGES.len()).unwrap_or(i64::MAX));
    let mut out = Vec::new();
    if overlap {
        let mut start = NewEvent::new(key.clone(), EventKind::JobStarted);
        (start.job, start.epoch) = (Some(job), Some(2));
        out.push(start);
    }
    let mut e = NewEvent::new(key.clone(), EventKind::JobFencedOut);
    (e.job, e.epoch) = (Some(job), Some(1));
    e.data = json!({ "node": "node-b", "step": "agent", "killed_at": killed_at.as_millis() });
    out.push(e);
    out
}

/// Files `items` items (16 writers, so group commit applies), then appends the
/// rest of each one's events in batches. Returns the overlaps injected.
async fn load(store: Arc<dyn Store>, items: usize, per_item: usize) -> usize {
    let next = Arc::new(AtomicUsize::new(0));
    let mut set = JoinSet::new();
    for _ in 0..16 {
        let (store, next) = (store.clone(), next.clone());
        set.spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < items {
                let new = NewItem {
                    repo: "shop".into(),
                    prefix: KeyPrefix::new("SHOP").expect("prefix"),
                    kind: ItemKind::Bug,
                    title: "bench item".into(),
                    body: "A body of a realistic length for a bug report, a sentence or two.".into(),
                    state: ItemState::new(TrackName::new("quick"), StageName::new(STAGES[0])),
                };
                store.create_item(new, T0).await.expect("create_item");
            }
        });
    }
    set.join_all().await;
    // create_item wrote item.created and job.queued of each.
    let rest = per_item.saturating_sub(2);
    let mut batch = Vec::with_capacity(APPEND_BATCH + rest);
    let mut overlaps = 0;
    let mut at = T0;
    for i in 1..=items {
        let number = u64::try_from(i).ok().and_then(NonZeroU64::new).expect("numbers start at 1");
        let key = ItemKey::new(KeyPrefix::new("SHOP").expect("prefix"), number);
        batch.extend(walk(&key, i, rest));
        if i % NOTICE_EVERY == 0 {
            let overlap = i % OVERLAP_EVERY == 0;
            overlaps += usize::from(overlap);
            let killed_at = if overlap { at.add(Duration::from_secs(1)) } else { at.sub(Duration::from_secs(1)) };
            batch.extend(fenced(&key, i, killed_at, overlap));
        }
        if batch.len() >= APPEND_BATCH || i == items {
            store.append_events(&batch, at).await.expect("append_events");
            batch.clear();
            at = at.add(Duration::from_secs(1));
        }
    }
    overlaps
}

/// The child: one audit of the store at `url`, reported as one JSON line.
async fn child(mode: &str, url: &str) {
    let config = config();
    let store = orch_store::open(url).await.expect("open");
    let rss_before_kb = status_kb("VmRSS:");
    let (start, cpu_before) = (Instant::now(), cpu_secs());
    let (items, events, breaches, notices) = match mode {
        "stream" => {
            let r = audit::audit_store(&*store, &config).await.expect("audit_store");
            (r.items_checked, r.events_checked, r.breaches_total, r.notices_total)
        }
        _ => {
            // The old `orch audit`: the whole log in one Vec, then one pass.
            let mut all = Vec::new();
            let mut after = 0;
            loop {
                let page = store.events_since(after, 10_000).await.expect("events_since");
                let Some(last) = page.last() else { break };
                after = last.seq;
                all.extend(page);
            }
            let breaches = audit::audit(&config, &all).len() as u64;
            let notices = audit::notices(&all).len() as u64;
            let items = all.iter().map(|e| &e.item).collect::<HashSet<_>>().len() as u64;
            (items, all.len() as u64, breaches, notices)
        }
    };
    let (secs, cpu) = (start.elapsed().as_secs_f64(), cpu_secs() - cpu_before);
    let line = json!({
        "mode": mode, "secs": secs, "cpu": cpu, "hwm_kb": status_kb("VmHWM:"), "rss_before_kb": rss_before_kb,
        "items": items, "events": events, "breaches": breaches, "notices": notices,
    });
    println!("{line}");
}

fn run_child(mode: &str, url: &str) -> Value {
    let exe = std::env::current_exe().expect("current_exe");
    let out = Command::new(exe).env(CHILD_MODE, mode).env(CHILD_URL, url).output().expect("spawn child");
    assert!(out.status.success(), "{mode} child failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{mode} child printed no report ({e}): {text}"))
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    if let (Ok(mode), Ok(url)) = (std::env::var(CHILD_MODE), std::env::var(CHILD_URL)) {
        child(&mode, &url).await;
        return;
    }
    let events = env_usize("ORCH_BENCH_EVENTS", 1_000_000);
    let per_item = env_usize("ORCH_BENCH_EVENTS_PER_ITEM", 20).max(3);
    let items = events.div_ceil(per_item);
    let tmp = tempfile::tempdir().expect("temp dir");
    let path = std::env::var("ORCH_BENCH_DB").map_or_else(|_| tmp.path().join("audit.db"), Into::into);
    let url = format!("sqlite://{}", path.display());
    let mut overlaps = None;
    if path.exists() {
        println!("reusing {} (ORCH_BENCH_DB)", path.display());
    } else {
        let start = Instant::now();
        let store = orch_store::open(&url).await.expect("open");
        overlaps = Some(load(store, items, per_item).await);
        println!(
            "loaded {items} items x {per_item} events into {} in {:.1} s",
            path.display(),
            start.elapsed().as_secs_f64()
        );
    }
    let db_mib = std::fs::metadata(&path).map_or(0.0, |m| m.len() as f64 / 1_048_576.0);
    println!("database file: {db_mib:.0} MiB (plus its WAL)");
    println!("| audit    | items  | events    | breaches | notices | wall s | CPU s | peak RSS    | RSS before |");
    println!("|----------|-------:|----------:|---------:|--------:|-------:|------:|------------:|-----------:|");
    let mut found = Vec::new();
    for mode in ["stream", "load-all"] {
        let r = run_child(mode, &url);
        let n = |k: &str| r[k].as_u64().unwrap_or(0);
        let mib = |k: &str| n(k) as f64 / 1024.0;
        println!(
            "| {mode:<8} | {:>6} | {:>9} | {:>8} | {:>7} | {:>6.1} | {:>5.1} | {:>7.1} MiB | {:>6.1} MiB |",
            n("items"),
            n("events"),
            n("breaches"),
            n("notices"),
            r["secs"].as_f64().unwrap_or(0.0),
            r["cpu"].as_f64().unwrap_or(0.0),
            mib("hwm_kb"),
            mib("rss_before_kb"),
        );
        found.push((r["items"].clone(), r["events"].clone(), r["breaches"].clone(), r["notices"].clone()));
    }
    assert_eq!(found[0], found[1], "the streamed and the whole-log audit disagree");
    if let Some(overlaps) = overlaps {
        assert_eq!(found[0].2, json!(overlaps), "one breach per injected overlap");
    }
}
