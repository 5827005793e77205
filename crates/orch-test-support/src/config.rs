//! The base `orch.toml` the engine's scenario tests start from: one repo, every
//! role's agent a script under `agents/`, sub-second reaper timings. One copy, so
//! a scenario states only what it adds (edges, gates, stage overrides) and every
//! suite that drives a node in-process starts from the same deployment.

/// A `[reaper]` body with sub-second timings (lease 1 s, heartbeat 50 ms, a pass
/// every 200 ms), so lease expiry and takeovers happen within a test's patience;
/// `max_running_s` stays at 60 s so no healthy agent is ever reaped by tier 3.
pub const FAST_REAPER: &str =
    "interval_s = 0.2\nfinalize_grace_s = 1\nmax_running_s = 60\nlease_ttl_s = 1\nheartbeat_s = 0.05\n";

/// The base config: a SQLite store at `orch.db`, node `node-a` (8 jobs at once,
/// data under `data/`), repo `shop` (key `SHOP`) at `.` on the default tracks
/// (bugs and chores on quick: development → testing → deploy-staging → deploy;
/// features on full-cycle, which starts with analysis and architecture), an agent
/// for every role running `./agents/<role>.sh` with a 20 s timeout, `reaper` as the
/// `[reaper]` body (usually [`FAST_REAPER`]), and `extra` appended (edges, gates,
/// stage overrides).
///
/// Paths are relative: the caller writes the text as `orch.toml` in a folder
/// that holds the `agents/` scripts.
pub fn config_text(extra: &str, reaper: &str) -> String {
    format!(
        r#"
[store]
url = "sqlite://orch.db"

[node]
id = "node-a"
max_concurrent_jobs = 8
data_dir = "data"

[reaper]
{reaper}

[[repos]]
name = "shop"
key = "SHOP"
path = "."

[agents.analyst]
command = ["./agents/analyst.sh"]
timeout_s = 20
[agents.architect]
command = ["./agents/architect.sh"]
timeout_s = 20
[agents.developer]
command = ["./agents/developer.sh"]
timeout_s = 20
[agents.tester]
command = ["./agents/tester.sh"]
timeout_s = 20
[agents.deployer]
command = ["./agents/deployer.sh"]
timeout_s = 20

{extra}
"#
    )
}
