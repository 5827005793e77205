//! `orch demo [--keep DIR] [--serve] [--agent claude-code|codex]`: the whole
//! pipeline in one command. It writes a workspace (a sample project in a git repo
//! with a bare remote, demo agents, an `orch.toml` with demo timings), runs the
//! same node `orch serve` runs, in this process, files three items that between
//! them show a red gate and a rollback, a full cycle with documents, an escalation
//! and a reaper deferring to a slow but live finalizer, follows them live, and ends
//! with a summary. Exit 0 only when every item reached its expected end and the
//! audit of the event log is clean.
//!
//! The demo's config ignores `ORCH_*` overrides: a user's `ORCH_STORE_URL` for their
//! own deployment must not send the demo's items there.

mod agent;
mod progress;
mod scenario;
mod summary;
mod workspace;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use orch_core::config::Config;
use orch_core::{ItemKey, ItemStatus, JobStatus};
use orch_engine::ops::ItemRequest;
use orch_engine::{Clock, Node, NodeOptions, SystemClock};
use orch_store::Store;

use agent::AgentChoice;
use progress::Progress;
use scenario::{Report, SCENARIOS, Scenario};
use workspace::Workspace;

use crate::context;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Build the workspace in DIR and keep it afterwards (DIR must be new, empty, or
    /// a previous demo's workspace, which is replaced) [default: a temporary folder,
    /// removed when the demo exits]
    #[arg(long, value_name = "DIR")]
    keep: Option<PathBuf>,
    /// Serve the HTTP API and dashboard on a free loopback port, and keep the node
    /// running until Ctrl-C
    #[arg(long)]
    serve: bool,
    /// Who runs the analyst, architect, developer and tester roles
    #[arg(long, value_enum, default_value_t = AgentChoice::Script)]
    agent: AgentChoice,
}

/// How long the scripted demo may take before it is called stuck (it needs well
/// under a minute); real agents get longer.
const SCRIPTED_DEADLINE: Duration = Duration::from_secs(240);
const AGENT_DEADLINE: Duration = Duration::from_secs(3600);
/// How often the live view reads the store.
const TICK: Duration = Duration::from_millis(100);

pub(crate) fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let missing = agent::missing(args.agent, std::env::var_os("PATH"), |k| std::env::var(k).ok());
    if !missing.is_empty() {
        for line in &missing {
            eprintln!("{line}");
        }
        eprintln!("(without --agent, `orch demo` runs scripted agents that need nothing but git, sh and awk)");
        return Ok(ExitCode::FAILURE);
    }
    let started = Instant::now();
    let ws = Workspace::create(args.keep.as_deref(), args.agent)?;
    let config_path = ws.config();
    let text = std::fs::read_to_string(&config_path)
        .with_context(|| format!("cannot read the demo config {}", config_path.display()))?;
    let config = orch_core::config::load(&config_path, &text, &BTreeMap::new())
        .map_err(|e| anyhow::anyhow!("the demo's own config does not load (a bug in orch):\n{e}"))?;
    let ok = context::runtime()?
        .block_on(drive(&ws, config, args, started))
        .with_context(|| format!("the demo stopped (its workspace is kept: {})", ws.root().display()))?;
    if ok {
        ws.remove_if_temporary();
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("the workspace is kept for inspection: {}", ws.root().display());
        Ok(ExitCode::FAILURE)
    }
}

/// Runs the node, files the items, follows them to their end, checks and
/// summarises. `Ok(false)` is a demo that did not go as expected (said why).
async fn drive(ws: &Workspace, config: Config, args: &Args, started: Instant) -> anyhow::Result<bool> {
    let store = context::open_store(&config).await?;
    let config = Arc::new(config);
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let mut opts = NodeOptions::new(context::node_id(&config), config.data_dir_resolved());
    opts.poll_interval = Duration::from_millis(100);
    opts.drain = Duration::from_secs(5);
    let node = Node::new(Arc::clone(&store), Arc::clone(&config), Arc::clone(&clock), opts);
    // Cancel: the node drains (its own deadline). Error: reported when the demo
    // finds the task ended.
    let mut running = tokio::spawn({
        let node = node.clone();
        async move { node.run().await }
    });
    let mut progress = Progress::new();
    progress.say(&format!("orch demo: workspace {}", ws.root().display()));
    let api = if args.serve { Some(serve_api(&store, &config, &clock, &node).await?) } else { None };
    if let Some(url) = &api {
        progress.say(&format!("API and dashboard: {url}"));
    }
    for (s, n) in SCENARIOS.iter().zip(1..) {
        progress.say(&format!("  item {n}: {} {:?}: {}", s.kind, s.title, s.shows));
    }

    let filed = file_items(&*store, &config, &*clock, &mut progress).await?;
    let deadline = if args.agent.is_scripted() { SCRIPTED_DEADLINE } else { AGENT_DEADLINE };
    let followed = follow(&*store, &filed, &mut progress, &mut running, deadline).await;
    progress.finish();
    let followed = match followed {
        Ok(f) => f,
        Err(e) => {
            stop_node(&node, &mut running).await;
            return Err(e);
        }
    };
    if !args.serve {
        stop_node(&node, &mut running).await;
    }

    let mut reports = Vec::with_capacity(filed.len());
    for (key, s) in &filed {
        reports.push(Report::read(&*store, key, s).await?);
    }
    let audit = orch_engine::audit::audit_store(&*store, &config).await?;
    if let Err(e) = ws.pull_project() {
        eprintln!("warning: cannot bring {} up to main: {e:#}", ws.project().display());
    }

    println!();
    print!("{}", summary::table(&reports));
    println!();
    let first = filed.first().map(|(k, _)| k.to_string()).unwrap_or_default();
    print!("{}", summary::where_to_look(ws, &first));
    let mut ok = true;
    match followed {
        Followed::AllStopped => {}
        Followed::TimedOut => {
            ok = false;
            eprintln!("the demo did not finish within {} s", deadline.as_secs());
        }
        Followed::Interrupted => {
            ok = false;
            eprintln!("interrupted");
        }
    }
    for r in &reports {
        let problems = r.problems(args.agent.is_scripted(), &ws.remote());
        if problems.is_empty() {
            continue;
        }
        ok = false;
        eprintln!("{} ({}) did not end as expected: {}", r.item.key, r.scenario.title, problems.join("; "));
        if let Some(reason) = r.last_failure() {
            eprintln!("  its last failure: {reason}");
        }
        let logs: Vec<String> = r.jobs.iter().filter_map(|j| j.log_path.clone()).collect();
        eprintln!("  its logs: {} (agents: {})", ws.logs().display(), logs.join(", "));
    }
    if audit.is_clean() {
        println!(
            "audit: {} events of {} items checked, invariants I1-I4 hold",
            audit.events_checked, audit.items_checked
        );
    } else {
        ok = false;
        for b in &audit.breaches {
            eprintln!("audit: {} breach on {}: {} (events {:?})", b.invariant, b.item, b.message, b.events);
        }
    }
    let verdict = if ok { "every item reached its expected end" } else { "the demo did NOT go as expected" };
    println!("{verdict} in {:.1} s", started.elapsed().as_secs_f64());
    if ok {
        println!("next: README.md, \"Use it on your own repository\" (orch init, orch serve, orch item add)");
    }

    if let Some(url) = api {
        println!("\nthe node and the API keep running at {url} — Ctrl-C stops them");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = &mut running => {}
        }
        stop_node(&node, &mut running).await;
    }
    Ok(ok)
}

/// Files every scenario's item, in order (so their keys are DEMO-1, -2, -3 in a
/// fresh workspace).
async fn file_items(
    store: &dyn Store,
    config: &Config,
    clock: &dyn Clock,
    progress: &mut Progress,
) -> anyhow::Result<Vec<(ItemKey, &'static Scenario)>> {
    let mut filed = Vec::with_capacity(SCENARIOS.len());
    for s in &SCENARIOS {
        let req = ItemRequest {
            repo: "demo".to_owned(),
            kind: s.kind.to_owned(),
            title: s.title.to_owned(),
            body: s.body.to_owned(),
            track: None,
        };
        let new = orch_engine::ops::new_item(config, &req).map_err(|e| anyhow::anyhow!("{}: {e}", e.field))?;
        let item = store.create_item(new, clock.now()).await?;
        progress.item(&item, "");
        filed.push((item.key, s));
    }
    Ok(filed)
}

/// How following the items ended.
enum Followed {
    AllStopped,
    TimedOut,
    Interrupted,
}

/// Shows events and item states as they change, until every item has stopped
/// moving (done, cancelled, or blocked for a human), the deadline, or Ctrl-C.
///
/// # Errors
/// A store error, or the node stopping on its own.
async fn follow(
    store: &dyn Store,
    filed: &[(ItemKey, &'static Scenario)],
    progress: &mut Progress,
    running: &mut tokio::task::JoinHandle<Result<(), orch_engine::Error>>,
    deadline: Duration,
) -> anyhow::Result<Followed> {
    let until = Instant::now() + deadline;
    let mut after = 0;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        loop {
            let events = store.events_since(after, 500).await?;
            for e in &events {
                after = after.max(e.seq);
                progress.event(e);
            }
            if events.len() < 500 {
                break;
            }
        }
        let mut stopped = 0;
        for (key, _) in filed {
            let Some(item) = store.get_item(key).await? else { anyhow::bail!("item {key} vanished from the store") };
            let note = match store.active_job(key).await? {
                Some(j) if j.status == JobStatus::Running => format!("{} agent running", role_of(&j.stage)),
                Some(j) if j.status == JobStatus::Finishing => "gates, commit, push".to_owned(),
                _ => String::new(),
            };
            if item.status.is_terminal() || item.status == ItemStatus::Blocked {
                stopped += 1;
            }
            progress.item(&item, &note);
        }
        if stopped == filed.len() {
            return Ok(Followed::AllStopped);
        }
        if Instant::now() >= until {
            return Ok(Followed::TimedOut);
        }
        tokio::select! {
            () = tokio::time::sleep(TICK) => {}
            _ = &mut ctrl_c => return Ok(Followed::Interrupted),
            ended = &mut *running => {
                let why = match ended {
                    Ok(Ok(())) => "it stopped".to_owned(),
                    Ok(Err(e)) => e.to_string(),
                    Err(e) => e.to_string(),
                };
                anyhow::bail!("the demo's node stopped before the items finished: {why}");
            }
        }
    }
}

fn role_of(stage: &orch_core::StageName) -> &'static str {
    match stage.as_str() {
        "analysis" => "analyst",
        "architecture" => "architect",
        "development" => "developer",
        "testing" => "tester",
        _ => "deployer",
    }
}

/// Stops the node (drain, kill what is left) and waits for it.
async fn stop_node(node: &Node, running: &mut tokio::task::JoinHandle<Result<(), orch_engine::Error>>) {
    node.shutdown_token().cancel();
    if running.is_finished() {
        return;
    }
    match (&mut *running).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => eprintln!("warning: the demo's node stopped with an error: {e}"),
        Err(e) => eprintln!("warning: the demo's node task failed: {e}"),
    }
}

/// Serves the HTTP API (and the dashboard at `/`) on `server.listen` — a free
/// loopback port in the demo config — until the node shuts down. Returns its URL.
async fn serve_api(
    store: &Arc<dyn Store>,
    config: &Arc<Config>,
    clock: &Arc<dyn Clock>,
    node: &Node,
) -> anyhow::Result<String> {
    let listen = config.server.listen.clone();
    let listener = tokio::net::TcpListener::bind(listen.as_str())
        .await
        .with_context(|| format!("cannot listen on server.listen {listen}"))?;
    let addr = listener.local_addr()?;
    let state =
        orch_server::AppState::new(Arc::clone(store), Arc::clone(config), Arc::clone(clock)).with_node(node.clone());
    let stop = node.shutdown_token();
    // Cancel: stops accepting with the node. Error: logged; the demo goes on.
    tokio::spawn(async move {
        let served = axum::serve(listener, orch_server::router(state)).with_graceful_shutdown(stop.cancelled_owned());
        if let Err(e) = served.await {
            tracing::error!(error = %e, "the demo's HTTP API stopped");
        }
    });
    Ok(format!("http://{addr}/"))
}
