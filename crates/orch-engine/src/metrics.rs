//! The node's counters, read by `GET /queue`, `/metrics` and the tests. Plain
//! atomics: they are bumped on hot paths and read rarely.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use serde::Serialize;

/// Reaper and finalizer counters for one node.
#[derive(Debug, Default)]
pub struct Metrics {
    finalizer_defers_total: AtomicU64,
    reaped_tier1: AtomicU64,
    reaped_tier2: AtomicU64,
    reaped_tier3: AtomicU64,
    fenced_out_total: AtomicU64,
    transitions_total: AtomicU64,
    finalizer_owned: AtomicI64,
    last_pass_at_ms: AtomicI64,
    self_fenced_total: AtomicU64,
    start_retries_total: AtomicU64,
}

/// Which reaper tier acted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tier {
    One,
    Two,
    Three,
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::One => "tier1",
            Tier::Two => "tier2",
            Tier::Three => "tier3",
        }
    }
}

/// A point-in-time copy of the counters.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct MetricsSnapshot {
    pub finalizer_defers_total: u64,
    pub reaped_tier1: u64,
    pub reaped_tier2: u64,
    pub reaped_tier3: u64,
    pub fenced_out_total: u64,
    pub transitions_total: u64,
    /// Finalizations this node is running now.
    pub finalizer_owned: i64,
    /// When the last reaper pass finished (ms since the epoch), 0 if none yet.
    pub last_pass_at_ms: i64,
    /// Jobs whose processes this node killed because it could not renew its lease.
    pub self_fenced_total: u64,
    /// Process starts retried after an infrastructure failure.
    pub start_retries_total: u64,
}

impl Metrics {
    pub fn deferred(&self) {
        self.finalizer_defers_total.fetch_add(1, Ordering::Relaxed);
    }
    pub fn reaped(&self, tier: Tier) {
        let c = match tier {
            Tier::One => &self.reaped_tier1,
            Tier::Two => &self.reaped_tier2,
            Tier::Three => &self.reaped_tier3,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }
    pub fn fenced_out(&self) {
        self.fenced_out_total.fetch_add(1, Ordering::Relaxed);
    }
    pub fn transitioned(&self) {
        self.transitions_total.fetch_add(1, Ordering::Relaxed);
    }
    pub fn finalizer_started(&self) {
        self.finalizer_owned.fetch_add(1, Ordering::Relaxed);
    }
    pub fn finalizer_ended(&self) {
        self.finalizer_owned.fetch_sub(1, Ordering::Relaxed);
    }
    pub fn self_fenced(&self, jobs: usize) {
        self.self_fenced_total.fetch_add(jobs as u64, Ordering::Relaxed);
    }
    pub fn start_retried(&self) {
        self.start_retries_total.fetch_add(1, Ordering::Relaxed);
    }
    pub fn pass_done(&self, at_ms: i64) {
        self.last_pass_at_ms.store(at_ms, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            finalizer_defers_total: self.finalizer_defers_total.load(Ordering::Relaxed),
            reaped_tier1: self.reaped_tier1.load(Ordering::Relaxed),
            reaped_tier2: self.reaped_tier2.load(Ordering::Relaxed),
            reaped_tier3: self.reaped_tier3.load(Ordering::Relaxed),
            fenced_out_total: self.fenced_out_total.load(Ordering::Relaxed),
            transitions_total: self.transitions_total.load(Ordering::Relaxed),
            finalizer_owned: self.finalizer_owned.load(Ordering::Relaxed),
            last_pass_at_ms: self.last_pass_at_ms.load(Ordering::Relaxed),
            self_fenced_total: self.self_fenced_total.load(Ordering::Relaxed),
            start_retries_total: self.start_retries_total.load(Ordering::Relaxed),
        }
    }
}
