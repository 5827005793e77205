//! orch's node engine: the scheduler that claims jobs, the launcher and monitor
//! that run agents as real child processes in their own process groups, the
//! finalizer that runs gates and commits the transition, the lease heartbeat, the
//! reaper's three tiers and start-up reconcile.
//!
//! Architecture invariants:
//! - Only a lease holder commits a transition, and every commit is fenced by the
//!   job's epoch and the item's version (the store refuses anything stale).
//! - Liveness is a lease, never an age: Tier-2 defers to a live lease unless the
//!   kill-switch says otherwise.
//! - Time comes from the injected `Clock`; no module reads the system time itself.
//! - No agent process outlives its job: every exit path kills the whole group.

pub mod audit;
pub mod clock;
mod events;
mod finalize;
mod gates;
mod job;
pub mod layout;
mod lease;
pub mod metrics;
mod node;
pub mod ops;
pub mod process;
mod prompt;
pub mod reaper;
mod reconcile;
mod registry;
mod scheduler;

pub use clock::{Clock, ManualClock, SystemClock};
pub use metrics::MetricsSnapshot;
pub use node::{Node, NodeOptions};
pub use reaper::PassReport;

/// Engine failures. Job-level problems (a bad verdict, a missing command) are not
/// errors here: they become the job's recorded state.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] orch_store::Error),
    #[error("job {0} disappeared from the store")]
    Vanished(orch_store::JobId),
    #[error("item {0} changed under a live epoch (store integrity breach)")]
    Conflict(String),
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}
