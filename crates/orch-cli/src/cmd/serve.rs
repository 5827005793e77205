//! `orch serve`: runs a node (scheduler, lease heartbeat, reaper) and the HTTP API
//! on `server.listen` until SIGTERM or SIGINT, then shuts down gracefully: the API
//! stops accepting, the node stops claiming, drains, kills what remains and
//! releases its leases.
//!
//! Without `ORCH_SERVER_TOKEN` the API's mutations are open, so a non-loopback
//! `server.listen` is refused unless `--insecure-open` says the network is trusted.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use orch_engine::{Node, NodeOptions, SystemClock};
use tracing::{info, warn};

use crate::context;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Seconds running agents get to finish after SIGTERM before their groups are killed.
    #[arg(long, default_value_t = 10.0)]
    drain_s: f64,
    /// Seconds between polls of the store when no wake-up arrives.
    #[arg(long, default_value_t = 0.25)]
    poll_s: f64,
    /// Serve the API on a non-loopback address with no ORCH_SERVER_TOKEN (anyone
    /// who can reach it may file and steer items).
    #[arg(long)]
    insecure_open: bool,
    /// How diagnostics are written to stderr: `text` for people (colour only at a
    /// terminal), `json` for log shippers (one object per line).
    #[arg(long, value_enum, env = "ORCH_LOG_FORMAT", default_value_t = LogFormat::Text)]
    pub(crate) log_format: LogFormat,
}

/// `--log-format`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum LogFormat {
    #[default]
    Text,
    Json,
}

/// How long in-flight requests get to finish once the node has stopped.
const HTTP_DRAIN: Duration = Duration::from_secs(5);

pub(crate) fn run(config_path: &Path, args: &Args) -> anyhow::Result<ExitCode> {
    let config = context::load_config(config_path)?;
    let drain = Duration::try_from_secs_f64(args.drain_s).map_err(|_| anyhow::anyhow!("--drain-s must be >= 0"))?;
    let poll = Duration::try_from_secs_f64(args.poll_s).map_err(|_| anyhow::anyhow!("--poll-s must be >= 0"))?;
    context::runtime()?.block_on(async move {
        let token = std::env::var("ORCH_SERVER_TOKEN").ok().filter(|t| !t.is_empty());
        let listen = config.server.listen.clone();
        let addrs: Vec<std::net::SocketAddr> = tokio::net::lookup_host(listen.as_str())
            .await
            .with_context(|| format!("server.listen {listen:?} does not resolve"))?
            .collect();
        orch_server::check_exposure(&addrs, token.is_some(), args.insecure_open).map_err(anyhow::Error::msg)?;
        if config.server.auth_reads && token.is_none() {
            anyhow::bail!(
                "server.auth_reads = true (in {} or ORCH_SERVER_AUTH_READS) needs a token to check reads against, \
                 and ORCH_SERVER_TOKEN is not set: set it, or set server.auth_reads = false",
                config.source.display()
            );
        }
        let listener = tokio::net::TcpListener::bind(addrs.as_slice())
            .await
            .with_context(|| format!("cannot listen on server.listen {listen}"))?;
        let store = context::open_store(&config).await?;
        let mut opts = NodeOptions::new(context::node_id(&config), config.data_dir_resolved());
        opts.drain = drain;
        opts.poll_interval = poll;
        info!(node = %opts.node_id, store = %config.store_url_resolved(), data_dir = %opts.data_dir.display(), "orch serve");
        let config = Arc::new(config);
        let clock: Arc<dyn orch_engine::Clock> = Arc::new(SystemClock);
        let node = Node::new(Arc::clone(&store), Arc::clone(&config), Arc::clone(&clock), opts);
        let token_set = token.is_some();
        let state = orch_server::AppState::new(store, config, clock).with_node(node.clone()).with_token(token);
        let shutdown = node.shutdown_token();
        info!(listen = %listener.local_addr()?, auth = token_set, "HTTP API listening");
        // Cancel: stop accepting and let in-flight requests finish (bounded by
        // HTTP_DRAIN below). Error: logged; the node keeps running without its API.
        let server = tokio::spawn({
            let stop = shutdown.clone();
            async move {
                let served = axum::serve(listener, orch_server::router(state))
                    .with_graceful_shutdown(stop.cancelled_owned())
                    .await;
                if let Err(e) = served {
                    tracing::error!(error = %e, "the HTTP API stopped");
                }
            }
        });
        // Cancel: stops. Error: none possible.
        tokio::spawn(orch_server::metrics_upkeep(shutdown.clone()));
        let token = shutdown.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            info!("signal received: shutting down");
            token.cancel();
        });
        let ran = node.run().await;
        // A node that stopped on its own (a fatal error) takes its API with it.
        shutdown.cancel();
        if tokio::time::timeout(HTTP_DRAIN, server).await.is_err() {
            warn!("HTTP requests still open after the drain deadline: dropping them");
        }
        ran?;
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
