//! `orch audit`: checks invariants I1–I4 and the infrastructure-retry rule over the
//! whole event log, item by item (memory stays flat however long the log is); lists
//! fenced-out owners as notices; exit 1 naming the item and events of any breach.

use std::path::Path;
use std::process::ExitCode;

use orch_engine::audit::{AuditReport, Notice};

use crate::context;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Print the report (counts, breaches, notices) as JSON.
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(config_path: &Path, args: &Args) -> anyhow::Result<ExitCode> {
    context::with_store(config_path, |config, store| async move {
        let report = orch_engine::audit::audit_store(&*store, &config).await?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            print_text(&report);
        }
        // Notices are fencing doing its job: they never fail the audit.
        Ok(if report.is_clean() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
    })
}

/// Notices and breaches to stdout (they are the data); the verdict line on a
/// breach to stderr, as before the report grew counts.
fn print_text(report: &AuditReport) {
    for n in &report.notices {
        println!("{}", notice_line(n));
    }
    let unlisted = report.notices_total.saturating_sub(report.notices.len() as u64);
    if unlisted > 0 {
        println!("notice: {unlisted} more fenced-out owners not listed");
    }
    for b in &report.breaches {
        println!("{} breach on {}: {} (events {:?})", b.invariant, b.item, b.message, b.events);
    }
    let unlisted = report.breaches_total.saturating_sub(report.breaches.len() as u64);
    if unlisted > 0 {
        println!("... and {unlisted} more breaches not listed");
    }
    let checked = format!("{} events of {} item(s)", report.events_checked, report.items_checked);
    let fenced = match report.notices_total {
        0 => String::new(),
        n => format!(", {n} fenced-out owner notice(s)"),
    };
    if report.is_clean() {
        println!("audit: {checked} checked, invariants I1-I4 hold, no infrastructure rollback{fenced}");
    } else {
        eprintln!("audit: {} breach(es) in {checked}{fenced}", report.breaches_total);
    }
}

fn notice_line(n: &Notice) -> String {
    let or_unknown = |v: &Option<String>| v.clone().unwrap_or_else(|| "?".to_owned());
    let job = n.job.map_or_else(|| "?".to_owned(), |j| j.to_string());
    let epoch = n.epoch.map_or_else(|| "?".to_owned(), |e| e.to_string());
    let killed = n.killed_at.map_or_else(|| "no killed_at recorded".to_owned(), |t| format!("processes dead at {t}"));
    format!(
        "notice: {} job {job} fenced out at epoch {epoch} (step {}, node {}, {killed}; event {})",
        n.item,
        or_unknown(&n.step),
        or_unknown(&n.node),
        n.seq
    )
}
