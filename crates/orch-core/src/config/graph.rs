//! Semantic checks of the pipeline graph: tracks (merged over the built-in ones),
//! stages (user tables plus the built-in stages the tracks use), which agent runs
//! each stage, and edges (their gates, the track pairs they apply to, and where a
//! failure rolls back to).
//!
//! These are the rules that keep the engine from ever meeting a stage without an
//! agent, an edge that never applies, or a rollback that jumps forward.

use std::collections::BTreeMap;
use std::num::NonZeroU32;

use super::defaults;
use super::diag::{At, Origin, Sink};
use super::model::{AgentConfig, EdgeConfig, EdgeTarget, GateConfig, StageConfig, TrackConfig};
use super::raw::RawConfig;
use super::schema;
use super::validate::{at_line, tracks_phrase};
use crate::names::{GateName, RoleName, StageName, TrackName};

/// The validated graph parts of a config.
pub(crate) struct Graph {
    pub(crate) tracks: BTreeMap<TrackName, TrackConfig>,
    pub(crate) stages: BTreeMap<StageName, StageConfig>,
    pub(crate) edges: Vec<EdgeConfig>,
}

/// A stage with the places its problems should point at.
struct StageEntry {
    config: StageConfig,
    /// Where the role was set; for a built-in stage without a table, where a
    /// track first lists it.
    role_at: Origin,
}

/// A track as merged from the file and the built-in defaults.
struct TrackEntry {
    name: At<String>,
    stages: At<Vec<At<String>>>,
}

impl TrackEntry {
    fn names(&self) -> impl Iterator<Item = &str> {
        self.stages.value.iter().map(|s| s.value.as_str())
    }

    fn position(&self, stage: &str) -> Option<usize> {
        self.names().position(|s| s == stage)
    }

    /// What follows `stage` in this track: the next stage, or `done` after the last.
    fn next_after(&self, stage: &str) -> Option<&str> {
        let i = self.position(stage)?;
        Some(self.stages.value.get(i + 1).map_or(defaults::DONE, |s| s.value.as_str()))
    }

    /// `a -> b -> c`, for messages.
    fn describe(&self) -> String {
        self.names().collect::<Vec<_>>().join(" -> ")
    }
}

impl Graph {
    pub(crate) fn build(
        raw: &RawConfig,
        agents: &BTreeMap<RoleName, AgentConfig>,
        gates: &BTreeMap<GateName, GateConfig>,
        sink: &mut Sink,
    ) -> Graph {
        let mut stages = user_stages(raw, sink);
        let tracks = merged_tracks(raw);
        check_tracks(&tracks, &mut stages, sink);
        check_agents(&stages, &tracks, agents, sink);
        let edges = edges(raw, &tracks, gates, sink);
        Graph {
            tracks: tracks
                .iter()
                .map(|t| {
                    let stages = t.names().map(StageName::new).collect();
                    let budget = raw
                        .tracks
                        .iter()
                        .find(|r| r.name.value == t.name.value)
                        .and_then(|r| r.budget.as_ref())
                        .map(|b| super::validate::budget(b, sink))
                        .unwrap_or_default();
                    (TrackName::new(t.name.value.clone()), TrackConfig { stages, budget })
                })
                .collect(),
            stages: stages.into_iter().map(|(name, s)| (StageName::new(name), s.config)).collect(),
            edges,
        }
    }
}

fn user_stages(raw: &RawConfig, sink: &mut Sink) -> BTreeMap<String, StageEntry> {
    let mut out = BTreeMap::new();
    for s in &raw.stages {
        let path = format!("stages.{}", s.name.value);
        if s.name.value == defaults::DONE {
            let msg =
                "`done` is reserved for the end of a track (an edge's `to = \"done\"`); expected another stage name";
            sink.error(&s.name.origin, path.clone(), msg);
        }
        let role = match (&s.role, defaults::stage_role(&s.name.value)) {
            (Some(role), _) => role.clone(),
            (None, Some(builtin)) => At::new(builtin.to_owned(), s.name.origin.clone()),
            (None, None) => {
                let builtin = schema::list(defaults::STAGES.iter().map(|(s, _)| *s));
                let msg = format!(
                    "missing required key `role` (the agent role that runs the stage, e.g. \"developer\"); \
                     only the built-in stages {builtin} have a default role"
                );
                sink.error(&s.name.origin, format!("{path}.role"), msg);
                At::new(String::new(), s.name.origin.clone())
            }
        };
        if s.role.as_ref().is_some_and(|r| r.value.is_empty()) {
            sink.error(
                &role.origin,
                format!("{path}.role"),
                "expected a role name such as \"developer\", got an empty string",
            );
        }
        let attempts = s.max_attempts.clone().unwrap_or_else(|| At::default(i64::from(defaults::MAX_ATTEMPTS)));
        let max_attempts = u32::try_from(attempts.value).ok().and_then(NonZeroU32::new).unwrap_or_else(|| {
            let msg = format!("expected a positive integer (at least 1, at most {}), got {}", u32::MAX, attempts.value);
            sink.error(&attempts.origin, format!("{path}.max_attempts"), msg);
            NonZeroU32::MIN
        });
        let config = StageConfig { role: RoleName::new(role.value), max_attempts };
        out.insert(s.name.value.clone(), StageEntry { config, role_at: role.origin });
    }
    out
}

/// The user's tracks, plus each built-in track the user did not redefine.
fn merged_tracks(raw: &RawConfig) -> Vec<TrackEntry> {
    let mut out: Vec<TrackEntry> =
        raw.tracks.iter().map(|t| TrackEntry { name: t.name.clone(), stages: t.stages.clone() }).collect();
    for (name, stages) in defaults::TRACKS {
        if !out.iter().any(|t| t.name.value == *name) {
            let stages = stages.iter().map(|s| At::default((*s).to_owned())).collect();
            out.push(TrackEntry { name: At::default((*name).to_owned()), stages: At::default(stages) });
        }
    }
    out.sort_by(|a, b| a.name.value.cmp(&b.name.value));
    out
}

/// Every track must be non-empty, list each stage once, and use only stages that
/// have a table or are built in; the built-in ones used are added to `stages`.
fn check_tracks(tracks: &[TrackEntry], stages: &mut BTreeMap<String, StageEntry>, sink: &mut Sink) {
    for t in tracks {
        let path = format!("tracks.{}.stages", t.name.value);
        if t.stages.value.is_empty() {
            let msg = format!("track `{}` has no stages; expected at least one stage name", t.name.value);
            sink.error(&t.stages.origin, path.clone(), msg);
        }
        for (i, s) in t.stages.value.iter().enumerate() {
            let key = format!("{path}[{i}]");
            if let Some(first) = t.stages.value[..i].iter().position(|p| p.value == s.value) {
                let msg = format!(
                    "stage `{}` is listed twice in track `{}` (first as stages[{first}]); a track visits each stage once",
                    s.value, t.name.value
                );
                sink.error(&s.origin, key, msg);
                continue;
            }
            if s.value == defaults::DONE {
                let msg = "`done` is reserved for the end of a track and is not a stage; remove it \
                           (an item is done after the track's last stage)";
                sink.error(&s.origin, key, msg);
                continue;
            }
            if stages.contains_key(&s.value) {
                continue;
            }
            if let Some(role) = defaults::stage_role(&s.value) {
                let config = StageConfig {
                    role: RoleName::new(role),
                    max_attempts: NonZeroU32::new(defaults::MAX_ATTEMPTS).unwrap_or(NonZeroU32::MIN),
                };
                stages.insert(s.value.clone(), StageEntry { config, role_at: s.origin.clone() });
                continue;
            }
            let known: Vec<&str> = stages
                .keys()
                .map(String::as_str)
                .chain(defaults::STAGES.iter().map(|(s, _)| *s))
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect();
            let msg = format!(
                "stage `{}` has no `[stages.{}]` table and is not a built-in stage{}; expected one of: {}, \
                 or add a `[stages.{}]` table with a `role`",
                s.value,
                s.value,
                schema::did_you_mean(&s.value, known.iter().copied()),
                schema::list(known.iter().copied()),
                s.value
            );
            sink.error(&s.origin, key, msg);
        }
    }
    if !tracks.iter().any(|t| t.name.value == defaults::FULL_CYCLE) {
        let msg = "the `full-cycle` track is missing; escalation moves items to it, so it must exist";
        sink.error(&Origin::Default, "tracks.full-cycle", msg);
    }
}

/// Every stage's role must have an `[agents.<role>]` table.
fn check_agents(
    stages: &BTreeMap<String, StageEntry>,
    tracks: &[TrackEntry],
    agents: &BTreeMap<RoleName, AgentConfig>,
    sink: &mut Sink,
) {
    for (name, s) in stages {
        let role = s.config.role.as_str();
        if role.is_empty() || agents.contains_key(role) {
            continue;
        }
        let users: Vec<&TrackEntry> = tracks.iter().filter(|t| t.position(name).is_some()).collect();
        let used_by = if users.is_empty() {
            "used by no track".to_owned()
        } else {
            let names: Vec<&str> = users.iter().map(|t| t.name.value.as_str()).collect();
            format!("used by {}", tracks_phrase(&names))
        };
        let builtin_only = !users.is_empty() && users.iter().all(|t| t.name.origin == Origin::Default);
        let hint =
            if builtin_only { " (the built-in tracks use it; redefine `[tracks.<name>]` to leave it out)" } else { "" };
        let msg = format!(
            "stage `{name}` ({used_by}) is run by role `{role}`, which has no `[agents.{role}]` table{}; \
             expected one of the defined agents: {}, or add `[agents.{role}]`{hint}",
            schema::did_you_mean(role, agents.keys().map(RoleName::as_str)),
            schema::list(agents.keys().map(RoleName::as_str)),
        );
        sink.error(&s.role_at, format!("stages.{name}.role"), msg);
    }
}

fn edges(
    raw: &RawConfig,
    tracks: &[TrackEntry],
    gates: &BTreeMap<GateName, GateConfig>,
    sink: &mut Sink,
) -> Vec<EdgeConfig> {
    let mut out: Vec<(usize, &Origin, EdgeConfig)> = Vec::new();
    for e in &raw.edges {
        let path = format!("edges[{}]", e.index);
        let (from, to) = (e.from.value.as_str(), e.to.value.as_str());
        let target = if to == defaults::DONE { EdgeTarget::Done } else { EdgeTarget::Stage(StageName::new(to)) };

        let mut gate_names: Vec<GateName> = Vec::new();
        for (j, g) in e.gates.iter().flat_map(|g| g.value.iter()).enumerate() {
            let key = format!("{path}.gates[{j}]");
            if gate_names.iter().any(|n| n.as_str() == g.value) {
                let msg = format!("gate `{}` is listed twice on this edge; expected each gate once", g.value);
                sink.error(&g.origin, key, msg);
            } else if !gates.contains_key(g.value.as_str()) {
                let msg = format!(
                    "gate `{}` has no `[gates.{}]` table{}; expected one of: {}",
                    g.value,
                    g.value,
                    schema::did_you_mean(&g.value, gates.keys().map(GateName::as_str)),
                    schema::list(gates.keys().map(GateName::as_str))
                );
                sink.error(&g.origin, key, msg);
            } else {
                gate_names.push(GateName::new(g.value.clone()));
            }
        }

        if let Some((first, first_at, _)) = out.iter().find(|(_, _, c)| c.from.as_str() == from && c.to.as_str() == to)
        {
            let msg = format!(
                "duplicate edge `{from} -> {to}`; edges[{first}]{} already defines it; expected one entry per pair \
                 (list all its gates there)",
                at_line(first_at)
            );
            sink.error(&e.from.origin, path.clone(), msg);
        }

        let applies: Vec<&TrackEntry> = tracks.iter().filter(|t| t.next_after(from) == Some(to)).collect();
        if applies.is_empty() {
            sink.error(&e.from.origin, path.clone(), no_track_message(from, to, tracks));
        }

        if let Some(on_fail) = &e.on_fail {
            let bad: Vec<String> = applies
                .iter()
                .filter_map(|t| {
                    let target = t.position(&on_fail.value);
                    let source = t.position(from);
                    match (target, source) {
                        (Some(a), Some(b)) if a <= b => None,
                        (Some(_), _) => Some(format!("in `{}` it comes after `{from}`", t.name.value)),
                        (None, _) => Some(format!("`{}` ({}) does not have it", t.name.value, t.describe())),
                    }
                })
                .collect();
            if !bad.is_empty() {
                let msg = format!(
                    "rollback target `{}` must be `{from}` itself or a stage before it in every track where \
                     `{from} -> {to}` applies, but {}",
                    on_fail.value,
                    bad.join("; ")
                );
                sink.error(&on_fail.origin, format!("{path}.on_fail"), msg);
            }
        }

        if let Some(a) = e.approval.as_ref().filter(|a| a.value)
            && target == EdgeTarget::Done
        {
            let msg = format!(
                "approval on `{from} -> done` is not supported: the item's pull request merges into main when \
                 its last stage passes, and `orch item approve` runs without a node, so approving there would \
                 finish the item unmerged; expected the approval on the edge into the last stage (e.g. \
                 `deploy-staging -> deploy`)"
            );
            sink.error(&a.origin, format!("{path}.approval"), msg);
        }
        let config = EdgeConfig {
            from: StageName::new(from),
            to: target,
            gates: gate_names,
            on_fail: e.on_fail.as_ref().map(|s| StageName::new(s.value.clone())),
            approval: e.approval.as_ref().is_some_and(|a| a.value),
        };
        out.push((e.index, &e.from.origin, config));
    }
    out.into_iter().map(|(_, _, c)| c).collect()
}

/// Why an edge applies nowhere, with what does follow `from` to help fix it.
fn no_track_message(from: &str, to: &str, tracks: &[TrackEntry]) -> String {
    let rule = "an edge applies where a track lists `from` directly before `to` (or `to = \"done\"` after a \
                track's last stage)";
    let mut follows: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for t in tracks {
        if let Some(next) = t.next_after(from) {
            follows.entry(next).or_default().push(&t.name.value);
        }
    }
    if follows.is_empty() {
        let all: std::collections::BTreeSet<&str> = tracks.iter().flat_map(TrackEntry::names).collect();
        return format!(
            "no track has stage `{from}`{}, so this edge never applies; {rule}",
            schema::did_you_mean(from, all.iter().copied())
        );
    }
    let found: Vec<String> =
        follows.iter().map(|(next, ts)| format!("`{from} -> {next}` in `{}`", ts.join("`, `"))).collect();
    format!(
        "no track has `{from}` directly followed by `{to}`, so this edge never applies; {rule}; tracks have {}",
        found.join(" and ")
    )
}
