//! The `orch` binary: parses the command line, runs one verb, and alone decides the
//! process's exit code (0 success, 1 a failed check or command, 2 usage errors).

mod cmd;
mod config;
mod context;
mod shapes;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use cmd::serve::LogFormat;

/// orch: the orchestrator that drives work items through AI-agent pipelines.
#[derive(Debug, Parser)]
#[command(name = "orch", version, about, propagate_version = true)]
struct Cli {
    /// The config file (relative paths in it are relative to its folder)
    #[arg(long, global = true, env = "ORCH_CONFIG", default_value = "orch.toml")]
    config: PathBuf,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the whole pipeline on a sample project with scripted agents, live, in
    /// under a minute: a red gate and a rollback, a full cycle, an escalation, a
    /// reaper deferral, merged pull requests, and a summary.
    Demo(cmd::demo::Args),
    /// Write a commented orch.toml and example agent scripts into DIR.
    Init(cmd::init::Args),
    /// Validate the config; print tracks, edges, gates and each stage's time budget.
    Check(cmd::check::Args),
    /// Run a node: scheduler, lease heartbeat and reaper, until SIGTERM/SIGINT.
    Serve(cmd::serve::Args),
    /// Show items and jobs by status and stage, running jobs, and reaper settings.
    Queue(cmd::queue::Args),
    /// Print a job's agent log (--follow to stream it until the job ends).
    Logs(cmd::logs::Args),
    /// Check invariants I1-I4 over the event log; exit 1 on a breach.
    Audit(cmd::audit::Args),
    /// Apply the store's migrations (serve and every verb do it on open too).
    Migrate(cmd::migrate::Args),
    /// File, show and list work items, read their event log, and retry, cancel, escalate or approve them.
    Item(cmd::item::Args),
    /// List and show the local forge's pull requests (one per item).
    Pr(cmd::pr::Args),
    /// Show the role prompt an agent would get for an item (`prompt show KEY [--stage S]`).
    Prompt(cmd::prompt::Args),
}

fn main() -> ExitCode {
    quiet_on_closed_stdout();
    let cli = Cli::parse();
    let (serving, format) = match &cli.command {
        Command::Serve(args) => (true, args.log_format),
        _ => (false, LogFormat::Text),
    };
    init_logging(serving, format);
    let result = match cli.command {
        Command::Demo(args) => cmd::demo::run(&args),
        Command::Init(args) => cmd::init::run(&args),
        Command::Check(args) => cmd::check::run(&cli.config, &args),
        Command::Serve(args) => cmd::serve::run(&cli.config, &args),
        Command::Queue(args) => cmd::queue::run(&cli.config, &args),
        Command::Logs(args) => cmd::logs::run(&cli.config, &args),
        Command::Audit(args) => cmd::audit::run(&cli.config, &args),
        Command::Migrate(args) => cmd::migrate::run(&cli.config, &args),
        Command::Item(args) => cmd::item::run(&cli.config, &args),
        Command::Pr(args) => cmd::pr::run(&cli.config, &args),
        Command::Prompt(args) => cmd::prompt::run(&cli.config, &args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            if format == LogFormat::Json {
                // A log shipper reads every stderr line as JSON, the last one too.
                tracing::error!(error = format!("{err:#}"), "orch failed");
            } else {
                eprintln!("error: {err:#}");
            }
            ExitCode::FAILURE
        }
    }
}

/// Set once logging writes JSON (`orch serve --log-format json`): the few lines
/// written outside `tracing` for people must then go through it too.
static JSON_LOGS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether stderr carries JSON log lines only.
pub(crate) fn json_logs() -> bool {
    JSON_LOGS.load(std::sync::atomic::Ordering::Relaxed)
}

/// Diagnostics go to stderr; data to stdout. `RUST_LOG` overrides the level, which
/// is `info` for `serve` (one line per decision) and `warn` for one-shot verbs.
/// `json` writes one object per line, the event's fields at the top level and its
/// span's (an HTTP request's method, path and id) under `span`.
fn init_logging(serving: bool, format: LogFormat) {
    let default = if serving { "info" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // Colour only for a person at a terminal: `orch serve 2> file` and log
    // shippers get plain text, not escape codes (and NO_COLOR is honoured).
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr()) && std::env::var_os("NO_COLOR").is_none();
    let fmt = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => fmt.with_ansi(ansi).init(),
        LogFormat::Json => {
            JSON_LOGS.store(true, std::sync::atomic::Ordering::Relaxed);
            fmt.json().flatten_event(true).with_current_span(true).with_span_list(false).init();
        }
    }
}

/// `orch item list | head` closes our stdout early; `println!` then panics. Exit
/// quietly instead, as a shell user expects, with the status a SIGPIPE death would give.
fn quiet_on_closed_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if message.starts_with("failed printing to stdout") {
            std::process::exit(141);
        }
        default(info);
    }));
}
