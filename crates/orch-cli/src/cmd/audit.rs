//! `orch audit`: checks invariants I1–I4 over the whole event log; exit 1 naming
//! the item and events of any breach.

use std::path::Path;
use std::process::ExitCode;

use crate::context;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Print breaches as JSON.
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(config_path: &Path, args: &Args) -> anyhow::Result<ExitCode> {
    context::with_store(config_path, |config, store| async move {
        let mut events = Vec::new();
        let mut after = 0;
        loop {
            let page = store.events_since(after, 10_000).await?;
            let Some(last) = page.last() else { break };
            after = last.seq;
            events.extend(page);
        }
        let breaches = orch_engine::audit::audit(&config, &events);
        if args.json {
            println!("{}", serde_json::to_string_pretty(&breaches)?);
        } else if breaches.is_empty() {
            println!("audit: {} events checked, invariants I1-I4 hold", events.len());
        } else {
            for b in &breaches {
                println!("{} breach on {}: {} (events {:?})", b.invariant, b.item, b.message, b.events);
            }
            eprintln!("audit: {} breach(es) in {} events", breaches.len(), events.len());
        }
        Ok(if breaches.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
    })
}
