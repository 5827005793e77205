//! `orch check`: validates the config and prints what it would run, including the
//! time budget of every stage, so an operator sees the headroom under the reaper's
//! backstop before a job ever runs. Problems go to stderr, one `FILE:LINE:COL: KEY:
//! MESSAGE` line each, and make the exit code 1.

mod report;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use orch_core::config::{Config, StageBudget};
use serde::Serialize;

use crate::context;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Print the resolved config as JSON, with a `budget` array.
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(config_path: &Path, args: &Args) -> anyhow::Result<ExitCode> {
    let env = crate::config::orch_env();
    crate::config::warn_stray_overrides(&env);
    let config = match crate::config::load(config_path, &env)? {
        Ok(config) => config,
        Err(errors) => {
            for d in &errors {
                eprintln!("{d}");
            }
            let (n, path) = (errors.len(), config_path.display());
            let summary = if n == 1 {
                format!("1 problem in {path}; fix it")
            } else {
                format!("{n} problems in {path}; fix them")
            };
            eprintln!("{summary} and run `orch check` again");
            return Ok(ExitCode::FAILURE);
        }
    };
    let out = if args.json { json(&config)? } else { report::render(&config, &host_name()) };
    std::io::stdout().lock().write_all(out.as_bytes()).context("cannot write to stdout")?;
    let problems = context::runtime()?.block_on(repo_problems(&config));
    for p in &problems {
        eprintln!("{p}");
    }
    if !problems.is_empty() {
        eprintln!("{} repo problem(s); items of those repos would wait with the reason", problems.len());
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// How long `orch check` waits for one repo's remote to answer.
const REMOTE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

/// Every repo whose remote orch could not work with, named with the problem: not
/// a repository, no origin, unreachable, no main branch.
async fn repo_problems(config: &Config) -> Vec<String> {
    let git = orch_vcs::Git::with_timeout(REMOTE_TIMEOUT);
    let mut problems = Vec::new();
    for r in &config.repos {
        let path = (!r.path.as_os_str().is_empty()).then(|| config.resolve_path(&r.path));
        let remote = match orch_vcs::resolve_remote(&git, &r.name, path.as_deref(), r.url.as_deref()).await {
            Ok(remote) => remote,
            Err(e) => {
                problems.push(e.to_string());
                continue;
            }
        };
        let here = std::env::temp_dir();
        let branch = format!("refs/heads/{}", r.main_branch);
        match git.output(&here, &["ls-remote", "--heads", remote.as_str(), branch.as_str()], &[]).await {
            Ok(out) if out.code == 0 && out.stdout.trim().is_empty() => {
                problems.push(format!("repo {}: the remote {remote} has no branch {}", r.name, r.main_branch));
            }
            Ok(out) if out.code == 0 => {}
            Ok(out) => {
                problems.push(format!("repo {}: cannot reach the remote {remote}: {}", r.name, out.stderr.trim()))
            }
            Err(e) => problems.push(format!("repo {}: cannot reach the remote {remote}: {e}", r.name)),
        }
    }
    problems
}

/// What `--json` prints: the config's own fields, the paths as resolved against
/// the config's folder, and the budget table.
#[derive(Serialize)]
struct CheckJson<'a> {
    #[serde(flatten)]
    config: &'a Config,
    resolved: Resolved,
    budget: Vec<StageBudget>,
}

#[derive(Serialize)]
struct Resolved {
    store_url: String,
    data_dir: PathBuf,
}

fn json(config: &Config) -> anyhow::Result<String> {
    let doc = CheckJson {
        config,
        resolved: Resolved { store_url: config.store_url_resolved(), data_dir: config.data_dir_resolved() },
        budget: config.budget(),
    };
    let mut text = serde_json::to_string_pretty(&doc).context("cannot render the config as JSON")?;
    text.push('\n');
    Ok(text)
}

/// This host's name, which an empty `node.id` stands for.
fn host_name() -> String {
    hostname::get().map_or_else(|_| "unknown host".to_owned(), |h| h.to_string_lossy().into_owned())
}
