//! The `orch` binary: parses the command line, runs one verb, and alone decides the
//! process's exit code (0 success, 1 a failed check or command, 2 usage errors).

mod cmd;
mod config;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// orch: the orchestrator that drives work items through AI-agent pipelines.
#[derive(Debug, Parser)]
#[command(name = "orch", version, about, propagate_version = true)]
struct Cli {
    /// The config file [default: $ORCH_CONFIG, else ./orch.toml]
    #[arg(long, global = true, env = "ORCH_CONFIG", default_value = "orch.toml")]
    config: PathBuf,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write a commented orch.toml and example agent scripts into DIR.
    Init(cmd::init::Args),
    /// Validate the config; print tracks, edges, gates and each stage's time budget.
    Check(cmd::check::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Init(args) => cmd::init::run(&args),
        Command::Check(args) => cmd::check::run(&cli.config, &args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
