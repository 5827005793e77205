//! The node's counters, read by `GET /queue` and the tests. Plain atomics: they
//! are bumped on hot paths and read rarely.
//!
//! Each event counted here is also fed, once, to the `metrics` facade under the
//! names [`names`] lists, which `GET /metrics` renders in the Prometheus text
//! format. With no recorder installed (the CLI, most tests) the facade does
//! nothing. The facade's counters are process-wide: two nodes in one process (a
//! test) share them.

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
    handoff_claims_total: AtomicU64,
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
    /// Jobs this node claimed in the same write as the transition that queued
    /// them (the one-write hand-off), not through the scheduler.
    pub handoff_claims_total: u64,
}

/// The names the node's events are exported under (Prometheus text format), one
/// copy for the engine that records them and the server that describes them.
pub mod names {
    /// Counter: Tier-2 deferrals to a finalizer holding a live lease.
    pub const FINALIZER_DEFERS: &str = "orch_reaper_finalizer_defers_total";
    /// Counter, label `tier`: jobs the reaper reaped or took over.
    pub const REAPED: &str = "orch_reaper_reaped_total";
    /// Counter: owner writes refused because another owner holds a newer epoch.
    pub const FENCED_OUT: &str = "orch_fenced_out_total";
    /// Counter, label `kind` (the transition's event kind): committed transitions.
    pub const TRANSITIONS: &str = "orch_transitions_total";
    /// Gauge: finalizations this node runs now.
    pub const FINALIZER_OWNED: &str = "orch_finalizer_owned";
    /// Counter: jobs whose processes this node killed when it could not renew.
    pub const SELF_FENCED: &str = "orch_self_fenced_total";
    /// Counter: process starts retried after an infrastructure failure.
    pub const START_RETRIES: &str = "orch_start_retries_total";
    /// Counter: jobs claimed by the transition that queued them (one-write hand-off).
    pub const HANDOFF_CLAIMS: &str = "orch_handoff_claims_total";
    /// Histogram, label `gate`: how long each gate ran.
    pub const GATE_DURATION: &str = "orch_gate_duration_seconds";
    /// Histogram, label `stage`: how long each agent process ran.
    pub const AGENT_DURATION: &str = "orch_agent_duration_seconds";
    /// Counter, labels `stage` and `kind` (`input`, `output`, `cache_read`,
    /// `cache_write`): tokens agent runs reported.
    pub const AGENT_TOKENS: &str = "orch_agent_tokens_total";
    /// Counter, label `stage`: model turns agent runs reported.
    pub const AGENT_TURNS: &str = "orch_agent_turns_total";
    /// Gauge (only grows), label `stage`: US dollars agent runs reported spending.
    pub const AGENT_COST: &str = "orch_agent_cost_usd";
}

impl Metrics {
    pub fn deferred(&self) {
        self.finalizer_defers_total.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(names::FINALIZER_DEFERS).increment(1);
    }
    pub fn reaped(&self, tier: Tier) {
        let c = match tier {
            Tier::One => &self.reaped_tier1,
            Tier::Two => &self.reaped_tier2,
            Tier::Three => &self.reaped_tier3,
        };
        c.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(names::REAPED, "tier" => tier.as_str()).increment(1);
    }
    pub fn fenced_out(&self) {
        self.fenced_out_total.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(names::FENCED_OUT).increment(1);
    }
    /// A committed transition; `kind` is its event's kind (`item.advanced`, …).
    pub fn transitioned(&self, kind: &'static str) {
        self.transitions_total.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(names::TRANSITIONS, "kind" => kind).increment(1);
    }
    pub fn finalizer_started(&self) {
        self.finalizer_owned.fetch_add(1, Ordering::Relaxed);
        metrics::gauge!(names::FINALIZER_OWNED).increment(1.0);
    }
    pub fn finalizer_ended(&self) {
        self.finalizer_owned.fetch_sub(1, Ordering::Relaxed);
        metrics::gauge!(names::FINALIZER_OWNED).decrement(1.0);
    }
    pub fn self_fenced(&self, jobs: usize) {
        self.self_fenced_total.fetch_add(jobs as u64, Ordering::Relaxed);
        metrics::counter!(names::SELF_FENCED).increment(jobs as u64);
    }
    pub fn start_retried(&self) {
        self.start_retries_total.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(names::START_RETRIES).increment(1);
    }
    /// A job claimed by the transition that queued it.
    pub fn handoff_claimed(&self) {
        self.handoff_claims_total.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(names::HANDOFF_CLAIMS).increment(1);
    }
    /// A gate ran (or failed to start) for `duration`.
    pub fn gate_ran(&self, gate: &str, duration: std::time::Duration) {
        metrics::histogram!(names::GATE_DURATION, "gate" => gate.to_owned()).record(duration.as_secs_f64());
    }
    /// An agent process of a job at `stage` ran for `duration`.
    pub fn agent_ran(&self, stage: &str, duration: std::time::Duration) {
        metrics::histogram!(names::AGENT_DURATION, "stage" => stage.to_owned()).record(duration.as_secs_f64());
    }
    /// What one agent run reported consuming (Claude Code, Codex).
    pub fn agent_used(&self, stage: &str, usage: &orch_core::Usage) {
        for (kind, n) in [
            ("input", usage.input_tokens),
            ("output", usage.output_tokens),
            ("cache_read", usage.cache_read_tokens),
            ("cache_write", usage.cache_write_tokens),
        ] {
            metrics::counter!(names::AGENT_TOKENS, "stage" => stage.to_owned(), "kind" => kind).increment(n);
        }
        metrics::counter!(names::AGENT_TURNS, "stage" => stage.to_owned()).increment(usage.turns);
        if let Some(cost) = usage.cost_usd.filter(|c| c.is_finite() && *c >= 0.0) {
            // A float counter: the facade's counters are integers, so the
            // running sum is kept by a gauge that only ever grows.
            metrics::gauge!(names::AGENT_COST, "stage" => stage.to_owned()).increment(cost);
        }
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
            handoff_claims_total: self.handoff_claims_total.load(Ordering::Relaxed),
        }
    }
}
