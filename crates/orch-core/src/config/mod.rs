//! Configuration: the validated model, and (in `load`) turning `orch.toml` text plus
//! `ORCH_*` overrides into it with errors that name file, line, column and key.

pub mod model;

pub use model::*;
