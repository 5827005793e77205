//! `orch check`: validates the config and prints what it would run.

use std::path::Path;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Print the resolved config as JSON.
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(config: &Path, args: &Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("orch check is not built yet ({} json={})", config.display(), args.json)
}
