//! `orch item add | show | list | events | retry | cancel | escalate | approve`:
//! files work items, reads them back and applies operator actions straight on the
//! store (no server needed; a running `orch serve` is woken by the store's
//! notification or its next poll).

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use orch_core::config::Config;
use orch_core::{ItemKey, ItemStatus, OperatorAction, StageName};
use orch_engine::clock::{Clock as _, SystemClock};
use orch_engine::ops::ItemRequest;
use orch_store::{ItemFilter, NewItem, Page};

use super::item_ops;
use crate::{context, shapes};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(subcommand)]
    command: ItemCommand,
}

#[derive(Debug, clap::Subcommand)]
enum ItemCommand {
    /// File a new item; it is queued at its track's first stage.
    Add(AddArgs),
    /// Show one item, its jobs and where it stands.
    Show(KeyArgs),
    /// List items, in key order.
    List(ListArgs),
    /// Print an item's events (its audit log), oldest first.
    Events(KeyArgs),
    /// Run a blocked item's current stage again, with a fresh set of attempts.
    Retry(KeyArgs),
    /// Stop an item for good; its running agent is killed.
    Cancel(KeyArgs),
    /// Move an item to the full-cycle track's first stage.
    Escalate(KeyArgs),
    /// Let an item waiting at an approval edge through.
    Approve(KeyArgs),
}

#[derive(Debug, clap::Args)]
struct AddArgs {
    /// The repo (a `[[repos]]` name in the config).
    #[arg(long)]
    repo: String,
    /// bug, feature, chore or incident.
    #[arg(long)]
    kind: String,
    /// One line saying what is wanted.
    #[arg(long)]
    title: String,
    /// A file holding the item's body (`-` reads standard input).
    #[arg(long)]
    body_file: Option<PathBuf>,
    /// The track to start on [default: the repo's track for the kind].
    #[arg(long)]
    track: Option<String>,
    /// Print the created item as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
struct KeyArgs {
    /// The item's key, e.g. SHOP-12.
    key: String,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
struct ListArgs {
    /// Only items of this repo.
    #[arg(long)]
    repo: Option<String>,
    /// Only items at this stage.
    #[arg(long)]
    stage: Option<String>,
    /// Only items with this status (queued, running, waiting_approval, blocked, done, cancelled).
    #[arg(long)]
    status: Option<String>,
    /// At most this many items.
    #[arg(long, default_value_t = 100)]
    limit: u32,
    /// Skip this many items first.
    #[arg(long, default_value_t = 0)]
    offset: u32,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(config_path: &Path, args: &Args) -> anyhow::Result<ExitCode> {
    match &args.command {
        ItemCommand::Add(a) => add(config_path, a),
        ItemCommand::Show(a) => show(config_path, a),
        ItemCommand::List(a) => list(config_path, a),
        ItemCommand::Events(a) => events(config_path, a),
        ItemCommand::Retry(a) => item_ops::run(config_path, &a.key, OperatorAction::Retry, a.json),
        ItemCommand::Cancel(a) => item_ops::run(config_path, &a.key, OperatorAction::Cancel, a.json),
        ItemCommand::Escalate(a) => item_ops::run(config_path, &a.key, OperatorAction::Escalate, a.json),
        ItemCommand::Approve(a) => item_ops::run(config_path, &a.key, OperatorAction::Approve, a.json),
    }
}

fn parse_key(s: &str) -> anyhow::Result<ItemKey> {
    Ok(s.parse::<ItemKey>()?)
}

/// The item to create, checked against the config before the store is touched
/// (the same rules as `POST /items`).
fn new_item(config: &Config, a: &AddArgs, body: String) -> anyhow::Result<NewItem> {
    let req = ItemRequest {
        repo: a.repo.clone(),
        kind: a.kind.clone(),
        title: a.title.clone(),
        body,
        track: a.track.clone(),
    };
    orch_engine::ops::new_item(config, &req).map_err(|e| match e.field {
        "title" => anyhow::anyhow!("--title must not be empty"),
        _ => anyhow::anyhow!(e.message),
    })
}

fn read_body(path: Option<&Path>) -> anyhow::Result<String> {
    match path {
        None => Ok(String::new()),
        Some(p) if p == Path::new("-") => {
            let mut s = String::new();
            std::io::stdin().read_to_string(&mut s).context("reading the body from standard input")?;
            Ok(s)
        }
        Some(p) => std::fs::read_to_string(p).with_context(|| format!("cannot read body file {}", p.display())),
    }
}

fn add(config_path: &Path, a: &AddArgs) -> anyhow::Result<ExitCode> {
    let body = read_body(a.body_file.as_deref())?;
    let config = context::load_config(config_path)?;
    let new = new_item(&config, a, body)?;
    context::runtime()?.block_on(async {
        let store = context::open_store(&config).await?;
        let item = store.create_item(new, SystemClock.now()).await?;
        if a.json {
            println!("{}", serde_json::to_string_pretty(&shapes::item(&item))?);
        } else {
            println!("created {} ({} on {}, queued at {})", item.key, item.kind, item.track, item.stage);
        }
        Ok(ExitCode::SUCCESS)
    })
}

fn show(config_path: &Path, a: &KeyArgs) -> anyhow::Result<ExitCode> {
    let key = parse_key(&a.key)?;
    context::with_store(config_path, |_config, store| async move {
        let item = store.get_item(&key).await?.with_context(|| format!("no item {key}"))?;
        let jobs = store.jobs_for_item(&key).await?;
        if a.json {
            let mut doc = shapes::item(&item);
            doc["jobs"] = jobs.iter().map(shapes::job).collect();
            doc["usage"] = shapes::item_usage(&jobs);
            println!("{}", serde_json::to_string_pretty(&doc)?);
            return Ok(ExitCode::SUCCESS);
        }
        let attempts: Vec<String> = item.attempts.iter().map(|(s, n)| format!("{s}={n}")).collect();
        let pr = item.pr.as_ref().map_or("-".to_owned(), |p| format!("{} ({})", p.url, p.state));
        let fields: Vec<Vec<String>> = [
            ("key", item.key.to_string()),
            ("title", item.title.clone()),
            ("repo", item.repo.clone()),
            ("kind", item.kind.to_string()),
            ("track", item.track.to_string()),
            ("stage", item.stage.to_string()),
            ("status", item.status.to_string()),
            ("version", item.version.to_string()),
            ("attempts", attempts.join(", ")),
            ("branch", item.branch.clone().unwrap_or_else(|| "-".into())),
            ("head", item.head_sha.clone().unwrap_or_else(|| "-".into())),
            ("pr", pr),
            ("usage", usage_text(jobs.iter().filter_map(|j| j.usage.as_ref()))),
            ("created", item.created_at.to_rfc3339()),
            ("updated", item.updated_at.to_rfc3339()),
        ]
        .into_iter()
        .map(|(k, v)| vec![format!("{k}:"), v])
        .collect();
        print!("{}", shapes::table(&["ITEM", ""], &fields).split_once('\n').map_or("", |(_, rest)| rest));
        if !item.body.is_empty() {
            println!("\n{}", item.body.trim_end());
        }
        if !jobs.is_empty() {
            println!();
            let rows: Vec<Vec<String>> = jobs
                .iter()
                .map(|j| {
                    vec![
                        j.id.to_string(),
                        j.stage.to_string(),
                        j.attempt.to_string(),
                        j.status.to_string(),
                        j.owner.clone().unwrap_or_else(|| "-".into()),
                        j.epoch.to_string(),
                        j.exit_code.map_or("-".into(), |c| c.to_string()),
                        j.usage.as_ref().map_or("-".into(), |u| u.total_tokens().to_string()),
                        j.usage.as_ref().and_then(|u| u.cost_usd).map_or("-".into(), |c| format!("${c:.4}")),
                        j.reason.clone().unwrap_or_default(),
                    ]
                })
                .collect();
            let header = ["JOB", "STAGE", "ATTEMPT", "STATUS", "OWNER", "EPOCH", "EXIT", "TOKENS", "COST", "REASON"];
            print!("{}", shapes::table(&header, &rows));
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// An item's usage in one line: `3 turns, 300 in + 60 out tokens (7 cache read,
/// 5 cache write), $0.0018`, or `-` when no run reported any.
fn usage_text<'a>(usages: impl Iterator<Item = &'a orch_core::Usage>) -> String {
    let mut any = false;
    let u = usages.fold(orch_core::Usage::default(), |acc, u| {
        any = true;
        acc.plus(u)
    });
    if !any {
        return "-".into();
    }
    let mut text = format!("{} turns, {} in + {} out tokens", u.turns, u.input_tokens, u.output_tokens);
    if u.cache_read_tokens + u.cache_write_tokens > 0 {
        text.push_str(&format!(" ({} cache read, {} cache write)", u.cache_read_tokens, u.cache_write_tokens));
    }
    if let Some(c) = u.cost_usd {
        text.push_str(&format!(", ${c:.4}"));
    }
    text
}

fn list(config_path: &Path, a: &ListArgs) -> anyhow::Result<ExitCode> {
    let status = a.status.as_deref().map(str::parse::<ItemStatus>).transpose()?;
    let filter = ItemFilter {
        repo: a.repo.clone(),
        stage: a.stage.as_deref().map(StageName::new),
        status,
        ..ItemFilter::default()
    };
    let page = Page { offset: a.offset, limit: a.limit };
    context::with_store(config_path, |_config, store| async move {
        let items = store.list_items(&filter, page).await?;
        if a.json {
            let doc: Vec<_> = items.iter().map(shapes::item).collect();
            println!("{}", serde_json::to_string_pretty(&doc)?);
            return Ok(ExitCode::SUCCESS);
        }
        let rows: Vec<Vec<String>> = items
            .iter()
            .map(|i| {
                vec![
                    i.key.to_string(),
                    i.repo.clone(),
                    i.kind.to_string(),
                    i.track.to_string(),
                    i.stage.to_string(),
                    i.status.to_string(),
                    i.version.to_string(),
                    i.title.clone(),
                ]
            })
            .collect();
        print!("{}", shapes::table(&["KEY", "REPO", "KIND", "TRACK", "STAGE", "STATUS", "VERSION", "TITLE"], &rows));
        Ok(ExitCode::SUCCESS)
    })
}

fn events(config_path: &Path, a: &KeyArgs) -> anyhow::Result<ExitCode> {
    let key = parse_key(&a.key)?;
    context::with_store(config_path, |_config, store| async move {
        if store.get_item(&key).await?.is_none() {
            bail!("no item {key}");
        }
        let events = store.events_for_item(&key).await?;
        if a.json {
            let doc: Vec<_> = events.iter().map(shapes::event).collect();
            println!("{}", serde_json::to_string_pretty(&doc)?);
            return Ok(ExitCode::SUCCESS);
        }
        let opt = |s: &Option<String>| s.clone().unwrap_or_else(|| "-".into());
        let rows: Vec<Vec<String>> = events
            .iter()
            .map(|e| {
                vec![
                    e.seq.to_string(),
                    e.at.to_rfc3339(),
                    e.kind.clone(),
                    opt(&e.from),
                    opt(&e.to),
                    e.job.map_or("-".into(), |j| j.to_string()),
                    e.epoch.map_or("-".into(), |n| n.to_string()),
                    e.reason.clone().unwrap_or_default(),
                ]
            })
            .collect();
        print!("{}", shapes::table(&["SEQ", "AT", "KIND", "FROM", "TO", "JOB", "EPOCH", "REASON"], &rows));
        Ok(ExitCode::SUCCESS)
    })
}
