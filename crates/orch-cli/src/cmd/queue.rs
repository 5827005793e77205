//! `orch queue`: what `GET /queue` returns, read straight from the store: items by
//! status and stage, jobs by status, the running jobs, and the reaper's settings.
//! `--json` prints the document `GET /queue` serves (one function builds both);
//! the reaper's counters are the cluster's, read from the store.

use std::path::Path;
use std::process::ExitCode;

use crate::context;

use orch_server::queue::CLOCK_OFFSET_BOUND_MS;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Print JSON instead of tables.
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(config_path: &Path, args: &Args) -> anyhow::Result<ExitCode> {
    context::with_store(config_path, |config, store| async move {
        if args.json {
            // The document `GET /queue` serves, at the store's time where it has
            // a clock (PostgreSQL), else this host's.
            let now = store.store_time().await?.unwrap_or_else(orch_engine::clock::system_now);
            let doc = orch_server::queue::document(store.as_ref(), &config, now).await?;
            println!("{}", serde_json::to_string_pretty(&doc)?);
            return Ok(ExitCode::SUCCESS);
        }
        let stats = store.queue_stats().await?;
        let nodes = store.nodes().await?;
        let r = &config.reaper;
        println!("ITEMS BY STATUS");
        for (status, n) in &stats.items_by_status {
            println!("  {status:<18} {n}");
        }
        println!("ITEMS BY STAGE (not ended)");
        for (stage, n) in &stats.items_by_stage {
            println!("  {stage:<18} {n}");
        }
        println!("JOBS BY STATUS");
        for (status, n) in &stats.jobs_by_status {
            println!("  {status:<18} {n}");
        }
        println!("RUNNING JOBS");
        if stats.active_jobs.is_empty() {
            println!("  (none)");
        }
        for j in &stats.active_jobs {
            let started = j.started_at.map(|t| t.to_rfc3339()).unwrap_or_else(|| "-".into());
            let owner = j.owner.as_deref().unwrap_or("-");
            println!(
                "  job {:<6} {:<10} {:<15} {:<10} owner {owner} epoch {} started {started}",
                j.id, j.item, j.stage, j.status, j.epoch
            );
        }
        println!("NODES");
        if nodes.is_empty() {
            println!("  (none)");
        }
        for n in &nodes {
            let state = n.stopped_at.map_or_else(
                || format!("last seen {}", n.last_seen.to_rfc3339()),
                |t| format!("stopped {}", t.to_rfc3339()),
            );
            let warn = if n.clock_offset_ms.abs() > CLOCK_OFFSET_BOUND_MS { "  CLOCK OFF" } else { "" };
            println!(
                "  {:<24} host {} pid {} clock offset {} ms, {state}{warn}",
                n.id, n.host, n.pid, n.clock_offset_ms
            );
        }
        println!(
            "REAPER interval {}s, finalize grace {}s, max running {}s, finalizer liveness {}, lease ttl {}s, heartbeat {}s",
            r.interval_s,
            r.finalize_grace_s,
            r.max_running_s,
            r.finalizer_liveness_enabled,
            r.lease_ttl_s,
            r.heartbeat_s
        );
        Ok(ExitCode::SUCCESS)
    })
}
