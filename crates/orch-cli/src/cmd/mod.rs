//! One module per verb. Each exposes clap `Args` and a `run` returning the exit code.

pub(crate) mod audit;
pub(crate) mod check;
pub(crate) mod demo;
pub(crate) mod init;
pub(crate) mod item;
pub(crate) mod item_ops;
pub(crate) mod logs;
pub(crate) mod migrate;
pub(crate) mod pr;
pub(crate) mod prompt;
pub(crate) mod queue;
pub(crate) mod serve;
