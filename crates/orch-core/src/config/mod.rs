//! Configuration: the validated model, and turning `orch.toml` text plus `ORCH_*`
//! overrides into it with errors that name file, line, column and key.
//!
//! Layout: `model` (the validated types the engine reads), `load` (the entry
//! point), `raw` (keys and types, with positions), `env` (overrides), `validate`
//! and `graph` (rules), `budget` (the time-budget invariant), `defaults`, `schema`
//! (the accepted keys) and `diag` (diagnostics).

mod budget;
pub mod defaults;
mod diag;
mod env;
mod graph;
mod load;
pub mod model;
mod raw;
mod schema;
mod validate;

pub use budget::{GateBudget, StageBudget, format_secs};
pub use diag::{ConfigErrors, Diagnostic};
pub use env::{StrayVar, stray_overrides};
pub use load::load;
pub use model::*;

#[cfg(test)]
mod tests;
