//! The validated configuration: what `orch.toml` (plus `ORCH_*` overrides and the
//! built-in defaults) says to run. Every value here has passed validation, so the
//! engine can rely on the graph being well formed and the time budget holding.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use crate::key::KeyPrefix;
use crate::model::ItemKind;
use crate::names::{GateName, RoleName, StageName, TrackName};
use crate::time::secs;

/// The whole configuration of an orch deployment.
#[derive(Clone, Debug, Serialize)]
pub struct Config {
    /// The file it was read from; relative paths in it are resolved against its folder.
    pub source: PathBuf,
    pub server: ServerConfig,
    pub store: StoreConfig,
    pub node: NodeConfig,
    pub reaper: ReaperConfig,
    pub repos: Vec<RepoConfig>,
    pub agents: BTreeMap<RoleName, AgentConfig>,
    pub tracks: BTreeMap<TrackName, TrackConfig>,
    pub stages: BTreeMap<StageName, StageConfig>,
    pub edges: Vec<EdgeConfig>,
    pub gates: BTreeMap<GateName, GateConfig>,
}

/// `[server]`: how the HTTP API listens.
#[derive(Clone, Debug, Serialize)]
pub struct ServerConfig {
    pub listen: String,
    /// Whether reads (GET) need the bearer token too, not only mutations. The
    /// token itself comes from `ORCH_SERVER_TOKEN`, never from the file; `orch
    /// serve` refuses `auth_reads` without one.
    pub auth_reads: bool,
}

/// `[store]`: where state lives.
#[derive(Clone, Debug, Serialize)]
pub struct StoreConfig {
    /// `sqlite://PATH` (relative to the config's folder) or `postgres://…`.
    pub url: String,
}

/// `[node]`: this process's identity and capacity.
#[derive(Clone, Debug, Serialize)]
pub struct NodeConfig {
    /// Empty means "use the hostname"; resolved by the binary, not here (no I/O).
    pub id: String,
    pub max_concurrent_jobs: NonZeroU32,
    /// Worktrees, logs, prompts and verdicts; relative to the config's folder.
    pub data_dir: PathBuf,
    /// How a job's processes are contained, so none outlives the job.
    pub isolation: Isolation,
}

/// `[node] isolation`: what holds a job's processes together so they can all be
/// killed, including descendants that leave the process group (`setsid`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Isolation {
    /// A cgroup per job where the host lets orch make one, else process groups.
    Auto,
    /// A cgroup per job; the node refuses to start without one.
    Cgroup,
    /// Process groups only, with the node as child subreaper.
    ProcessGroup,
}

impl Isolation {
    /// The names the config accepts.
    pub const NAMES: &'static [&'static str] = &["auto", "cgroup", "process-group"];

    /// Parses a config value.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "auto" => Some(Self::Auto),
            "cgroup" => Some(Self::Cgroup),
            "process-group" => Some(Self::ProcessGroup),
            _ => None,
        }
    }
}

/// `[reaper]`: the recovery timings. All in seconds, fractional allowed.
#[derive(Clone, Debug, Serialize)]
pub struct ReaperConfig {
    pub interval_s: f64,
    pub finalize_grace_s: f64,
    pub max_running_s: f64,
    pub finalizer_liveness_enabled: bool,
    pub lease_ttl_s: f64,
    pub heartbeat_s: f64,
}

impl ReaperConfig {
    pub fn interval(&self) -> Duration {
        secs(self.interval_s)
    }
    pub fn finalize_grace(&self) -> Duration {
        secs(self.finalize_grace_s)
    }
    pub fn max_running(&self) -> Duration {
        secs(self.max_running_s)
    }
    pub fn lease_ttl(&self) -> Duration {
        secs(self.lease_ttl_s)
    }
    pub fn heartbeat(&self) -> Duration {
        secs(self.heartbeat_s)
    }
}

impl Default for ReaperConfig {
    fn default() -> Self {
        Self {
            interval_s: 15.0,
            finalize_grace_s: 300.0,
            max_running_s: 5400.0,
            finalizer_liveness_enabled: true,
            lease_ttl_s: 30.0,
            heartbeat_s: 10.0,
        }
    }
}

/// Which forge hosts a repo's pull requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ForgeKind {
    Local,
    Gitea,
    Github,
}

/// One `[[repos]]` entry.
#[derive(Clone, Debug, Serialize)]
pub struct RepoConfig {
    pub name: String,
    pub key: KeyPrefix,
    /// A local clone, relative to the config's folder, whose `origin` is the
    /// remote (orch never works in it). Empty when `url` names the remote.
    pub path: PathBuf,
    /// The remote itself, when no local clone is named.
    pub url: Option<String>,
    /// Who orch's commits are by.
    pub author_name: String,
    pub author_email: String,
    pub forge: ForgeKind,
    pub main_branch: String,
    /// The track each kind of item starts on.
    pub tracks: BTreeMap<ItemKind, TrackName>,
    /// What one item's agent runs may use in all.
    pub budget: Budget,
    /// A folder of prompt templates overriding the built-in ones (`common.md`,
    /// `<role>.md`), relative to the config's folder.
    pub prompts: Option<PathBuf>,
}

/// Limits on what one item's agent runs may use in all (`budget = { … }` on a
/// repo or a track; both apply). A run that pushes its item over one is stopped
/// and the item blocked with reason `budget`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Budget {
    /// US dollars, as the agents report cost (Claude Code does; Codex does not).
    pub max_cost_usd: Option<f64>,
    /// Input, output and cache tokens together.
    pub max_tokens: Option<u64>,
    /// Seconds of agent runs, summed.
    pub max_agent_s: Option<f64>,
}

impl Budget {
    /// Whether no limit is set.
    pub fn is_empty(&self) -> bool {
        self.max_cost_usd.is_none() && self.max_tokens.is_none() && self.max_agent_s.is_none()
    }

    /// The first limit `usage` (and `agent_s` seconds of runs) breaks, as a
    /// reason naming the limit and the amounts, or `None`.
    pub fn breached(&self, usage: &crate::Usage, agent_s: f64) -> Option<String> {
        if let (Some(max), Some(cost)) = (self.max_cost_usd, usage.cost_usd)
            && cost > max
        {
            return Some(format!("cost ${cost:.4} is over max_cost_usd {max}"));
        }
        if let Some(max) = self.max_tokens
            && usage.total_tokens() > max
        {
            return Some(format!("{} tokens are over max_tokens {max}", usage.total_tokens()));
        }
        if let Some(max) = self.max_agent_s
            && agent_s > max
        {
            return Some(format!("{agent_s:.1}s of agent runs are over max_agent_s {max}"));
        }
        None
    }
}

impl RepoConfig {
    /// The starting track for an item of `kind` (validation guarantees every kind has one).
    pub fn track_for(&self, kind: ItemKind) -> Option<&TrackName> {
        self.tracks.get(&kind)
    }
}

/// How an agent is run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AdapterKind {
    Command,
    ClaudeCode,
    Codex,
    Script,
    /// No process: the stage only runs the gates of its outgoing edge.
    None,
}

/// Where the machine verdict comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum VerdictSource {
    /// JSON written to `ORCH_VERDICT_FILE` (DESIGN §6).
    File,
    /// Exit 0 is `pass`, anything else `fail`.
    ExitCode,
    /// Adapters `claude-code` and `codex`: the verdict file when the agent wrote
    /// one, else the agent's own final result (a run that ended without error
    /// stands as a pass).
    Result,
}

/// One `[agents.<role>]` table.
#[derive(Clone, Debug, Serialize)]
pub struct AgentConfig {
    pub adapter: AdapterKind,
    /// argv; empty only for adapter `none`.
    pub command: Vec<String>,
    /// Zero for adapter `none` (no process runs).
    pub timeout_s: f64,
    pub verdict: VerdictSource,
    /// What adapters `claude-code` and `codex` need beyond a command.
    pub cli: CliAgent,
}

/// The keys of an `[agents.<role>]` table that drive a coding agent's CLI
/// (adapters `claude-code` and `codex`); empty for the other adapters.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CliAgent {
    /// The model the CLI asks for (`--model`); the CLI's default when unset.
    pub model: Option<String>,
    /// Claude Code: `--max-turns`.
    pub max_turns: Option<u32>,
    /// Claude Code: `--permission-mode` (default `acceptEdits`);
    /// `bypassPermissions` becomes `--dangerously-skip-permissions`.
    pub permission_mode: Option<String>,
    /// Claude Code: `--allowedTools`.
    pub allowed_tools: Vec<String>,
    /// Extra environment for the agent process (API keys by reference belong in
    /// the node's environment; this is for switches like a base URL).
    pub env: BTreeMap<String, String>,
    /// The program to run instead of `claude` / `codex` on `PATH`.
    pub binary: Option<String>,
    /// Codex: `--sandbox` (default `workspace-write`).
    pub sandbox: Option<String>,
    /// Codex: the model provider orch writes into the run's `CODEX_HOME`.
    pub provider: Option<ProviderConfig>,
    /// A run whose event stream shows nothing new for this long is stopped with
    /// reason `stalled` (Codex retries an unreachable server forever).
    pub stall_s: f64,
}

/// A Codex model provider: written as `[model_providers.<name>]` with
/// `wire_api = "responses"`.
#[derive(Clone, Debug, Serialize)]
pub struct ProviderConfig {
    pub name: String,
    /// e.g. `https://api.openai.com/v1`.
    pub base_url: String,
    /// The environment variable holding the API key, e.g. `OPENAI_API_KEY`.
    pub env_key: String,
}

impl CliAgent {
    pub fn stall(&self) -> Duration {
        secs(self.stall_s)
    }
}

impl AgentConfig {
    pub fn timeout(&self) -> Duration {
        secs(self.timeout_s)
    }
}

/// One `[tracks.<name>]` table.
#[derive(Clone, Debug, Serialize)]
pub struct TrackConfig {
    pub stages: Vec<StageName>,
    /// What one item's agent runs may use while on this track's stages.
    pub budget: Budget,
}

/// One `[stages.<name>]` table.
#[derive(Clone, Debug, Serialize)]
pub struct StageConfig {
    pub role: RoleName,
    pub max_attempts: NonZeroU32,
}

/// Where an edge leads: the next stage, or `done` after a track's last stage.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(untagged)]
pub enum EdgeTarget {
    Stage(StageName),
    #[serde(serialize_with = "serialize_done")]
    Done,
}

fn serialize_done<S: serde::Serializer>(s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str("done")
}

impl EdgeTarget {
    /// The spelling used in config and events (`done` for the end of a track).
    pub fn as_str(&self) -> &str {
        match self {
            EdgeTarget::Stage(s) => s.as_str(),
            EdgeTarget::Done => "done",
        }
    }
}

/// One `[[edges]]` entry: gates between `from` and `to`, and where a failure goes.
#[derive(Clone, Debug, Serialize)]
pub struct EdgeConfig {
    pub from: StageName,
    pub to: EdgeTarget,
    pub gates: Vec<GateName>,
    /// Rollback target; `None` retries `from`.
    pub on_fail: Option<StageName>,
    pub approval: bool,
}

/// One `[gates.<name>]` table.
#[derive(Clone, Debug, Serialize)]
pub struct GateConfig {
    pub command: Vec<String>,
    pub timeout_s: f64,
    pub metric: Option<MetricSpec>,
    /// What the gate runs on.
    pub on: GateTree,
}

/// The tree a gate checks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum GateTree {
    /// The item's branch as the agents left it.
    #[default]
    Branch,
    /// The branch merged with the current main: what will land.
    MergePreview,
}

impl GateConfig {
    pub fn timeout(&self) -> Duration {
        secs(self.timeout_s)
    }
}

/// A gate that passes on a number read from its output rather than its exit code.
#[derive(Clone, Debug, Serialize)]
pub struct MetricSpec {
    #[serde(serialize_with = "serialize_regex")]
    pub regex: regex::Regex,
    pub min: f64,
}

fn serialize_regex<S: serde::Serializer>(r: &regex::Regex, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(r.as_str())
}

impl MetricSpec {
    /// The last match's first capture group in `output`, parsed as a number.
    pub fn read(&self, output: &str) -> Option<f64> {
        self.regex.captures_iter(output).last().and_then(|c| c.get(1)).and_then(|m| m.as_str().trim().parse().ok())
    }
}

/// The way out of a stage on a given track: where it leads and the edge (if any)
/// whose gates, rollback target and approval rule apply.
#[derive(Clone, Debug)]
pub struct Exit<'a> {
    pub to: EdgeTarget,
    pub edge: Option<&'a EdgeConfig>,
}

impl Config {
    /// The stage that follows `stage` on `track`, or `Done` after the last one.
    /// `None` if the track does not have the stage.
    pub fn next_after(&self, track: &TrackName, stage: &StageName) -> Option<EdgeTarget> {
        let stages = &self.tracks.get(track)?.stages;
        let i = stages.iter().position(|s| s == stage)?;
        Some(match stages.get(i + 1) {
            Some(next) => EdgeTarget::Stage(next.clone()),
            None => EdgeTarget::Done,
        })
    }

    /// The configured edge between two stages, if there is one.
    pub fn edge(&self, from: &StageName, to: &EdgeTarget) -> Option<&EdgeConfig> {
        self.edges.iter().find(|e| &e.from == from && &e.to == to)
    }

    /// The way out of `stage` on `track`.
    pub fn exit(&self, track: &TrackName, stage: &StageName) -> Option<Exit<'_>> {
        let to = self.next_after(track, stage)?;
        let edge = self.edge(stage, &to);
        Some(Exit { to, edge })
    }

    /// The first stage of a track.
    /// The stage of `track` that writes the code (role `developer`), where work
    /// that cannot land goes back to; `None` if the track has no such stage.
    pub fn development_stage(&self, track: &TrackName) -> Option<&StageName> {
        let stages = &self.tracks.get(track)?.stages;
        stages.iter().find(|s| self.stages.get(*s).is_some_and(|c| c.role.as_str() == "developer"))
    }

    pub fn first_stage(&self, track: &TrackName) -> Option<&StageName> {
        self.tracks.get(track)?.stages.first()
    }

    /// The budgets that apply to an item of `repo` on `track` (the repo's, then
    /// the track's), leaving out empty ones.
    pub fn budgets_for(&self, repo: &str, track: &TrackName) -> Vec<(String, Budget)> {
        let repo_budget = self.repo(repo).map(|r| (format!("repo {repo}"), r.budget));
        let track_budget = self.tracks.get(track).map(|t| (format!("track {track}"), t.budget));
        repo_budget.into_iter().chain(track_budget).filter(|(_, b)| !b.is_empty()).collect()
    }

    /// The agent that runs `stage`.
    pub fn agent_for(&self, stage: &StageName) -> Option<(&RoleName, &AgentConfig)> {
        let role = &self.stages.get(stage)?.role;
        self.agents.get(role).map(|a| (role, a))
    }

    /// How many jobs `stage` may use per item.
    pub fn max_attempts(&self, stage: &StageName) -> u32 {
        self.stages.get(stage).map_or(1, |s| s.max_attempts.get())
    }

    /// The repo with this name.
    pub fn repo(&self, name: &str) -> Option<&RepoConfig> {
        self.repos.iter().find(|r| r.name == name)
    }

    /// The folder relative paths in the config are resolved against: the config
    /// file's folder (empty, meaning the working directory, for a bare file name).
    pub fn base_dir(&self) -> &Path {
        self.source.parent().unwrap_or(Path::new(""))
    }

    /// `p` resolved against the config file's folder, so a config means the same
    /// thing whatever directory orch is started from. Absolute paths are kept; `.`
    /// components are dropped (`.` next to `conf/orch.toml` is `conf`), `..` is kept
    /// because only the file system knows what it crosses.
    pub fn resolve_path(&self, p: &Path) -> PathBuf {
        let joined: PathBuf =
            self.base_dir().join(p).components().filter(|c| *c != std::path::Component::CurDir).collect();
        if joined.as_os_str().is_empty() { PathBuf::from(".") } else { joined }
    }

    /// An agent's or gate's argv with a relative program path (one containing a
    /// `/`, like `./agents/developer.sh`) resolved against the config's folder,
    /// since the command runs in the item's worktree, not beside the config. Bare
    /// program names (`cargo`) are left for `PATH`, and the arguments are untouched.
    ///
    /// With a relative config path the result is relative to the working directory
    /// (and keeps a `/` so it is never looked up in `PATH`); whoever spawns it in
    /// another directory must load the config from an absolute path, or join its own
    /// working directory, which this crate cannot read.
    pub fn resolve_argv(&self, argv: &[String]) -> Vec<String> {
        let mut out = argv.to_vec();
        if let Some(program) = out.first_mut() {
            let path = Path::new(program.as_str());
            if program.contains('/') && path.is_relative() {
                let resolved = self.resolve_path(path).display().to_string();
                *program = if resolved.contains('/') { resolved } else { format!("./{resolved}") };
            }
        }
        out
    }

    /// The store URL with a relative SQLite path resolved against the config file's
    /// folder (`sqlite://.orch/orch.db` next to `/srv/orch.toml` becomes
    /// `sqlite:///srv/.orch/orch.db`). `sqlite::memory:`, absolute SQLite paths and
    /// `postgres://` URLs are returned unchanged.
    pub fn store_url_resolved(&self) -> String {
        let url = self.store.url.as_str();
        if url.starts_with("sqlite::memory:") {
            return url.to_owned();
        }
        let rest = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:"));
        match rest {
            Some(path) if !path.is_empty() && !Path::new(path).is_absolute() => {
                format!("sqlite://{}", self.resolve_path(Path::new(path)).display())
            }
            _ => url.to_owned(),
        }
    }

    /// `node.data_dir` resolved against the config file's folder.
    pub fn data_dir_resolved(&self) -> PathBuf {
        self.resolve_path(&self.node.data_dir)
    }
}
