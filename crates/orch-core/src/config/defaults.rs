//! The built-in defaults: what a key means when `orch.toml` leaves it out.
//!
//! They live in one place so `orch init`'s template, the docs and the loader cannot
//! drift apart, and so a minimal config (agents plus a repo) already describes the
//! two standard tracks of DESIGN §1.

use super::model::ReaperConfig;
use super::schema::Scalar;
use crate::model::ItemKind;

/// `[server] listen`.
pub const LISTEN: &str = "127.0.0.1:7700";
/// `[server] auth_reads`: reads are open; mutations need the token when one is set.
pub const AUTH_READS: bool = false;
/// `[store] url`: the embedded SQLite database, relative to the config's folder.
pub const STORE_URL: &str = "sqlite://.orch/orch.db";
/// `[node] id`: empty means "this host's name" (resolved by the binary).
pub const NODE_ID: &str = "";
/// `[node] max_concurrent_jobs`.
pub const MAX_CONCURRENT_JOBS: u32 = 4;
/// `[node] data_dir`, relative to the config's folder.
pub const DATA_DIR: &str = ".orch";
/// `[node] isolation`: a per-job cgroup where the host allows one, else process groups.
pub const ISOLATION: &str = "auto";

/// A repo's `forge`.
pub const FORGE: &str = "local";
/// A repo's `author_name`: who orch's auto-commits and merges are by.
pub const AUTHOR_NAME: &str = "orch";
/// A repo's `author_email`.
pub const AUTHOR_EMAIL: &str = "orch@localhost";
/// A repo's `main_branch`.
pub const MAIN_BRANCH: &str = "main";
/// The track each kind of item starts on, unless a repo's `tracks` says otherwise.
pub const REPO_TRACKS: &[(ItemKind, &str)] = &[
    (ItemKind::Bug, "quick"),
    (ItemKind::Feature, "full-cycle"),
    (ItemKind::Chore, "quick"),
    (ItemKind::Incident, "quick"),
];

/// An agent's `adapter`.
pub const ADAPTER: &str = "command";
/// An agent's `timeout_s`.
pub const AGENT_TIMEOUT_S: f64 = 3600.0;
/// How long a coding agent's event stream may show nothing new before the run is
/// stopped as stalled: longer than any single model call or tool run should take.
pub const AGENT_STALL_S: f64 = 600.0;
/// An agent's `verdict`.
pub const VERDICT: &str = "file";

/// A gate's `timeout_s`.
pub const GATE_TIMEOUT_S: f64 = 600.0;

/// A stage's `max_attempts`.
pub const MAX_ATTEMPTS: u32 = 3;

/// The track escalation moves items to; it must exist.
pub const FULL_CYCLE: &str = "full-cycle";

/// The two standard tracks. A user's `[tracks.<name>]` replaces the one of the same
/// name; the other stays.
pub const TRACKS: &[(&str, &[&str])] = &[
    ("quick", &["development", "testing", "deploy-staging", "deploy"]),
    (FULL_CYCLE, &["analysis", "architecture", "development", "testing", "deploy-staging", "deploy"]),
];

/// The built-in stages and the role that runs each. A user's `[stages.<name>]`
/// replaces the one of the same name (and may leave out `role` to keep this one).
pub const STAGES: &[(&str, &str)] = &[
    ("analysis", "analyst"),
    ("architecture", "architect"),
    ("development", "developer"),
    ("testing", "tester"),
    ("deploy-staging", "deployer"),
    ("deploy", "deployer"),
];

/// The reserved edge target after a track's last stage; no stage may use the name.
pub const DONE: &str = "done";

/// The role a built-in stage defaults to.
pub fn stage_role(stage: &str) -> Option<&'static str> {
    STAGES.iter().find(|(s, _)| *s == stage).map(|(_, role)| *role)
}

/// The default of a scalar key of `[server]`, `[store]`, `[node]` or `[reaper]`.
pub(crate) fn scalar(section: &str, key: &str) -> Option<Scalar> {
    let reaper = ReaperConfig::default();
    Some(match (section, key) {
        ("server", "listen") => Scalar::Text(LISTEN.to_owned()),
        ("server", "auth_reads") => Scalar::Flag(AUTH_READS),
        ("store", "url") => Scalar::Text(STORE_URL.to_owned()),
        ("node", "id") => Scalar::Text(NODE_ID.to_owned()),
        ("node", "max_concurrent_jobs") => Scalar::Count(i64::from(MAX_CONCURRENT_JOBS)),
        ("node", "data_dir") => Scalar::Text(DATA_DIR.to_owned()),
        ("node", "isolation") => Scalar::Text(ISOLATION.to_owned()),
        ("reaper", "interval_s") => Scalar::Seconds(reaper.interval_s),
        ("reaper", "finalize_grace_s") => Scalar::Seconds(reaper.finalize_grace_s),
        ("reaper", "max_running_s") => Scalar::Seconds(reaper.max_running_s),
        ("reaper", "finalizer_liveness_enabled") => Scalar::Flag(reaper.finalizer_liveness_enabled),
        ("reaper", "lease_ttl_s") => Scalar::Seconds(reaper.lease_ttl_s),
        ("reaper", "heartbeat_s") => Scalar::Seconds(reaper.heartbeat_s),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::schema::SCALARS;

    #[test]
    fn every_scalar_key_has_a_default_of_its_kind() {
        use crate::config::schema::Kind;
        for k in SCALARS {
            let d = scalar(k.section, k.key);
            let ok = matches!(
                (k.kind, &d),
                (Kind::Text, Some(Scalar::Text(_)))
                    | (Kind::Seconds, Some(Scalar::Seconds(_)))
                    | (Kind::Count, Some(Scalar::Count(_)))
                    | (Kind::Flag, Some(Scalar::Flag(_)))
            );
            assert!(ok, "{} default {d:?}", k.path());
        }
    }

    #[test]
    fn every_default_track_stage_is_a_builtin_stage() {
        for (_, stages) in TRACKS {
            for s in *stages {
                assert!(stage_role(s).is_some(), "{s}");
            }
        }
    }
}
