//! The shape pass: walks the parsed TOML tree against the schema and produces raw,
//! position-tagged values, reporting unknown keys (with "did you mean"), wrong types
//! and missing required keys.
//!
//! We walk `toml`'s spanned `DeTable` by hand instead of deserializing with serde:
//! serde stops at the first type error and its messages name Rust types, while here
//! every problem in the file is reported at once, each at its own line and column,
//! in the config's own words. The raw values keep their [`Origin`] so the semantic
//! checks in `validate` can point back at the file.

use std::collections::BTreeMap;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::diag::{At, LineIndex, Origin, Sink};
use super::schema::{self, Kind, Scalar};
use crate::model::ItemKind;

/// A list of strings, each element with its own position.
pub(crate) type Strings = At<Vec<At<String>>>;

/// Everything the file says, typed but not yet checked for meaning.
#[derive(Debug, Default)]
pub(crate) struct RawConfig {
    /// `[server]`, `[store]`, `[node]` and `[reaper]` values, keyed by (section, key).
    pub(crate) scalars: BTreeMap<(&'static str, &'static str), At<Scalar>>,
    pub(crate) repos: Vec<RawRepo>,
    pub(crate) agents: Vec<RawAgent>,
    pub(crate) tracks: Vec<RawTrack>,
    pub(crate) stages: Vec<RawStage>,
    pub(crate) edges: Vec<RawEdge>,
    pub(crate) gates: Vec<RawGate>,
}

#[derive(Debug)]
pub(crate) struct RawRepo {
    /// Position in `[[repos]]`, for keys like `repos[1].key`.
    pub(crate) index: usize,
    pub(crate) name: At<String>,
    pub(crate) key: At<String>,
    pub(crate) path: Option<At<String>>,
    pub(crate) url: Option<At<String>>,
    pub(crate) author_name: Option<At<String>>,
    pub(crate) author_email: Option<At<String>>,
    pub(crate) forge: Option<At<String>>,
    pub(crate) main_branch: Option<At<String>>,
    pub(crate) tracks: Vec<(ItemKind, At<String>)>,
    pub(crate) budget: Option<RawBudget>,
    pub(crate) prompts: Option<At<String>>,
}

#[derive(Debug)]
pub(crate) struct RawAgent {
    pub(crate) name: At<String>,
    pub(crate) adapter: Option<At<String>>,
    pub(crate) command: Option<Strings>,
    pub(crate) timeout_s: Option<At<f64>>,
    pub(crate) verdict: Option<At<String>>,
    pub(crate) model: Option<At<String>>,
    pub(crate) max_turns: Option<At<i64>>,
    pub(crate) permission_mode: Option<At<String>>,
    pub(crate) allowed_tools: Option<Strings>,
    pub(crate) env: Option<At<StringMap>>,
    pub(crate) binary: Option<At<String>>,
    pub(crate) sandbox: Option<At<String>>,
    pub(crate) provider: Option<At<RawProvider>>,
    pub(crate) stall_s: Option<At<f64>>,
}

/// A table of strings (an agent's `env`), each key and value with its place.
pub(crate) type StringMap = Vec<(At<String>, At<String>)>;

/// An agent's `provider = { name, base_url, env_key }` (adapter `codex`).
#[derive(Clone, Debug, Default)]
pub(crate) struct RawProvider {
    pub(crate) name: Option<At<String>>,
    pub(crate) base_url: Option<At<String>>,
    pub(crate) env_key: Option<At<String>>,
}

#[derive(Debug)]
pub(crate) struct RawTrack {
    pub(crate) name: At<String>,
    pub(crate) stages: Strings,
    pub(crate) budget: Option<RawBudget>,
}

/// A `budget = { max_cost_usd, max_tokens, max_agent_s }` table.
#[derive(Clone, Debug)]
pub(crate) struct RawBudget {
    pub(crate) path: String,
    pub(crate) max_cost_usd: Option<At<f64>>,
    pub(crate) max_tokens: Option<At<i64>>,
    pub(crate) max_agent_s: Option<At<f64>>,
}

#[derive(Debug)]
pub(crate) struct RawStage {
    pub(crate) name: At<String>,
    pub(crate) role: Option<At<String>>,
    pub(crate) max_attempts: Option<At<i64>>,
}

#[derive(Debug)]
pub(crate) struct RawEdge {
    /// Position in `[[edges]]`, for keys like `edges[2].on_fail`.
    pub(crate) index: usize,
    pub(crate) from: At<String>,
    pub(crate) to: At<String>,
    pub(crate) gates: Option<Strings>,
    pub(crate) on_fail: Option<At<String>>,
    pub(crate) approval: Option<At<bool>>,
}

#[derive(Debug)]
pub(crate) struct RawGate {
    pub(crate) name: At<String>,
    pub(crate) command: Strings,
    pub(crate) timeout_s: Option<At<f64>>,
    pub(crate) metric: Option<RawMetric>,
    pub(crate) on: Option<At<String>>,
}

#[derive(Debug)]
pub(crate) struct RawMetric {
    pub(crate) regex: At<String>,
    pub(crate) min: At<f64>,
}

type Value<'i> = Spanned<DeValue<'i>>;

/// Reads the document; problems go to `sink`, and an entry missing a required key
/// is left out of the result (its error is already recorded).
pub(crate) fn read(doc: &DeTable<'_>, lines: &LineIndex<'_>, sink: &mut Sink) -> RawConfig {
    let mut r = Reader { lines, sink };
    let mut raw = RawConfig::default();
    r.known_keys("", doc, schema::TOP);
    for section in schema::SCALAR_SECTIONS {
        if let Some(table) = doc.get(*section).and_then(|v| r.table(section, v)) {
            r.scalar_section(section, table, &mut raw.scalars);
        }
    }
    if let Some(v) = doc.get("repos") {
        raw.repos = r.array_of_tables("repos", v, |r, i, key, v, t| r.repo(i, key, v, t));
    }
    if let Some(v) = doc.get("agents") {
        raw.agents = r.named_tables("agents", v, |r, name, key, t| r.agent(name, key, t));
    }
    if let Some(v) = doc.get("tracks") {
        raw.tracks = r.named_tables("tracks", v, |r, name, key, t| r.track(name, key, t));
    }
    if let Some(v) = doc.get("stages") {
        raw.stages = r.named_tables("stages", v, |r, name, key, t| r.stage(name, key, t));
    }
    if let Some(v) = doc.get("edges") {
        raw.edges = r.array_of_tables("edges", v, |r, i, key, v, t| r.edge(i, key, v, t));
    }
    if let Some(v) = doc.get("gates") {
        raw.gates = r.named_tables("gates", v, |r, name, key, t| r.gate(name, key, t));
    }
    raw
}

struct Reader<'a, 'l> {
    lines: &'a LineIndex<'l>,
    sink: &'a mut Sink,
}

/// `path.key`, quoting a key that would not read back as one bare TOML key.
fn join(path: &str, key: &str) -> String {
    let bare = !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    let key = if bare { key.to_owned() } else { format!("{key:?}") };
    if path.is_empty() { key } else { format!("{path}.{key}") }
}

/// How a value looks, for "found …" in type errors.
fn describe(v: &DeValue<'_>) -> String {
    match v {
        DeValue::String(s) => format!("string {s:?}"),
        DeValue::Integer(i) => format!("integer {i}"),
        DeValue::Float(f) => format!("float {f}"),
        DeValue::Boolean(b) => format!("boolean {b}"),
        DeValue::Datetime(d) => format!("datetime {d}"),
        DeValue::Array(_) => "an array".to_owned(),
        DeValue::Table(_) => "a table".to_owned(),
    }
}

impl Reader<'_, '_> {
    fn origin(&self, v: &Value<'_>) -> Origin {
        self.lines.span(v.span())
    }

    fn at<T>(&self, v: &Value<'_>, value: T) -> At<T> {
        At::new(value, self.origin(v))
    }

    fn wrong_type(&mut self, key: &str, v: &Value<'_>, expected: &str) {
        let origin = self.origin(v);
        self.sink.error(&origin, key, format!("expected {expected}, found {}", describe(v.get_ref())));
    }

    /// Reports every key of `table` not in `allowed`, with the closest allowed key
    /// and the full list.
    fn known_keys(&mut self, path: &str, table: &DeTable<'_>, allowed: &[&str]) {
        for key in table.keys() {
            let name: &str = key.get_ref();
            if allowed.contains(&name) {
                continue;
            }
            let hint = schema::did_you_mean(name, allowed.iter().copied());
            let expected = schema::list(allowed.iter().copied());
            let where_ = if path.is_empty() { "at the top level".to_owned() } else { format!("in `{path}`") };
            let origin = self.lines.span(key.span());
            self.sink.error(
                &origin,
                join(path, name),
                format!("unknown key `{name}` {where_}{hint}; expected one of: {expected}"),
            );
        }
    }

    /// Reports a required key that is absent, at the table that lacks it.
    fn missing(&mut self, path: &str, at: &Origin, key: &str, what: &str) {
        self.sink.error(at, join(path, key), format!("missing required key `{key}` ({what})"));
    }

    fn table<'v, 'i>(&mut self, key: &str, v: &'v Value<'i>) -> Option<&'v DeTable<'i>> {
        match v.get_ref() {
            DeValue::Table(t) => Some(t),
            _ => {
                self.wrong_type(key, v, "a table");
                None
            }
        }
    }

    fn string(&mut self, key: &str, v: &Value<'_>) -> Option<At<String>> {
        match v.get_ref() {
            DeValue::String(s) => Some(self.at(v, s.to_string())),
            _ => {
                self.wrong_type(key, v, "a string");
                None
            }
        }
    }

    fn seconds(&mut self, key: &str, v: &Value<'_>) -> Option<At<f64>> {
        self.number(key, v, Kind::Seconds.expected())
    }

    /// An integer or a float, as `f64`.
    fn number(&mut self, key: &str, v: &Value<'_>, expected: &str) -> Option<At<f64>> {
        let n = match v.get_ref() {
            DeValue::Integer(i) => i64::from_str_radix(i.as_str(), i.radix()).ok().map(|n| n as f64),
            DeValue::Float(f) => f.as_str().parse::<f64>().ok(),
            _ => None,
        };
        match n {
            Some(n) => Some(self.at(v, n)),
            None => {
                self.wrong_type(key, v, expected);
                None
            }
        }
    }

    fn count(&mut self, key: &str, v: &Value<'_>) -> Option<At<i64>> {
        match v.get_ref() {
            DeValue::Integer(i) => match i64::from_str_radix(i.as_str(), i.radix()) {
                Ok(n) => Some(self.at(v, n)),
                Err(_) => {
                    self.wrong_type(key, v, "an integer that fits in 64 bits");
                    None
                }
            },
            _ => {
                self.wrong_type(key, v, Kind::Count.expected());
                None
            }
        }
    }

    fn flag(&mut self, key: &str, v: &Value<'_>) -> Option<At<bool>> {
        match v.get_ref() {
            DeValue::Boolean(b) => Some(self.at(v, *b)),
            _ => {
                self.wrong_type(key, v, Kind::Flag.expected());
                None
            }
        }
    }

    /// An array of strings; every element that is not a string is reported.
    fn strings(&mut self, key: &str, v: &Value<'_>) -> Option<Strings> {
        let DeValue::Array(items) = v.get_ref() else {
            self.wrong_type(key, v, "an array of strings");
            return None;
        };
        let mut out = Vec::with_capacity(items.len());
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            match self.string(&format!("{key}[{i}]"), item) {
                Some(s) => out.push(s),
                None => ok = false,
            }
        }
        ok.then(|| self.at(v, out))
    }

    fn scalar_section(
        &mut self,
        section: &'static str,
        table: &DeTable<'_>,
        out: &mut BTreeMap<(&'static str, &'static str), At<Scalar>>,
    ) {
        self.known_keys(section, table, &schema::section_keys(section));
        for (key, v) in table.iter() {
            let Some(spec) = schema::scalar_key(section, key.get_ref()) else { continue };
            let path = spec.path();
            let value = match spec.kind {
                Kind::Text => self.string(&path, v).map(|a| At::new(Scalar::Text(a.value), a.origin)),
                Kind::Seconds => self.seconds(&path, v).map(|a| At::new(Scalar::Seconds(a.value), a.origin)),
                Kind::Count => self.count(&path, v).map(|a| At::new(Scalar::Count(a.value), a.origin)),
                Kind::Flag => self.flag(&path, v).map(|a| At::new(Scalar::Flag(a.value), a.origin)),
            };
            if let Some(value) = value {
                out.insert((spec.section, spec.key), value);
            }
        }
    }

    /// `[section.<name>]` tables: each entry must itself be a table.
    fn named_tables<T>(
        &mut self,
        section: &str,
        v: &Value<'_>,
        mut each: impl FnMut(&mut Self, At<String>, String, &DeTable<'_>) -> Option<T>,
    ) -> Vec<T> {
        let Some(table) = self.table(section, v) else { return Vec::new() };
        let mut out = Vec::new();
        for (name, v) in table.iter() {
            let key = join(section, name.get_ref());
            let Some(t) = self.table(&key, v) else { continue };
            let name = At::new(name.get_ref().to_string(), self.lines.span(name.span()));
            out.extend(each(self, name, key, t));
        }
        out
    }

    /// `[[section]]` entries, each a table, passed with its index.
    fn array_of_tables<T>(
        &mut self,
        section: &str,
        v: &Value<'_>,
        mut each: impl FnMut(&mut Self, usize, String, &Value<'_>, &DeTable<'_>) -> Option<T>,
    ) -> Vec<T> {
        let DeValue::Array(items) = v.get_ref() else {
            self.wrong_type(section, v, &format!("an array of tables (`[[{section}]]` entries)"));
            return Vec::new();
        };
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let key = format!("{section}[{i}]");
            let Some(t) = self.table(&key, item) else { continue };
            out.extend(each(self, i, key, item, t));
        }
        out
    }

    fn repo(&mut self, index: usize, path: String, v: &Value<'_>, t: &DeTable<'_>) -> Option<RawRepo> {
        self.known_keys(&path, t, schema::REPO);
        let at = self.origin(v);
        let name = self.required_string(&path, &at, t, "name", "a unique name for the repo, used by `--repo`");
        let key = self.required_string(&path, &at, t, "key", "the item key prefix, e.g. \"SHOP\" for SHOP-1");
        let repo_path = self.optional(t, "path", |r, v| r.string(&join(&path, "path"), v));
        let url = self.optional(t, "url", |r, v| r.string(&join(&path, "url"), v));
        if repo_path.is_none() && url.is_none() {
            self.missing(&path, &at, "path", "the repo's local clone relative to this file, or `url` for its remote");
        }
        let author_name = self.optional(t, "author_name", |r, v| r.string(&join(&path, "author_name"), v));
        let author_email = self.optional(t, "author_email", |r, v| r.string(&join(&path, "author_email"), v));
        let forge = self.optional(t, "forge", |r, v| r.string(&join(&path, "forge"), v));
        let main_branch = self.optional(t, "main_branch", |r, v| r.string(&join(&path, "main_branch"), v));
        let tracks = self.optional(t, "tracks", |r, v| r.repo_tracks(&join(&path, "tracks"), v)).unwrap_or_default();
        let budget = self.optional(t, "budget", |r, v| r.budget(&join(&path, "budget"), v));
        let prompts = self.optional(t, "prompts", |r, v| r.string(&join(&path, "prompts"), v));
        Some(RawRepo {
            budget,
            prompts,
            index,
            name: name?,
            key: key?,
            path: repo_path,
            url,
            author_name,
            author_email,
            forge,
            main_branch,
            tracks,
        })
    }

    /// A repo's `tracks = { bug = "quick", … }`: keys must be item kinds.
    fn repo_tracks(&mut self, path: &str, v: &Value<'_>) -> Option<Vec<(ItemKind, At<String>)>> {
        let table = self.table(path, v)?;
        let kinds: Vec<&str> = ItemKind::ALL.iter().map(|k| k.as_str()).collect();
        self.known_keys(path, table, &kinds);
        let mut out = Vec::new();
        for (kind, v) in table.iter() {
            let Ok(kind) = kind.get_ref().parse::<ItemKind>() else { continue };
            out.extend(self.string(&join(path, kind.as_str()), v).map(|track| (kind, track)));
        }
        Some(out)
    }

    fn agent(&mut self, name: At<String>, path: String, t: &DeTable<'_>) -> Option<RawAgent> {
        self.known_keys(&path, t, schema::AGENT);
        Some(RawAgent {
            adapter: self.optional(t, "adapter", |r, v| r.string(&join(&path, "adapter"), v)),
            command: self.optional(t, "command", |r, v| r.strings(&join(&path, "command"), v)),
            timeout_s: self.optional(t, "timeout_s", |r, v| r.seconds(&join(&path, "timeout_s"), v)),
            verdict: self.optional(t, "verdict", |r, v| r.string(&join(&path, "verdict"), v)),
            model: self.optional(t, "model", |r, v| r.string(&join(&path, "model"), v)),
            max_turns: self.optional(t, "max_turns", |r, v| r.count(&join(&path, "max_turns"), v)),
            permission_mode: self.optional(t, "permission_mode", |r, v| r.string(&join(&path, "permission_mode"), v)),
            allowed_tools: self.optional(t, "allowed_tools", |r, v| r.strings(&join(&path, "allowed_tools"), v)),
            env: self.optional(t, "env", |r, v| r.string_map(&join(&path, "env"), v)),
            binary: self.optional(t, "binary", |r, v| r.string(&join(&path, "binary"), v)),
            sandbox: self.optional(t, "sandbox", |r, v| r.string(&join(&path, "sandbox"), v)),
            provider: self.optional(t, "provider", |r, v| r.provider(&join(&path, "provider"), v)),
            stall_s: self.optional(t, "stall_s", |r, v| r.seconds(&join(&path, "stall_s"), v)),
            name,
        })
    }

    /// A table whose every value is a string (an agent's `env`).
    fn string_map(&mut self, path: &str, v: &Value<'_>) -> Option<At<StringMap>> {
        let t = self.table(path, v)?;
        let mut out = Vec::new();
        for (k, val) in t.iter() {
            let key = At::new(k.get_ref().to_string(), self.origin(val));
            if let Some(s) = self.string(&join(path, k.get_ref()), val) {
                out.push((key, s));
            }
        }
        Some(self.at(v, out))
    }

    fn budget(&mut self, path: &str, v: &Value<'_>) -> Option<RawBudget> {
        let t = self.table(path, v)?;
        self.known_keys(path, t, schema::BUDGET);
        Some(RawBudget {
            path: path.to_owned(),
            max_cost_usd: self.optional(t, "max_cost_usd", |r, v| {
                r.number(&join(path, "max_cost_usd"), v, "an amount in US dollars, e.g. 5 or 0.5")
            }),
            max_tokens: self.optional(t, "max_tokens", |r, v| r.count(&join(path, "max_tokens"), v)),
            max_agent_s: self.optional(t, "max_agent_s", |r, v| r.seconds(&join(path, "max_agent_s"), v)),
        })
    }

    fn provider(&mut self, path: &str, v: &Value<'_>) -> Option<At<RawProvider>> {
        let t = self.table(path, v)?;
        self.known_keys(path, t, schema::PROVIDER);
        let p = RawProvider {
            name: self.optional(t, "name", |r, v| r.string(&join(path, "name"), v)),
            base_url: self.optional(t, "base_url", |r, v| r.string(&join(path, "base_url"), v)),
            env_key: self.optional(t, "env_key", |r, v| r.string(&join(path, "env_key"), v)),
        };
        Some(self.at(v, p))
    }

    fn track(&mut self, name: At<String>, path: String, t: &DeTable<'_>) -> Option<RawTrack> {
        self.known_keys(&path, t, schema::TRACK);
        let stages = match t.get("stages") {
            Some(v) => self.strings(&join(&path, "stages"), v)?,
            None => {
                self.missing(&path, &name.origin, "stages", "the track's stages in order, e.g. [\"development\"]");
                return None;
            }
        };
        let budget = self.optional(t, "budget", |r, v| r.budget(&join(&path, "budget"), v));
        Some(RawTrack { name, stages, budget })
    }

    fn stage(&mut self, name: At<String>, path: String, t: &DeTable<'_>) -> Option<RawStage> {
        self.known_keys(&path, t, schema::STAGE);
        Some(RawStage {
            role: self.optional(t, "role", |r, v| r.string(&join(&path, "role"), v)),
            max_attempts: self.optional(t, "max_attempts", |r, v| r.count(&join(&path, "max_attempts"), v)),
            name,
        })
    }

    fn edge(&mut self, index: usize, path: String, v: &Value<'_>, t: &DeTable<'_>) -> Option<RawEdge> {
        self.known_keys(&path, t, schema::EDGE);
        let at = self.origin(v);
        let from = self.required_string(&path, &at, t, "from", "the stage the edge leaves");
        let to = self.required_string(&path, &at, t, "to", "the next stage, or \"done\" after a track's last stage");
        let gates = self.optional(t, "gates", |r, v| r.strings(&join(&path, "gates"), v));
        let on_fail = self.optional(t, "on_fail", |r, v| r.string(&join(&path, "on_fail"), v));
        let approval = self.optional(t, "approval", |r, v| r.flag(&join(&path, "approval"), v));
        Some(RawEdge { index, from: from?, to: to?, gates, on_fail, approval })
    }

    fn gate(&mut self, name: At<String>, path: String, t: &DeTable<'_>) -> Option<RawGate> {
        self.known_keys(&path, t, schema::GATE);
        let command = match t.get("command") {
            Some(v) => self.strings(&join(&path, "command"), v),
            None => {
                self.missing(&path, &name.origin, "command", "the gate's argv, e.g. [\"cargo\", \"test\"]");
                None
            }
        };
        let timeout_s = self.optional(t, "timeout_s", |r, v| r.seconds(&join(&path, "timeout_s"), v));
        let metric = self.optional(t, "metric", |r, v| r.metric(&join(&path, "metric"), v));
        let on = self.optional(t, "on", |r, v| r.string(&join(&path, "on"), v));
        Some(RawGate { name, command: command?, timeout_s, metric, on })
    }

    fn metric(&mut self, path: &str, v: &Value<'_>) -> Option<RawMetric> {
        let t = self.table(path, v)?;
        self.known_keys(path, t, schema::METRIC);
        let at = self.origin(v);
        let regex = self.required_string(path, &at, t, "regex", "a regex whose first capture group is the number");
        let min = match t.get("min") {
            Some(v) => self.number(&join(path, "min"), v, "a number (integer or float)"),
            None => {
                self.missing(path, &at, "min", "the lowest passing value, a number");
                None
            }
        };
        Some(RawMetric { regex: regex?, min: min? })
    }

    fn optional<T>(
        &mut self,
        t: &DeTable<'_>,
        key: &str,
        read: impl FnOnce(&mut Self, &Value<'_>) -> Option<T>,
    ) -> Option<T> {
        t.get(key).and_then(|v| read(self, v))
    }

    fn required_string(
        &mut self,
        path: &str,
        at: &Origin,
        t: &DeTable<'_>,
        key: &str,
        what: &str,
    ) -> Option<At<String>> {
        match t.get(key) {
            Some(v) => self.string(&join(path, key), v),
            None => {
                self.missing(path, at, key, what);
                None
            }
        }
    }
}
