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
    Ok(ExitCode::SUCCESS)
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
