//! `orch pr list|show`: the pull requests of the embedded local forge, read from
//! the store (no server needed): one per item, with its branch, head SHA, state,
//! merge commit and a check per gate and SHA.

use std::path::Path;
use std::process::ExitCode;

use orch_core::ItemKey;

use crate::context;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(subcommand)]
    command: PrCommand,
}

#[derive(Debug, clap::Subcommand)]
enum PrCommand {
    /// List pull requests, by item key.
    List(ListArgs),
    /// Show one item's pull request with its checks.
    Show(ShowArgs),
}

#[derive(Debug, clap::Args)]
struct ListArgs {
    /// Only this repo's.
    #[arg(long)]
    repo: Option<String>,
    /// Only those in this state: open, merged or closed.
    #[arg(long, value_parser = ["open", "merged", "closed"])]
    state: Option<String>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
struct ShowArgs {
    /// The item whose pull request to show, e.g. SHOP-12.
    key: ItemKey,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(config_path: &Path, args: &Args) -> anyhow::Result<ExitCode> {
    context::with_store(config_path, |_config, store| async move {
        match &args.command {
            PrCommand::List(a) => {
                let prs = store.list_prs(a.repo.as_deref(), a.state.as_deref()).await?;
                if a.json {
                    println!("{}", serde_json::to_string_pretty(&prs)?);
                    return Ok(ExitCode::SUCCESS);
                }
                if prs.is_empty() {
                    println!("no pull requests");
                }
                for pr in &prs {
                    let head = pr.head_sha.as_deref().map_or("-", |s| s.get(..12).unwrap_or(s));
                    println!("{:<10} {:<7} {:<40} head {head}  {}", pr.item, pr.state, pr.branch, pr.title);
                }
                Ok(ExitCode::SUCCESS)
            }
            PrCommand::Show(a) => {
                let Some(pr) = store.get_pr(&a.key).await? else {
                    eprintln!("orch: item {} has no pull request yet (one opens at the item's first push)", a.key);
                    return Ok(ExitCode::FAILURE);
                };
                if a.json {
                    println!("{}", serde_json::to_string_pretty(&pr)?);
                    return Ok(ExitCode::SUCCESS);
                }
                println!("{}  [{}]", pr.title, pr.state);
                println!("url      {}", pr.url);
                println!("branch   {}", pr.branch);
                println!("head     {}", pr.head_sha.as_deref().unwrap_or("-"));
                if let Some(m) = &pr.merge_sha {
                    println!("merged   {m}");
                }
                println!("checks");
                if pr.checks.is_empty() {
                    println!("  (none yet)");
                }
                for (gate, c) in &pr.checks {
                    let verdict = if c.passed { "pass" } else { "FAIL" };
                    let why = c.reason.as_deref().map(|r| format!("  {r}")).unwrap_or_default();
                    println!("  {gate:<20} {verdict} on {}{why}", c.sha.get(..12).unwrap_or(&c.sha));
                }
                if !pr.body.is_empty() {
                    println!("\n{}", pr.body.trim_end());
                }
                Ok(ExitCode::SUCCESS)
            }
        }
    })
}
