//! orch's pure domain core: the vocabulary (keys, kinds, stages, statuses), the
//! validated configuration, the track graph, verdict parsing and the transition
//! function `decide`.
//!
//! Architecture invariant: this crate does no I/O, never reads the clock and has
//! no async. Everything here is a plain function of its inputs, so the rules that
//! decide an item's fate can be tested exhaustively without a database or a process.

pub mod config;
pub mod decide;
pub mod event;
pub mod key;
pub mod model;
pub mod names;
pub mod time;
pub mod usage;
pub mod verdict;

pub use decide::{
    DecideError, Decision, JobOutcome, MERGE_CONFLICT, OperatorAction, Outcome, StageResult, Transition, decide,
};
pub use event::EventKind;
pub use key::{ItemKey, KeyError, KeyPrefix};
pub use model::{ItemKind, ItemState, ItemStatus, JobStatus, ParseEnumError};
pub use names::{GateName, RoleName, StageName, TrackName};
pub use time::Timestamp;
pub use usage::Usage;
pub use verdict::{Verdict, VerdictError, VerdictValue};
