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

mod adapter;
mod agent_stream;
pub mod audit;
mod budget;
pub mod clock;
pub mod contain;
mod ctx;
mod events;
mod finalize;
mod gates;
pub mod identity;
mod job;
mod launch;
pub mod layout;
mod lease;
mod local_forge;
pub mod metrics;
mod node;
mod node_registry;
pub mod ops;
pub mod process;
pub mod prompt;
pub mod reaper;
mod reconcile;
mod registry;
mod scheduler;
pub mod untrusted;
mod vcs;

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
    /// The node's lease deadline passed while it waited on the store: it has
    /// fenced itself and must not act on the answer.
    #[error("the lease deadline passed while waiting for the store; this node fenced itself off the job")]
    LeaseDeadline,
    /// The node cannot run here (e.g. cgroup isolation asked for and refused).
    #[error("{0}")]
    Unavailable(String),
    /// The forge refused or failed an operation.
    #[error("forge: {0}")]
    Forge(String),
    /// A supervised task died or an integrity check failed: the node stopped.
    #[error("node stopped: {0}")]
    Fatal(String),
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}
