//! `orch init [DIR]`: scaffolds a config and example agents that pass `orch check`.

use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Where to write orch.toml and agents/ [default: .]
    #[arg(default_value = ".")]
    dir: PathBuf,
}

pub(crate) fn run(args: &Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("orch init is not built yet (would write to {})", args.dir.display())
}
