//! `orch migrate`: applies the store's pending migrations. Opening the store does
//! exactly that (and `orch serve` opens it too), so this verb exists for deploys
//! that migrate before starting nodes, and to check a store is reachable.

use std::path::Path;
use std::process::ExitCode;

use crate::context;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {}

pub(crate) fn run(config_path: &Path, _args: &Args) -> anyhow::Result<ExitCode> {
    context::with_store(config_path, |config, store| async move {
        println!("store {} ({}) is migrated and ready", config.store_url_resolved(), store.backend());
        Ok(ExitCode::SUCCESS)
    })
}
