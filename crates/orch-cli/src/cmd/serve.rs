//! `orch serve`: runs a node (scheduler, lease heartbeat, reaper) until SIGTERM or
//! SIGINT, then shuts down gracefully: stop claiming, drain, kill what remains and
//! release its leases.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use orch_engine::{Node, NodeOptions, SystemClock};
use tracing::info;

use crate::context;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Seconds running agents get to finish after SIGTERM before their groups are killed.
    #[arg(long, default_value_t = 10.0)]
    drain_s: f64,
    /// Seconds between polls of the store when no wake-up arrives.
    #[arg(long, default_value_t = 0.25)]
    poll_s: f64,
}

pub(crate) fn run(config_path: &Path, args: &Args) -> anyhow::Result<ExitCode> {
    let config = context::load_config(config_path)?;
    let drain = Duration::try_from_secs_f64(args.drain_s).map_err(|_| anyhow::anyhow!("--drain-s must be >= 0"))?;
    let poll = Duration::try_from_secs_f64(args.poll_s).map_err(|_| anyhow::anyhow!("--poll-s must be >= 0"))?;
    context::runtime()?.block_on(async move {
        let store = context::open_store(&config).await?;
        let mut opts = NodeOptions::new(context::node_id(&config), config.data_dir_resolved());
        opts.drain = drain;
        opts.poll_interval = poll;
        info!(node = %opts.node_id, store = %config.store_url_resolved(), data_dir = %opts.data_dir.display(), "orch serve");
        let node = Node::new(store, Arc::new(config), Arc::new(SystemClock), opts);
        let token = node.shutdown_token();
        tokio::spawn(async move {
            wait_for_signal().await;
            info!("signal received: shutting down");
            token.cancel();
        });
        node.run().await?;
        Ok(ExitCode::SUCCESS)
    })
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
