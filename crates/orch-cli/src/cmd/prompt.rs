//! `orch prompt show KEY [--stage S]`: prints the role prompt an agent would get
//! for the item — at its current stage, or at stage S — rendered exactly as the
//! node renders it (the repo's templates or the built-in ones, the artifacts in
//! the item's worktree on this machine, the last failure).

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use orch_core::{ItemKey, StageName};
use orch_engine::layout::Layout;

use crate::context;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Print the prompt an agent would get for item KEY.
    Show(ShowArgs),
}

#[derive(Debug, clap::Args)]
struct ShowArgs {
    /// The item's key, e.g. SHOP-1.
    key: String,
    /// The stage to render for (default: the item's current stage).
    #[arg(long)]
    stage: Option<String>,
}

pub(crate) fn run(config_path: &Path, args: &Args) -> anyhow::Result<ExitCode> {
    let Command::Show(a) = &args.command;
    let key: ItemKey = a.key.parse().with_context(|| format!("bad item key {:?}", a.key))?;
    context::with_store(config_path, |config, store| async move {
        let item = store.get_item(&key).await?.with_context(|| format!("no item {key}"))?;
        let stage = a.stage.as_ref().map_or_else(|| item.stage.clone(), |s| StageName::new(s.clone()));
        let (role, _) = config.agent_for(&stage).with_context(|| {
            let known: Vec<&str> = config.stages.keys().map(StageName::as_str).collect();
            format!("no stage {stage} with an agent in the config; expected one of: {}", known.join(", "))
        })?;
        let layout = Layout::new(config.data_dir_resolved());
        let jobs = store.jobs_for_item(&key).await?;
        // The stage's latest job, if there is one, names the verdict path and attempt.
        let latest = jobs.iter().rev().find(|j| j.stage == stage);
        let (attempt, this_job, verdict) = match latest.filter(|j| !j.status.is_ended()) {
            Some(j) => (j.attempt, Some(j.id), layout.verdict_file(j.id).display().to_string()),
            None => {
                let next = item.attempts.get(&stage).copied().unwrap_or(0) + 1;
                (next, None, layout.root().join("verdicts/job-<id>.json").display().to_string())
            }
        };
        let text = orch_engine::prompt::render(
            &*store,
            &config,
            &layout,
            &item,
            &stage,
            role,
            attempt,
            this_job,
            Path::new(&verdict),
        )
        .await?;
        print!("{text}");
        Ok(ExitCode::SUCCESS)
    })
}
