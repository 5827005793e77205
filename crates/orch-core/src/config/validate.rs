//! The semantic pass: turns raw, position-tagged values into the validated
//! [`Config`], filling in defaults and checking every rule that the types alone do
//! not: positive timeouts, known adapters, repo keys, references between sections
//! (in `graph`), and the time-budget invariant (DESIGN §2 point 5).
//!
//! It keeps going after a problem, building a best-effort config from what is valid,
//! so one `orch check` run reports everything at once; the loader throws that config
//! away if anything was reported.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};

use super::budget::format_secs;
use super::defaults;
use super::diag::{At, Origin, Sink};
use super::graph::Graph;
use super::model::{
    AdapterKind, AgentConfig, CliAgent, Config, ForgeKind, GateConfig, GateTree, Isolation, MetricSpec, NodeConfig,
    ProviderConfig, ReaperConfig, RepoConfig, ServerConfig, StoreConfig, VerdictSource,
};
use super::raw::{RawAgent, RawConfig, RawGate, RawRepo};
use super::schema::{self, Scalar};
use crate::key::KeyPrefix;
use crate::names::{GateName, RoleName, TrackName};

/// Builds the config from `raw`, reporting every problem to `sink`.
pub(crate) fn validate(source: &Path, raw: &RawConfig, sink: &mut Sink) -> Config {
    let mut v = Validator { raw, sink };
    let server = v.server();
    let store = v.store();
    let node = v.node();
    let (reaper, max_running_origin) = v.reaper();
    let agents = v.agents();
    let gates = v.gates();
    let graph = Graph::build(raw, &agents, &gates, v.sink);
    let repos = v.repos(&graph.tracks);
    let config = Config {
        source: source.to_owned(),
        server,
        store,
        node,
        reaper,
        repos,
        agents,
        tracks: graph.tracks,
        stages: graph.stages,
        edges: graph.edges,
        gates,
    };
    check_budget(&config, &max_running_origin, v.sink);
    config
}

struct Validator<'a> {
    raw: &'a RawConfig,
    sink: &'a mut Sink,
}

/// Whether `s` is a usable number of seconds: finite and above zero.
/// A repo's or track's budget, every limit checked to be positive.
pub(crate) fn budget(b: &super::raw::RawBudget, sink: &mut Sink) -> super::model::Budget {
    let mut positive = |v: &Option<At<f64>>, key: &str, what: &str| {
        v.as_ref().and_then(|n| {
            if is_positive(n.value) {
                Some(n.value)
            } else {
                sink.error(
                    &n.origin,
                    format!("{}.{key}", b.path),
                    format!("expected {what} greater than 0, got {}", n.value),
                );
                None
            }
        })
    };
    let max_cost_usd = positive(&b.max_cost_usd, "max_cost_usd", "an amount in US dollars");
    let max_agent_s = positive(&b.max_agent_s, "max_agent_s", "a number of seconds");
    let max_tokens = b.max_tokens.as_ref().and_then(|n| match u64::try_from(n.value) {
        Ok(t) if t > 0 => Some(t),
        _ => {
            let msg = format!("expected a number of tokens greater than 0, got {}", n.value);
            sink.error(&n.origin, format!("{}.max_tokens", b.path), msg);
            None
        }
    });
    super::model::Budget { max_cost_usd, max_tokens, max_agent_s }
}

fn is_positive(s: f64) -> bool {
    s.is_finite() && s > 0.0
}

impl Validator<'_> {
    /// A scalar from the file or environment, else its default.
    fn scalar(&self, section: &'static str, key: &'static str) -> At<Scalar> {
        match self.raw.scalars.get(&(section, key)) {
            Some(v) => v.clone(),
            None => At::default(defaults::scalar(section, key).unwrap_or(Scalar::Text(String::new()))),
        }
    }

    fn text(&self, section: &'static str, key: &'static str) -> At<String> {
        let a = self.scalar(section, key);
        match a.value {
            Scalar::Text(s) => At::new(s, a.origin),
            _ => At::new(String::new(), a.origin),
        }
    }

    fn seconds(&mut self, section: &'static str, key: &'static str) -> At<f64> {
        let a = self.scalar(section, key);
        let n = match a.value {
            Scalar::Seconds(s) => s,
            Scalar::Count(n) => n as f64,
            _ => 0.0,
        };
        if !is_positive(n) {
            let msg = format!("expected a number of seconds greater than 0, got {}", format_secs(n));
            self.sink.error(&a.origin, format!("{section}.{key}"), msg);
        }
        At::new(n, a.origin)
    }

    fn server(&mut self) -> ServerConfig {
        let listen = self.text("server", "listen");
        let ok =
            listen.value.rsplit_once(':').is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !ok {
            let msg = format!("expected HOST:PORT to listen on, e.g. \"127.0.0.1:7700\", got {:?}", listen.value);
            self.sink.error(&listen.origin, "server.listen", msg);
        }
        let auth_reads = matches!(self.scalar("server", "auth_reads").value, Scalar::Flag(true));
        ServerConfig { listen: listen.value, auth_reads }
    }

    fn store(&mut self) -> StoreConfig {
        let url = self.text("store", "url");
        let ok = url.value.starts_with("sqlite:") && url.value.len() > "sqlite:".len()
            || url.value.starts_with("postgres://")
            || url.value.starts_with("postgresql://");
        if !ok {
            let msg = format!(
                "expected a store URL: sqlite://PATH (relative to this file), sqlite::memory: or postgres://USER@HOST/DB, got {:?}",
                url.value
            );
            self.sink.error(&url.origin, "store.url", msg);
        }
        StoreConfig { url: url.value }
    }

    fn node(&mut self) -> NodeConfig {
        let id = self.text("node", "id");
        let jobs = self.scalar("node", "max_concurrent_jobs");
        let n = match jobs.value {
            Scalar::Count(n) => n,
            _ => 0,
        };
        let max_concurrent_jobs = u32::try_from(n).ok().and_then(NonZeroU32::new).unwrap_or_else(|| {
            let msg = format!("expected a positive integer (at least 1, at most {}), got {n}", u32::MAX);
            self.sink.error(&jobs.origin, "node.max_concurrent_jobs", msg);
            NonZeroU32::MIN
        });
        let data_dir = self.text("node", "data_dir");
        if data_dir.value.is_empty() {
            let msg = "expected a folder for worktrees, logs and verdicts (e.g. \".orch\"), got an empty string";
            self.sink.error(&data_dir.origin, "node.data_dir", msg);
        }
        let isolation_at = self.text("node", "isolation");
        let isolation = Isolation::parse(&isolation_at.value).unwrap_or_else(|| {
            let msg = unknown_value("isolation", &isolation_at.value, Isolation::NAMES);
            self.sink.error(&isolation_at.origin, "node.isolation", msg);
            Isolation::Auto
        });
        NodeConfig { id: id.value, max_concurrent_jobs, data_dir: PathBuf::from(data_dir.value), isolation }
    }

    /// The reaper settings, and where `max_running_s` came from (budget errors point there).
    fn reaper(&mut self) -> (ReaperConfig, Origin) {
        let interval = self.seconds("reaper", "interval_s");
        let grace = self.seconds("reaper", "finalize_grace_s");
        let max_running = self.seconds("reaper", "max_running_s");
        let liveness = self.scalar("reaper", "finalizer_liveness_enabled");
        let lease_ttl = self.seconds("reaper", "lease_ttl_s");
        let heartbeat = self.seconds("reaper", "heartbeat_s");
        if is_positive(lease_ttl.value) && is_positive(heartbeat.value) && heartbeat.value >= lease_ttl.value / 2.0 {
            let msg = format!(
                "heartbeat_s ({}) must be less than half of lease_ttl_s ({} / 2 = {}), so a live owner renews \
                 its lease at least twice before it expires; expected heartbeat_s < {}",
                format_secs(heartbeat.value),
                format_secs(lease_ttl.value),
                format_secs(lease_ttl.value / 2.0),
                format_secs(lease_ttl.value / 2.0),
            );
            self.sink.error(&heartbeat.origin, "reaper.heartbeat_s", msg);
        }
        let reaper = ReaperConfig {
            interval_s: interval.value,
            finalize_grace_s: grace.value,
            max_running_s: max_running.value,
            finalizer_liveness_enabled: matches!(liveness.value, Scalar::Flag(true)),
            lease_ttl_s: lease_ttl.value,
            heartbeat_s: heartbeat.value,
        };
        (reaper, max_running.origin)
    }

    fn agents(&mut self) -> BTreeMap<RoleName, AgentConfig> {
        let raw = self.raw;
        raw.agents.iter().map(|a| (RoleName::new(a.name.value.clone()), self.agent(a))).collect()
    }

    fn agent(&mut self, a: &RawAgent) -> AgentConfig {
        let path = format!("agents.{}", a.name.value);
        let adapter = match &a.adapter {
            None => AdapterKind::Command,
            Some(s) => parse_adapter(&s.value).unwrap_or_else(|| {
                let msg = unknown_value("adapter", &s.value, ADAPTERS);
                self.sink.error(&s.origin, format!("{path}.adapter"), msg);
                AdapterKind::Command
            }),
        };
        let verdict = match &a.verdict {
            None => VerdictSource::File,
            Some(s) => match s.value.as_str() {
                "file" => VerdictSource::File,
                "exit-code" => VerdictSource::ExitCode,
                "result" => VerdictSource::Result,
                other => {
                    self.sink.error(&s.origin, format!("{path}.verdict"), unknown_value("verdict", other, VERDICTS));
                    VerdictSource::File
                }
            },
        };
        if verdict == VerdictSource::ExitCode && !matches!(adapter, AdapterKind::Command | AdapterKind::Script) {
            let at = a.verdict.as_ref().map_or(&a.name.origin, |v| &v.origin);
            let msg = "verdict = \"exit-code\" needs a process whose exit status is the verdict; \
                       expected adapter `command` or `script`, or verdict = \"file\"";
            self.sink.error(at, format!("{path}.verdict"), msg);
        }
        if verdict == VerdictSource::Result && !is_cli(adapter) {
            let at = a.verdict.as_ref().map_or(&a.name.origin, |v| &v.origin);
            let msg = "verdict = \"result\" needs an agent that reports a final result; \
                       expected adapter `claude-code` or `codex`, or verdict = \"file\"";
            self.sink.error(at, format!("{path}.verdict"), msg);
        }
        let cli = self.cli_agent(a, adapter, &path);
        let command: Vec<String> = a.command.iter().flat_map(|c| c.value.iter().map(|s| s.value.clone())).collect();
        let timeout_s = if adapter == AdapterKind::None {
            0.0
        } else {
            if !is_cli(adapter) && command.first().is_none_or(String::is_empty) {
                let at = a.command.as_ref().map_or(&a.name.origin, |c| &c.origin);
                let msg = format!(
                    "adapter `{}` runs a process, so `command` must be a non-empty argv whose first element \
                     is the program, e.g. [\"./agents/{}.sh\"]; use adapter = \"none\" for a stage of gates only",
                    adapter_name(adapter),
                    a.name.value
                );
                self.sink.error(at, format!("{path}.command"), msg);
            }
            let t = a.timeout_s.clone().unwrap_or_else(|| At::default(defaults::AGENT_TIMEOUT_S));
            self.positive(&t, &format!("{path}.timeout_s"));
            t.value
        };
        AgentConfig { adapter, command, timeout_s, verdict, cli }
    }

    /// The keys that drive a coding agent's CLI: each is checked against the
    /// adapter it belongs to, so a `sandbox` on Claude Code or a `max_turns` on
    /// Codex is an error at its line rather than silently ignored.
    fn cli_agent(&mut self, a: &RawAgent, adapter: AdapterKind, path: &str) -> CliAgent {
        let claude = adapter == AdapterKind::ClaudeCode;
        let codex = adapter == AdapterKind::Codex;
        let mut only = |ok: bool, origin: Option<&Origin>, key: &str, adapters: &str| {
            if let (false, Some(origin)) = (ok, origin) {
                let msg = format!("key `{key}` applies to adapter {adapters}, not `{}`", adapter_name(adapter));
                self.sink.error(origin, format!("{path}.{key}"), msg);
            }
        };
        let cli = is_cli(adapter);
        only(cli, a.model.as_ref().map(|v| &v.origin), "model", "`claude-code` or `codex`");
        only(claude, a.max_turns.as_ref().map(|v| &v.origin), "max_turns", "`claude-code`");
        only(claude, a.permission_mode.as_ref().map(|v| &v.origin), "permission_mode", "`claude-code`");
        only(claude, a.allowed_tools.as_ref().map(|v| &v.origin), "allowed_tools", "`claude-code`");
        only(cli, a.env.as_ref().map(|v| &v.origin), "env", "`claude-code` or `codex`");
        only(cli, a.binary.as_ref().map(|v| &v.origin), "binary", "`claude-code` or `codex`");
        only(codex, a.sandbox.as_ref().map(|v| &v.origin), "sandbox", "`codex`");
        only(codex, a.provider.as_ref().map(|v| &v.origin), "provider", "`codex`");
        only(cli, a.stall_s.as_ref().map(|v| &v.origin), "stall_s", "`claude-code` or `codex`");
        if cli && a.command.is_some() {
            let at = a.command.as_ref().map_or(&a.name.origin, |c| &c.origin);
            let msg = format!(
                "adapter `{}` builds its own command line; use `binary` to name the program instead of `command`",
                adapter_name(adapter)
            );
            self.sink.error(at, format!("{path}.command"), msg);
        }
        let max_turns = a.max_turns.as_ref().and_then(|t| match u32::try_from(t.value) {
            Ok(n) if n > 0 => Some(n),
            _ => {
                let msg = format!("expected a positive number of turns, got {}", t.value);
                self.sink.error(&t.origin, format!("{path}.max_turns"), msg);
                None
            }
        });
        let permission_mode = a.permission_mode.as_ref().map(|m| {
            if !PERMISSION_MODES.contains(&m.value.as_str()) {
                let msg = unknown_value("permission_mode", &m.value, PERMISSION_MODES);
                self.sink.error(&m.origin, format!("{path}.permission_mode"), msg);
            }
            m.value.clone()
        });
        let sandbox = a.sandbox.as_ref().map(|m| {
            if !SANDBOXES.contains(&m.value.as_str()) {
                self.sink.error(&m.origin, format!("{path}.sandbox"), unknown_value("sandbox", &m.value, SANDBOXES));
            }
            m.value.clone()
        });
        let mut env = BTreeMap::new();
        for (k, v) in a.env.iter().flat_map(|e| e.value.iter()) {
            let valid = !k.value.is_empty()
                && !k.value.starts_with(|c: char| c.is_ascii_digit())
                && k.value.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                let msg = format!("expected an environment variable name (letters, digits, _), got {:?}", k.value);
                self.sink.error(&k.origin, format!("{path}.env"), msg);
            } else if k.value.starts_with("ORCH_") {
                let msg = format!("{} is set by orch for every agent (DESIGN §6) and cannot be overridden", k.value);
                self.sink.error(&k.origin, format!("{path}.env.{}", k.value), msg);
            }
            env.insert(k.value.clone(), v.value.clone());
        }
        let provider = a.provider.as_ref().and_then(|p| {
            let key = format!("{path}.provider");
            let mut need = |v: &Option<At<String>>, name: &str, what: &str| match v {
                Some(s) if !s.value.trim().is_empty() => Some(s.value.clone()),
                Some(s) => {
                    self.sink.error(
                        &s.origin,
                        format!("{key}.{name}"),
                        format!("expected {what}, got an empty string"),
                    );
                    None
                }
                None => {
                    self.sink.error(
                        &p.origin,
                        format!("{key}.{name}"),
                        format!("missing required key `{name}` ({what})"),
                    );
                    None
                }
            };
            let name = need(&p.value.name, "name", "a provider name, e.g. \"openai\"");
            let base_url =
                need(&p.value.base_url, "base_url", "the API's base URL, e.g. \"https://api.openai.com/v1\"");
            let env_key =
                need(&p.value.env_key, "env_key", "the variable holding the API key, e.g. \"OPENAI_API_KEY\"");
            if let Some(b) = &base_url
                && !(b.starts_with("http://") || b.starts_with("https://"))
                && let Some(at) = &p.value.base_url
            {
                let msg = format!("expected an http:// or https:// URL, got {b:?}");
                self.sink.error(&at.origin, format!("{key}.base_url"), msg);
            }
            Some(ProviderConfig { name: name?, base_url: base_url?, env_key: env_key? })
        });
        let stall_s = match &a.stall_s {
            Some(t) => {
                self.positive(t, &format!("{path}.stall_s"));
                t.value
            }
            None => defaults::AGENT_STALL_S,
        };
        CliAgent {
            model: a.model.as_ref().map(|m| m.value.clone()),
            max_turns,
            permission_mode,
            allowed_tools: a.allowed_tools.iter().flat_map(|t| t.value.iter().map(|s| s.value.clone())).collect(),
            env,
            binary: a.binary.as_ref().map(|b| b.value.clone()),
            sandbox,
            provider,
            stall_s,
        }
    }

    fn positive(&mut self, t: &At<f64>, key: &str) {
        if !is_positive(t.value) {
            let msg = format!("expected a number of seconds greater than 0, got {}", format_secs(t.value));
            self.sink.error(&t.origin, key, msg);
        }
    }

    fn gates(&mut self) -> BTreeMap<GateName, GateConfig> {
        let raw = self.raw;
        raw.gates.iter().map(|g| (GateName::new(g.name.value.clone()), self.gate(g))).collect()
    }

    fn gate(&mut self, g: &RawGate) -> GateConfig {
        let path = format!("gates.{}", g.name.value);
        let command: Vec<String> = g.command.value.iter().map(|s| s.value.clone()).collect();
        if command.first().is_none_or(String::is_empty) {
            let msg = "expected a non-empty argv whose first element is the program, e.g. [\"cargo\", \"test\"]";
            self.sink.error(&g.command.origin, format!("{path}.command"), msg);
        }
        let timeout = g.timeout_s.clone().unwrap_or_else(|| At::default(defaults::GATE_TIMEOUT_S));
        self.positive(&timeout, &format!("{path}.timeout_s"));
        let metric = g.metric.as_ref().and_then(|m| {
            if !m.min.value.is_finite() {
                let msg = format!("expected a finite number, got {}", m.min.value);
                self.sink.error(&m.min.origin, format!("{path}.metric.min"), msg);
            }
            let example = "e.g. 'coverage: ([0-9.]+)%'";
            match regex::Regex::new(&m.regex.value) {
                Ok(re) if re.captures_len() >= 2 => Some(MetricSpec { regex: re, min: m.min.value }),
                Ok(_) => {
                    let msg = format!(
                        "regex {:?} has no capture group; expected a regex whose first group captures the number, {example}",
                        m.regex.value
                    );
                    self.sink.error(&m.regex.origin, format!("{path}.metric.regex"), msg);
                    None
                }
                Err(e) => {
                    let msg = format!(
                        "invalid regex {:?}: {}; expected a regex whose first group captures the number, {example}",
                        m.regex.value,
                        regex_problem(&e)
                    );
                    self.sink.error(&m.regex.origin, format!("{path}.metric.regex"), msg);
                    None
                }
            }
        });
        let on = match &g.on {
            None => GateTree::Branch,
            Some(o) => match o.value.as_str() {
                "branch" => GateTree::Branch,
                "merge-preview" => GateTree::MergePreview,
                other => {
                    let msg = unknown_value("gate tree", other, &["branch", "merge-preview"]);
                    self.sink.error(&o.origin, format!("{path}.on"), msg);
                    GateTree::Branch
                }
            },
        };
        GateConfig { command, timeout_s: timeout.value, metric, on }
    }

    fn repos(&mut self, tracks: &BTreeMap<TrackName, super::model::TrackConfig>) -> Vec<RepoConfig> {
        let mut names: BTreeMap<&str, &RawRepo> = BTreeMap::new();
        let mut keys: BTreeMap<&str, &RawRepo> = BTreeMap::new();
        let mut out = Vec::new();
        let raw = self.raw;
        for r in &raw.repos {
            let path = format!("repos[{}]", r.index);
            if r.name.value.is_empty() {
                self.sink.error(&r.name.origin, format!("{path}.name"), "expected a non-empty repo name");
            } else if let Some(first) = names.get(r.name.value.as_str()) {
                let msg = format!(
                    "duplicate repo name `{}`; repos[{}]{} already uses it, and names must be unique (they select the repo in `--repo`)",
                    r.name.value,
                    first.index,
                    at_line(&first.name.origin)
                );
                self.sink.error(&r.name.origin, format!("{path}.name"), msg);
            } else {
                names.insert(&r.name.value, r);
            }
            let key = match KeyPrefix::new(&r.key.value) {
                Ok(k) => {
                    if let Some(first) = keys.get(r.key.value.as_str()) {
                        let msg = format!(
                            "duplicate key prefix `{}`; repos[{}]{} already uses it, and item keys must name one repo",
                            r.key.value,
                            first.index,
                            at_line(&first.key.origin)
                        );
                        self.sink.error(&r.key.origin, format!("{path}.key"), msg);
                    } else {
                        keys.insert(&r.key.value, r);
                    }
                    Some(k)
                }
                Err(e) => {
                    self.sink.error(&r.key.origin, format!("{path}.key"), format!("{e}, e.g. \"SHOP\""));
                    None
                }
            };
            if let Some(p) = &r.path
                && p.value.is_empty()
            {
                let msg = "expected the path of the repo's local clone (relative to this file), got an empty string";
                self.sink.error(&p.origin, format!("{path}.path"), msg);
            }
            if let Some(u) = &r.url
                && u.value.is_empty()
            {
                let msg = "expected the URL (or path) of the repo's remote, got an empty string";
                self.sink.error(&u.origin, format!("{path}.url"), msg);
            }
            let forge = match &r.forge {
                None => ForgeKind::Local,
                Some(f) => match f.value.as_str() {
                    "local" => ForgeKind::Local,
                    "gitea" => ForgeKind::Gitea,
                    "github" => ForgeKind::Github,
                    other => {
                        self.sink.error(&f.origin, format!("{path}.forge"), unknown_value("forge", other, FORGES));
                        ForgeKind::Local
                    }
                },
            };
            let main_branch = r.main_branch.clone().unwrap_or_else(|| At::default(defaults::MAIN_BRANCH.to_owned()));
            if main_branch.value.is_empty() {
                self.sink.error(
                    &main_branch.origin,
                    format!("{path}.main_branch"),
                    "expected a branch name, e.g. \"main\"",
                );
            }
            let mut kinds: BTreeMap<_, _> =
                defaults::REPO_TRACKS.iter().map(|(k, t)| (*k, At::default((*t).to_owned()))).collect();
            kinds.extend(r.tracks.iter().map(|(k, t)| (*k, t.clone())));
            for (kind, track) in &kinds {
                if !tracks.contains_key(track.value.as_str()) {
                    let known = tracks.keys().map(TrackName::as_str);
                    let msg = format!(
                        "unknown track `{}` for {kind} items{}; expected one of: {}",
                        track.value,
                        schema::did_you_mean(&track.value, tracks.keys().map(TrackName::as_str)),
                        schema::list(known)
                    );
                    self.sink.error(&track.origin, format!("{path}.tracks.{kind}"), msg);
                }
            }
            if let Some(key) = key {
                out.push(RepoConfig {
                    name: r.name.value.clone(),
                    key,
                    path: r.path.as_ref().map(|p| PathBuf::from(&p.value)).unwrap_or_default(),
                    url: r.url.as_ref().map(|u| u.value.clone()),
                    author_name: r
                        .author_name
                        .as_ref()
                        .map_or_else(|| defaults::AUTHOR_NAME.to_owned(), |a| a.value.clone()),
                    author_email: r
                        .author_email
                        .as_ref()
                        .map_or_else(|| defaults::AUTHOR_EMAIL.to_owned(), |a| a.value.clone()),
                    forge,
                    main_branch: main_branch.value,
                    tracks: kinds.into_iter().map(|(k, t)| (k, TrackName::new(t.value))).collect(),
                    budget: r.budget.as_ref().map(|b| budget(b, self.sink)).unwrap_or_default(),
                    prompts: r.prompts.as_ref().map(|p| PathBuf::from(&p.value)),
                });
            }
        }
        out
    }
}

const ADAPTERS: &[&str] = &["command", "claude-code", "codex", "script", "none"];
const VERDICTS: &[&str] = &["file", "exit-code", "result"];
const PERMISSION_MODES: &[&str] = &["acceptEdits", "auto", "bypassPermissions", "dontAsk", "manual", "plan"];
const SANDBOXES: &[&str] = &["read-only", "workspace-write", "danger-full-access"];

/// Whether the adapter drives a coding agent's CLI (its command line is built
/// by orch, its stream parsed).
fn is_cli(a: AdapterKind) -> bool {
    matches!(a, AdapterKind::ClaudeCode | AdapterKind::Codex)
}
const FORGES: &[&str] = &["local", "gitea", "github"];

fn parse_adapter(s: &str) -> Option<AdapterKind> {
    Some(match s {
        "command" => AdapterKind::Command,
        "claude-code" => AdapterKind::ClaudeCode,
        "codex" => AdapterKind::Codex,
        "script" => AdapterKind::Script,
        "none" => AdapterKind::None,
        _ => return None,
    })
}

fn adapter_name(a: AdapterKind) -> &'static str {
    match a {
        AdapterKind::Command => "command",
        AdapterKind::ClaudeCode => "claude-code",
        AdapterKind::Codex => "codex",
        AdapterKind::Script => "script",
        AdapterKind::None => "none",
    }
}

/// "unknown adapter `shell`; expected one of: `command`, …" with a did-you-mean.
fn unknown_value(what: &str, got: &str, allowed: &[&str]) -> String {
    format!(
        "unknown {what} `{got}`{}; expected one of: {}",
        schema::did_you_mean(got, allowed.iter().copied()),
        schema::list(allowed.iter().copied())
    )
}

/// "track `a`" or "tracks `a`, `b`".
pub(crate) fn tracks_phrase(names: &[impl AsRef<str>]) -> String {
    let list: Vec<String> = names.iter().map(|n| format!("`{}`", n.as_ref())).collect();
    let noun = if list.len() == 1 { "track" } else { "tracks" };
    format!("{noun} {}", list.join(", "))
}

/// " (line 4)" for a file position, else nothing.
pub(crate) fn at_line(origin: &Origin) -> String {
    match origin {
        Origin::File { line, .. } => format!(" (line {line})"),
        Origin::Env(var) => format!(" (from {var})"),
        Origin::Default => String::new(),
    }
}

/// The one-line cause of a regex error; the crate's own message draws a caret
/// diagram over several lines, which does not fit a one-line diagnostic.
fn regex_problem(e: &regex::Error) -> String {
    let text = e.to_string();
    text.lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix("error: "))
        .map_or_else(|| text.lines().last().unwrap_or_default().trim().to_owned(), str::to_owned)
}

/// Reports every (stage, exit edge) whose worst case does not fit under
/// `max_running_s`: once per pair, naming every track it occurs on, since the
/// numbers depend only on the stage and the edge.
fn check_budget(config: &Config, max_running_origin: &Origin, sink: &mut Sink) {
    let mut over: Vec<(super::budget::StageBudget, Vec<String>)> = Vec::new();
    for b in config.budget().into_iter().filter(|b| !b.holds) {
        match over.iter_mut().find(|(seen, _)| seen.stage == b.stage && seen.to == b.to) {
            Some((_, tracks)) => tracks.push(b.track.to_string()),
            None => {
                let track = b.track.to_string();
                over.push((b, vec![track]));
            }
        }
    }
    for (b, tracks) in over {
        let gates = if b.gates.is_empty() {
            "none".to_owned()
        } else {
            b.gates.iter().map(|g| format!("{} {}", g.name, format_secs(g.timeout_s))).collect::<Vec<_>>().join(" + ")
        };
        let msg = format!(
            "time budget of stage `{}` (on {}) exceeds max_running_s: {} (agent `{}` timeout_s) + {} (gates on \
             edge `{}`: {gates}) + {} (finalize_grace_s) = {} s, which is not below max_running_s = {} s, so the \
             Tier-3 backstop would kill a healthy job; expected max_running_s > {} or smaller timeouts",
            b.stage,
            tracks_phrase(&tracks),
            format_secs(b.agent_timeout_s),
            b.role,
            format_secs(b.gates_s),
            b.edge_label(),
            format_secs(b.finalize_grace_s),
            format_secs(b.total_s),
            format_secs(b.max_running_s),
            format_secs(b.total_s),
        );
        sink.error(max_running_origin, "reaper.max_running_s", msg);
    }
}
