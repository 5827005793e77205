//! One module per verb. Each exposes clap `Args` and a `run` returning the exit code.

pub(crate) mod check;
pub(crate) mod init;
