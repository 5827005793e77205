//! The keys `orch.toml` accepts, in one place: the reader checks tables against
//! these lists (unknown keys get a "did you mean"), and the environment layer
//! derives the `ORCH_<SECTION>_<KEY>` variables from the scalar ones.

/// Top-level sections.
pub(crate) const TOP: &[&str] =
    &["server", "store", "node", "reaper", "repos", "agents", "tracks", "stages", "edges", "gates"];
/// Keys of one `[[repos]]` entry.
pub(crate) const REPO: &[&str] = &[
    "name",
    "key",
    "path",
    "url",
    "forge",
    "main_branch",
    "tracks",
    "author_name",
    "author_email",
    "budget",
    "prompts",
];
/// Keys of one `[agents.<role>]` table.
pub(crate) const AGENT: &[&str] = &[
    "adapter",
    "command",
    "timeout_s",
    "verdict",
    "model",
    "max_turns",
    "permission_mode",
    "allowed_tools",
    "env",
    "binary",
    "sandbox",
    "provider",
    "stall_s",
];
/// Keys of an agent's `provider` table (adapter `codex`).
pub(crate) const PROVIDER: &[&str] = &["name", "base_url", "env_key"];
/// Keys of one `[tracks.<name>]` table.
pub(crate) const TRACK: &[&str] = &["stages", "budget"];
/// Keys of a repo's or track's `budget` table (what one item's runs may use).
pub(crate) const BUDGET: &[&str] = &["max_cost_usd", "max_tokens", "max_agent_s"];
/// Keys of one `[stages.<name>]` table.
pub(crate) const STAGE: &[&str] = &["role", "max_attempts"];
/// Keys of one `[[edges]]` entry.
pub(crate) const EDGE: &[&str] = &["from", "to", "gates", "on_fail", "approval"];
/// Keys of one `[gates.<name>]` table.
pub(crate) const GATE: &[&str] = &["command", "timeout_s", "metric", "on"];
/// Keys of a gate's `metric` table.
pub(crate) const METRIC: &[&str] = &["regex", "min"];

/// The scalar sections, whose every key can be overridden from the environment.
pub(crate) const SCALAR_SECTIONS: &[&str] = &["server", "store", "node", "reaper"];

/// What kind of value a scalar key holds; decides how it is read from TOML and
/// from an environment variable, and what an error says was expected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Text,
    /// Seconds, integer or fractional.
    Seconds,
    /// A whole number.
    Count,
    Flag,
}

impl Kind {
    /// What a value of this kind looks like, for "expected …" messages.
    pub(crate) fn expected(self) -> &'static str {
        match self {
            Kind::Text => "a string",
            Kind::Seconds => "a number of seconds (integer or float, e.g. 15 or 0.5)",
            Kind::Count => "a positive integer",
            Kind::Flag => "a boolean (true or false)",
        }
    }
}

/// A scalar value read from the file or the environment.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Scalar {
    Text(String),
    Seconds(f64),
    Count(i64),
    Flag(bool),
}

/// One scalar key of `[server]`, `[store]`, `[node]` or `[reaper]`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ScalarKey {
    pub(crate) section: &'static str,
    pub(crate) key: &'static str,
    pub(crate) kind: Kind,
}

impl ScalarKey {
    /// The dotted path, e.g. `reaper.finalize_grace_s`.
    pub(crate) fn path(&self) -> String {
        format!("{}.{}", self.section, self.key)
    }

    /// The overriding variable, e.g. `ORCH_REAPER_FINALIZE_GRACE_S`.
    pub(crate) fn env_var(&self) -> String {
        format!("ORCH_{}_{}", self.section, self.key).to_ascii_uppercase()
    }
}

const fn scalar(section: &'static str, key: &'static str, kind: Kind) -> ScalarKey {
    ScalarKey { section, key, kind }
}

/// Every scalar key, grouped by section.
pub(crate) const SCALARS: &[ScalarKey] = &[
    scalar("server", "listen", Kind::Text),
    scalar("server", "auth_reads", Kind::Flag),
    scalar("store", "url", Kind::Text),
    scalar("node", "id", Kind::Text),
    scalar("node", "max_concurrent_jobs", Kind::Count),
    scalar("node", "data_dir", Kind::Text),
    scalar("node", "isolation", Kind::Text),
    scalar("reaper", "interval_s", Kind::Seconds),
    scalar("reaper", "finalize_grace_s", Kind::Seconds),
    scalar("reaper", "max_running_s", Kind::Seconds),
    scalar("reaper", "finalizer_liveness_enabled", Kind::Flag),
    scalar("reaper", "lease_ttl_s", Kind::Seconds),
    scalar("reaper", "heartbeat_s", Kind::Seconds),
];

/// The keys of one scalar section.
pub(crate) fn section_keys(section: &str) -> Vec<&'static str> {
    SCALARS.iter().filter(|s| s.section == section).map(|s| s.key).collect()
}

/// The scalar key `section.key`, if there is one.
pub(crate) fn scalar_key(section: &str, key: &str) -> Option<&'static ScalarKey> {
    SCALARS.iter().find(|s| s.section == section && s.key == key)
}

/// The word closest to `word` among `candidates`, if one is close enough to be a
/// likely typo (at most a third of its letters differ).
pub(crate) fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::damerau_levenshtein(word, c), c))
        .filter(|&(d, c)| d > 0 && d <= (c.chars().count() / 3).max(1))
        .min_by_key(|&(d, _)| d)
        .map(|(_, c)| c)
}

/// `; did you mean `x`?` when a candidate is close, else nothing.
pub(crate) fn did_you_mean<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    closest(word, candidates).map(|c| format!("; did you mean `{c}`?")).unwrap_or_default()
}

/// `a, b, c` with each name in backticks, for "expected one of" lists.
pub(crate) fn list<'a>(names: impl IntoIterator<Item = &'a str>) -> String {
    let names: Vec<String> = names.into_iter().map(|n| format!("`{n}`")).collect();
    if names.is_empty() { "(none defined)".to_owned() } else { names.join(", ") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_vars_are_derived_from_keys() {
        let k = scalar_key("reaper", "finalizer_liveness_enabled").map(ScalarKey::env_var);
        assert_eq!(k.as_deref(), Some("ORCH_REAPER_FINALIZER_LIVENESS_ENABLED"));
        assert_eq!(section_keys("node"), ["id", "max_concurrent_jobs", "data_dir", "isolation"]);
    }

    #[test]
    fn closest_suggests_only_likely_typos() {
        assert_eq!(closest("timout_s", AGENT.iter().copied()), Some("timeout_s"));
        assert_eq!(closest("deploy_staging", ["deploy-staging", "deploy"]), Some("deploy-staging"));
        assert_eq!(closest("zzz", AGENT.iter().copied()), None);
        assert_eq!(closest("role", STAGE.iter().copied()), None, "an exact match is not a suggestion");
    }
}
