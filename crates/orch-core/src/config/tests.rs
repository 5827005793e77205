//! Unit tests of the loader: defaults, environment overrides, and one test per
//! validation rule, each asserting where the problem is reported and what it says.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::*;
use crate::model::ItemKind;
use crate::names::{GateName, RoleName, StageName, TrackName};

/// The smallest valid config: an agent for each of the five built-in roles.
const AGENTS: &str = r#"
[agents.analyst]
command = ["./a.sh"]
[agents.architect]
command = ["./a.sh"]
[agents.developer]
command = ["./a.sh"]
[agents.tester]
command = ["./a.sh"]
[agents.deployer]
command = ["./a.sh"]
"#;

fn no_env() -> BTreeMap<String, String> {
    BTreeMap::new()
}

fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

fn ok(text: &str) -> Config {
    match load(Path::new("orch.toml"), text, &no_env()) {
        Ok(c) => c,
        Err(e) => panic!("expected a valid config, got:\n{e}"),
    }
}

fn errors_with(text: &str, env: &BTreeMap<String, String>) -> Vec<Diagnostic> {
    match load(Path::new("orch.toml"), text, env) {
        Ok(_) => panic!("expected errors for:\n{text}"),
        Err(e) => e.diagnostics,
    }
}

fn errors(text: &str) -> Vec<Diagnostic> {
    errors_with(text, &no_env())
}

/// The one diagnostic under `key`, failing if there is not exactly one.
fn only<'a>(errs: &'a [Diagnostic], key: &str) -> &'a Diagnostic {
    let found: Vec<&Diagnostic> = errs.iter().filter(|d| d.key == key).collect();
    assert_eq!(found.len(), 1, "expected one diagnostic for {key}, got: {errs:#?}");
    found[0]
}

fn pos(d: &Diagnostic) -> (Option<usize>, Option<usize>) {
    (d.line, d.col)
}

/// 1-based line and column of the first occurrence of `needle` in `text`.
fn find(text: &str, needle: &str) -> (Option<usize>, Option<usize>) {
    let at = text.find(needle).unwrap_or_else(|| panic!("{needle:?} not in text"));
    let line = text[..at].matches('\n').count() + 1;
    let col = at - text[..at].rfind('\n').map_or(0, |i| i + 1) + 1;
    (Some(line), Some(col))
}

// ---- defaults ----------------------------------------------------------------

#[test]
fn absent_sections_take_the_documented_defaults() {
    let c = ok(AGENTS);
    assert_eq!(c.server.listen, "127.0.0.1:7700");
    assert_eq!(c.store.url, "sqlite://.orch/orch.db");
    assert_eq!(c.node.id, "");
    assert_eq!(c.node.max_concurrent_jobs.get(), 4);
    assert_eq!(c.node.data_dir, PathBuf::from(".orch"));
    let r = &c.reaper;
    let d = ReaperConfig::default();
    assert_eq!(
        (r.interval_s, r.finalize_grace_s, r.max_running_s, r.finalizer_liveness_enabled, r.lease_ttl_s, r.heartbeat_s),
        (d.interval_s, d.finalize_grace_s, d.max_running_s, d.finalizer_liveness_enabled, d.lease_ttl_s, d.heartbeat_s)
    );
    assert!(c.repos.is_empty() && c.edges.is_empty() && c.gates.is_empty());
}

#[test]
fn default_tracks_and_stages_describe_quick_and_full_cycle() {
    let c = ok(AGENTS);
    let names = |t: &str| -> Vec<&str> { c.tracks[t].stages.iter().map(StageName::as_str).collect() };
    assert_eq!(names("quick"), ["development", "testing", "deploy-staging", "deploy"]);
    assert_eq!(names("full-cycle"), ["analysis", "architecture", "development", "testing", "deploy-staging", "deploy"]);
    for (stage, role) in [
        ("analysis", "analyst"),
        ("architecture", "architect"),
        ("development", "developer"),
        ("testing", "tester"),
        ("deploy-staging", "deployer"),
        ("deploy", "deployer"),
    ] {
        assert_eq!(c.stages[stage].role.as_str(), role);
        assert_eq!(c.max_attempts(&StageName::new(stage)), 3);
    }
    assert_eq!(c.first_stage(&TrackName::full_cycle()).map(StageName::as_str), Some("analysis"));
}

#[test]
fn agent_defaults_are_command_with_file_verdict_and_an_hour() {
    let c = ok(AGENTS);
    let a = &c.agents["developer"];
    assert_eq!(a.adapter, AdapterKind::Command);
    assert_eq!(a.verdict, VerdictSource::File);
    assert_eq!(a.timeout_s, 3600.0);
    assert_eq!(a.command, ["./a.sh"]);
}

#[test]
fn user_track_replaces_its_namesake_and_keeps_the_other_default() {
    let c = ok(&format!(
        "{AGENTS}\n[tracks.quick]\nstages = [\"development\", \"deploy\"]\n[tracks.hotfix]\nstages = [\"deploy\"]\n"
    ));
    assert_eq!(c.tracks[&TrackName::new("quick")].stages.len(), 2);
    assert_eq!(c.tracks[&TrackName::full_cycle()].stages.len(), 6);
    assert_eq!(c.tracks[&TrackName::new("hotfix")].stages, [StageName::new("deploy")]);
}

#[test]
fn user_stage_overrides_the_builtin_and_may_keep_its_role() {
    let c = ok(&format!("{AGENTS}\n[stages.development]\nmax_attempts = 5\n[stages.testing]\nrole = \"developer\"\n"));
    assert_eq!(c.stages["development"].role.as_str(), "developer");
    assert_eq!(c.stages["development"].max_attempts.get(), 5);
    assert_eq!(c.stages["testing"].role.as_str(), "developer");
    assert_eq!(c.agent_for(&StageName::new("testing")).map(|(r, _)| r.as_str()), Some("developer"));
}

#[test]
fn only_builtin_stages_some_track_uses_are_added() {
    let c = ok(&format!(
        "{AGENTS}\n[tracks.full-cycle]\nstages = [\"development\"]\n[tracks.quick]\nstages = [\"development\", \"review\"]\n\
         [stages.review]\nrole = \"tester\"\n"
    ));
    let stages: Vec<&str> = c.stages.keys().map(StageName::as_str).collect();
    assert_eq!(stages, ["development", "review"]);
}

#[test]
fn repo_defaults_and_a_partial_track_map_merge() {
    let c = ok(&format!(
        "{AGENTS}\n[[repos]]\nname = \"shop\"\nkey = \"SHOP\"\npath = \"../shop\"\ntracks = {{ bug = \"full-cycle\" }}\n"
    ));
    let r = c.repo("shop").unwrap();
    assert_eq!(r.forge, ForgeKind::Local);
    assert_eq!(r.main_branch, "main");
    assert_eq!(r.key.as_str(), "SHOP");
    assert_eq!(r.track_for(ItemKind::Bug).map(TrackName::as_str), Some("full-cycle"));
    assert_eq!(r.track_for(ItemKind::Feature).map(TrackName::as_str), Some("full-cycle"));
    assert_eq!(r.track_for(ItemKind::Chore).map(TrackName::as_str), Some("quick"));
    assert_eq!(r.track_for(ItemKind::Incident).map(TrackName::as_str), Some("quick"));
}

#[test]
fn edge_and_gate_defaults() {
    let c = ok(&format!(
        "{AGENTS}\n[[edges]]\nfrom = \"deploy\"\nto = \"done\"\ngates = [\"smoke\"]\n\
         [[edges]]\nfrom = \"development\"\nto = \"testing\"\n[gates.smoke]\ncommand = [\"true\"]\n"
    ));
    let done = c.edge(&StageName::new("deploy"), &EdgeTarget::Done).unwrap();
    assert_eq!(done.gates, [GateName::new("smoke")]);
    assert_eq!(done.on_fail, None);
    assert!(!done.approval);
    let exit = c.exit(&TrackName::new("quick"), &StageName::new("development")).unwrap();
    assert!(exit.edge.is_some_and(|e| e.gates.is_empty()));
    assert_eq!(c.gates["smoke"].timeout_s, 600.0);
    assert!(c.gates["smoke"].metric.is_none());
}

#[test]
fn a_metric_gate_reads_its_number() {
    let c = ok(&format!(
        "{AGENTS}\n[gates.coverage]\ncommand = [\"./cov.sh\"]\nmetric = {{ regex = 'coverage: ([0-9.]+)%', min = 80 }}\n"
    ));
    let m = c.gates["coverage"].metric.as_ref().unwrap();
    assert_eq!(m.min, 80.0);
    assert_eq!(m.read("coverage: 91.5%\n"), Some(91.5));
}

#[test]
fn adapter_none_needs_no_command_and_costs_no_time() {
    let c = ok(&format!("{AGENTS}\n[agents.checker]\nadapter = \"none\"\n[stages.testing]\nrole = \"checker\"\n"));
    let a = &c.agents["checker"];
    assert_eq!(a.adapter, AdapterKind::None);
    assert_eq!(a.timeout_s, 0.0);
    let b = c.budget().into_iter().find(|b| b.stage.as_str() == "testing").unwrap();
    assert_eq!(b.agent_timeout_s, 0.0);
}

// ---- paths -------------------------------------------------------------------

fn with_source(source: &str, store: &str) -> Config {
    let text = format!("{AGENTS}\n[store]\nurl = \"{store}\"\n[node]\ndata_dir = \"state\"\n");
    match load(Path::new(source), &text, &no_env()) {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn relative_paths_resolve_against_the_config_folder() {
    let c = with_source("/srv/orch/orch.toml", "sqlite://.orch/orch.db");
    assert_eq!(c.resolve_path(Path::new("../shop")), PathBuf::from("/srv/orch/../shop"));
    assert_eq!(c.resolve_path(Path::new("/abs")), PathBuf::from("/abs"));
    assert_eq!(c.resolve_path(Path::new(".")), PathBuf::from("/srv/orch"));
    let argv = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    assert_eq!(c.resolve_argv(&argv(&["./agents/dev.sh", "./x"])), argv(&["/srv/orch/agents/dev.sh", "./x"]));
    assert_eq!(c.resolve_argv(&argv(&["cargo", "test"])), argv(&["cargo", "test"]));
    assert_eq!(c.resolve_argv(&argv(&["/bin/true"])), argv(&["/bin/true"]));
    assert_eq!(c.store_url_resolved(), "sqlite:///srv/orch/.orch/orch.db");
    assert_eq!(c.data_dir_resolved(), PathBuf::from("/srv/orch/state"));

    let bare = with_source("orch.toml", "sqlite://.orch/orch.db");
    assert_eq!(bare.store_url_resolved(), "sqlite://.orch/orch.db");
    assert_eq!(bare.data_dir_resolved(), PathBuf::from("state"));
    assert_eq!(bare.resolve_path(Path::new(".")), PathBuf::from("."));
    assert_eq!(bare.resolve_argv(&["./a.sh".to_owned()]), ["./a.sh"], "kept out of PATH lookup");
}

#[test]
fn store_urls_that_are_not_relative_sqlite_paths_stay_as_they_are() {
    for url in ["sqlite::memory:", "sqlite:///var/orch.db", "postgres://orch@db/orch"] {
        assert_eq!(with_source("/srv/orch.toml", url).store_url_resolved(), url);
    }
    assert_eq!(
        with_source("/srv/orch.toml", "sqlite:o.db?mode=rwc").store_url_resolved(),
        "sqlite:///srv/o.db?mode=rwc"
    );
}

// ---- environment -------------------------------------------------------------

#[test]
fn env_overrides_every_scalar_section() {
    let e = env(&[
        ("ORCH_REAPER_FINALIZE_GRACE_S", "7"),
        ("ORCH_REAPER_FINALIZER_LIVENESS_ENABLED", "false"),
        ("ORCH_REAPER_HEARTBEAT_S", "0.25"),
        ("ORCH_STORE_URL", "postgres://orch@localhost/orch"),
        ("ORCH_NODE_MAX_CONCURRENT_JOBS", "8"),
        ("ORCH_NODE_ID", "node-a"),
        ("ORCH_SERVER_LISTEN", "0.0.0.0:9000"),
    ]);
    let c = load(Path::new("orch.toml"), &format!("{AGENTS}\n[reaper]\nfinalize_grace_s = 300\n"), &e).unwrap();
    assert_eq!(c.reaper.finalize_grace_s, 7.0);
    assert!(!c.reaper.finalizer_liveness_enabled);
    assert_eq!(c.reaper.heartbeat_s, 0.25);
    assert_eq!(c.store.url, "postgres://orch@localhost/orch");
    assert_eq!(c.node.max_concurrent_jobs.get(), 8);
    assert_eq!(c.node.id, "node-a");
    assert_eq!(c.server.listen, "0.0.0.0:9000");
    let json = serde_json::to_value(&c).unwrap();
    assert_eq!(json["reaper"]["finalize_grace_s"], serde_json::json!(7.0));
}

#[test]
fn unrelated_orch_vars_are_ignored() {
    let e =
        env(&[("ORCH_CONFIG", "x"), ("ORCH_TEST_DATABASE_URL", "y"), ("ORCH_SEED", "z"), ("ORCH_SERVER_TOKEN", "t")]);
    assert!(load(Path::new("orch.toml"), AGENTS, &e).is_ok());
}

#[test]
fn a_bad_env_value_names_the_variable_and_the_expected_type() {
    let errs = errors_with(AGENTS, &env(&[("ORCH_REAPER_INTERVAL_S", "soon"), ("ORCH_NODE_MAX_CONCURRENT_JOBS", "-")]));
    assert_eq!(errs.len(), 2);
    let d = only(&errs, "reaper.interval_s");
    assert_eq!(d.env_var.as_deref(), Some("ORCH_REAPER_INTERVAL_S"));
    assert_eq!(pos(d), (None, None));
    assert_eq!(
        d.to_string(),
        "env ORCH_REAPER_INTERVAL_S: reaper.interval_s: expected a number of seconds (integer or float, e.g. 15 or 0.5), got \"soon\""
    );
    assert!(only(&errs, "node.max_concurrent_jobs").message.contains("a positive integer"));
}

#[test]
fn an_env_value_breaking_a_rule_is_reported_at_the_variable() {
    let errs = errors_with(AGENTS, &env(&[("ORCH_REAPER_LEASE_TTL_S", "0")]));
    let d = only(&errs, "reaper.lease_ttl_s");
    assert_eq!(
        d.to_string(),
        "env ORCH_REAPER_LEASE_TTL_S: reaper.lease_ttl_s: expected a number of seconds greater than 0, got 0"
    );
}

// ---- syntax, unknown keys, types ---------------------------------------------

#[test]
fn a_syntax_error_points_at_its_line_and_column() {
    let text = "[reaper]\ninterval_s = \n";
    let errs = errors(text);
    assert_eq!(errs.len(), 1);
    assert_eq!(pos(&errs[0]), (Some(2), Some(14)));
    assert_eq!(errs[0].key, "");
    assert!(errs[0].to_string().starts_with("orch.toml:2:14: invalid TOML: "), "{}", errs[0]);
}

#[test]
fn duplicate_toml_keys_are_syntax_errors() {
    let errs = errors("[node]\nid = \"a\"\nid = \"b\"\n");
    assert_eq!(pos(&errs[0]), (Some(3), Some(1)));
    assert!(errs[0].message.contains("duplicate key"), "{}", errs[0]);
}

#[test]
fn unknown_keys_suggest_the_closest_and_list_the_expected() {
    let text = format!("{AGENTS}\n[agents.coder]\ncommand = [\"x\"]\ntimout_s = 5\n");
    let errs = errors(&text);
    let d = only(&errs, "agents.coder.timout_s");
    assert_eq!(pos(d), find(&text, "timout_s"));
    assert_eq!(
        d.message,
        "unknown key `timout_s` in `agents.coder`; did you mean `timeout_s`?; expected one of: `adapter`, `command`, `timeout_s`, `verdict`, `model`, `max_turns`, `permission_mode`, `allowed_tools`, `env`, `binary`, `sandbox`, `provider`, `stall_s`"
    );
}

#[test]
fn unknown_sections_and_item_kinds_are_unknown_keys() {
    let text = format!(
        "{AGENTS}\n[reapr]\ninterval_s = 1\n[[repos]]\nname = \"a\"\nkey = \"A\"\npath = \".\"\ntracks = {{ epic = \"quick\" }}\n"
    );
    let errs = errors(&text);
    assert!(only(&errs, "reapr").message.contains("did you mean `reaper`?"));
    let d = only(&errs, "repos[0].tracks.epic");
    assert!(d.message.contains("expected one of: `bug`, `feature`, `chore`, `incident`"), "{}", d.message);
}

#[test]
fn wrong_types_say_what_was_expected_and_what_was_found() {
    let text = "[reaper]\ninterval_s = \"15\"\nfinalizer_liveness_enabled = 1\n[node]\nmax_concurrent_jobs = 2.5\n\
                [agents.developer]\ncommand = \"./dev.sh\"\n";
    let errs = errors(text);
    assert_eq!(errs.len(), 4, "{errs:#?}");
    let d = only(&errs, "reaper.interval_s");
    assert_eq!(pos(d), find(text, "\"15\""));
    assert_eq!(d.message, "expected a number of seconds (integer or float, e.g. 15 or 0.5), found string \"15\"");
    assert_eq!(
        only(&errs, "reaper.finalizer_liveness_enabled").message,
        "expected a boolean (true or false), found integer 1"
    );
    assert_eq!(only(&errs, "node.max_concurrent_jobs").message, "expected a positive integer, found float 2.5");
    assert_eq!(
        only(&errs, "agents.developer.command").message,
        "expected an array of strings, found string \"./dev.sh\""
    );
}

#[test]
fn a_non_string_array_element_is_reported_at_the_element() {
    let text = "[agents.developer]\ncommand = [\"./dev.sh\", 3]\n";
    let d = &errors(text)[0];
    assert_eq!(d.key, "agents.developer.command[1]");
    assert_eq!(pos(d), find(text, "3]"));
}

#[test]
fn missing_required_keys_point_at_their_table() {
    let text = format!("{AGENTS}\n[[repos]]\nname = \"a\"\npath = \".\"\n[[edges]]\nfrom = \"deploy\"\n[tracks.x]\n");
    let errs = errors(&text);
    let d = only(&errs, "repos[0].key");
    assert_eq!(pos(d), find(&text, "[[repos]]"));
    assert!(d.message.starts_with("missing required key `key`"), "{}", d.message);
    assert!(only(&errs, "edges[0].to").message.starts_with("missing required key `to`"));
    assert!(only(&errs, "tracks.x.stages").message.starts_with("missing required key `stages`"));
}

// ---- semantic rules ----------------------------------------------------------

#[test]
fn a_track_stage_without_a_table_or_builtin_is_an_error() {
    let text = format!(
        "{AGENTS}\n[tracks.quick]\nstages = [\"development\", \"reveiw\"]\n[stages.review]\nrole = \"tester\"\n"
    );
    let errs = errors(&text);
    let d = only(&errs, "tracks.quick.stages[1]");
    assert_eq!(pos(d), find(&text, "\"reveiw\""));
    assert!(d.message.starts_with(
        "stage `reveiw` has no `[stages.reveiw]` table and is not a built-in stage; did you mean `review`?"
    ));
}

#[test]
fn a_stage_whose_role_has_no_agent_is_reported_at_the_role() {
    let text = format!("{AGENTS}\n[stages.testing]\nrole = \"qa\"\n");
    let errs = errors(&text);
    let d = only(&errs, "stages.testing.role");
    assert_eq!(pos(d), find(&text, "\"qa\""));
    assert!(d.message.contains("used by tracks `full-cycle`, `quick`"), "{}", d.message);
    assert!(d.message.contains("has no `[agents.qa]` table"), "{}", d.message);
}

#[test]
fn every_stage_of_every_track_needs_an_agent() {
    let errs = errors("[agents.developer]\ncommand = [\"x\"]\n");
    let keys: Vec<&str> = errs.iter().map(|d| d.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "stages.analysis.role",
            "stages.architecture.role",
            "stages.deploy.role",
            "stages.deploy-staging.role",
            "stages.testing.role"
        ]
    );
    assert!(errs[0].message.contains("redefine `[tracks.<name>]`"), "{}", errs[0].message);
}

#[test]
fn a_missing_gate_is_reported_at_the_edge_element() {
    let text = format!(
        "{AGENTS}\n[gates.lint]\ncommand = [\"true\"]\n[[edges]]\nfrom = \"development\"\nto = \"testing\"\ngates = [\"lint\", \"lnit\"]\n"
    );
    let errs = errors(&text);
    let d = only(&errs, "edges[0].gates[1]");
    assert_eq!(pos(d), find(&text, "\"lnit\""));
    assert_eq!(d.message, "gate `lnit` has no `[gates.lnit]` table; did you mean `lint`?; expected one of: `lint`");
}

#[test]
fn an_edge_that_follows_in_no_track_is_an_error() {
    let text = format!("{AGENTS}\n[[edges]]\nfrom = \"development\"\nto = \"deploy\"\n");
    let d = &errors(&text)[0];
    assert_eq!(d.key, "edges[0]");
    assert_eq!(pos(d), find(&text, "\"development\""));
    assert!(d.message.contains("tracks have `development -> testing` in `full-cycle`, `quick`"), "{}", d.message);
}

#[test]
fn an_edge_into_done_applies_only_after_a_last_stage() {
    let text = format!("{AGENTS}\n[[edges]]\nfrom = \"testing\"\nto = \"done\"\n");
    assert_eq!(errors(&text)[0].key, "edges[0]");
    ok(&format!("{AGENTS}\n[[edges]]\nfrom = \"deploy\"\nto = \"done\"\n"));
}

#[test]
fn duplicate_edges_are_an_error() {
    let edge = "[[edges]]\nfrom = \"development\"\nto = \"testing\"\n";
    let errs = errors(&format!("{AGENTS}\n{edge}{edge}"));
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0].key, "edges[1]");
    assert!(errs[0].message.starts_with("duplicate edge `development -> testing`; edges[0] (line"));
}

#[test]
fn on_fail_must_not_point_forward_in_any_track_using_the_edge() {
    let text = format!("{AGENTS}\n[[edges]]\nfrom = \"testing\"\nto = \"deploy-staging\"\non_fail = \"deploy\"\n");
    let d = &errors(&text)[0];
    assert_eq!(d.key, "edges[0].on_fail");
    assert_eq!(pos(d), find(&text, "\"deploy\""));
    assert!(
        d.message.contains("in `full-cycle` it comes after `testing`; in `quick` it comes after `testing`"),
        "{}",
        d.message
    );

    let missing = format!("{AGENTS}\n[[edges]]\nfrom = \"testing\"\nto = \"deploy-staging\"\non_fail = \"analysis\"\n");
    let d = &errors(&missing)[0];
    assert!(
        d.message.contains("`quick` (development -> testing -> deploy-staging -> deploy) does not have it"),
        "{}",
        d.message
    );
    assert!(!d.message.contains("full-cycle"), "{}", d.message);

    ok(&format!("{AGENTS}\n[[edges]]\nfrom = \"testing\"\nto = \"deploy-staging\"\non_fail = \"development\"\n"));
    ok(&format!("{AGENTS}\n[[edges]]\nfrom = \"testing\"\nto = \"deploy-staging\"\non_fail = \"testing\"\n"));
}

const REPO: &str = "[[repos]]\nname = \"shop\"\nkey = \"SHOP\"\npath = \"../shop\"\n";

#[test]
fn duplicate_repo_names_and_keys_are_errors() {
    let text = format!("{AGENTS}\n{REPO}{REPO}");
    let errs = errors(&text);
    assert_eq!(errs.len(), 2);
    assert!(only(&errs, "repos[1].name").message.starts_with("duplicate repo name `shop`; repos[0] (line"));
    assert!(only(&errs, "repos[1].key").message.starts_with("duplicate key prefix `SHOP`; repos[0] (line"));
}

#[test]
fn a_bad_key_prefix_is_an_error() {
    let text = format!("{AGENTS}\n[[repos]]\nname = \"shop\"\nkey = \"shop-1\"\npath = \".\"\n");
    let d = only(&errors(&text), "repos[0].key").clone();
    assert_eq!(pos(&d), find(&text, "\"shop-1\""));
    assert!(d.message.contains("must be 1 to 16 characters: an uppercase ASCII letter"), "{}", d.message);
}

#[test]
fn a_repo_kind_mapped_to_an_unknown_track_is_an_error() {
    let text = format!("{AGENTS}\n{REPO}tracks = {{ feature = \"ful-cycle\" }}\n");
    let d = only(&errors(&text), "repos[0].tracks.feature").clone();
    assert_eq!(pos(&d), find(&text, "\"ful-cycle\""));
    assert_eq!(
        d.message,
        "unknown track `ful-cycle` for feature items; did you mean `full-cycle`?; expected one of: `full-cycle`, `quick`"
    );
}

#[test]
fn unknown_forge_adapter_and_verdict_list_the_allowed_values() {
    let text = format!(
        "{AGENTS}\n{REPO}forge = \"gitlab\"\n[agents.bot]\nadapter = \"claude\"\ncommand = [\"x\"]\nverdict = \"json\"\n"
    );
    let errs = errors(&text);
    assert_eq!(
        only(&errs, "repos[0].forge").message,
        "unknown forge `gitlab`; did you mean `github`?; expected one of: `local`, `gitea`, `github`"
    );
    assert_eq!(
        only(&errs, "agents.bot.adapter").message,
        "unknown adapter `claude`; expected one of: `command`, `claude-code`, `codex`, `script`, `none`"
    );
    assert_eq!(
        only(&errs, "agents.bot.verdict").message,
        "unknown verdict `json`; expected one of: `file`, `exit-code`, `result`"
    );
}

#[test]
fn exit_code_verdicts_need_a_process_adapter() {
    let errs = errors(&format!(
        "{AGENTS}\n[agents.bot]\nadapter = \"codex\"\ncommand = [\"codex\"]\nverdict = \"exit-code\"\n"
    ));
    assert!(only(&errs, "agents.bot.verdict").message.contains("expected adapter `command` or `script`"));
}

#[test]
fn a_process_adapter_needs_a_command() {
    let text = format!("{AGENTS}\n[agents.bot]\ncommand = []\n[agents.ghost]\nadapter = \"script\"\n");
    let errs = errors(&text);
    let d = only(&errs, "agents.bot.command");
    assert_eq!(pos(d), find(&text, "[]"));
    assert!(d.message.starts_with("adapter `command` runs a process, so `command` must be a non-empty argv"));
    assert_eq!(pos(only(&errs, "agents.ghost.command")), find(&text, "ghost"));
}

#[test]
fn timeouts_intervals_and_counts_must_be_positive() {
    let text = format!(
        "{AGENTS}\n[reaper]\ninterval_s = 0\nfinalize_grace_s = -1\nlease_ttl_s = nan\n[node]\nmax_concurrent_jobs = 0\n\
         [agents.bot]\ncommand = [\"x\"]\ntimeout_s = 0\n[gates.g]\ncommand = [\"x\"]\ntimeout_s = -5\n\
         [stages.development]\nmax_attempts = 0\n"
    );
    let errs = errors(&text);
    for key in [
        "reaper.interval_s",
        "reaper.finalize_grace_s",
        "reaper.lease_ttl_s",
        "node.max_concurrent_jobs",
        "agents.bot.timeout_s",
        "gates.g.timeout_s",
        "stages.development.max_attempts",
    ] {
        only(&errs, key);
    }
    assert_eq!(only(&errs, "reaper.interval_s").message, "expected a number of seconds greater than 0, got 0");
    assert_eq!(pos(only(&errs, "gates.g.timeout_s")), find(&text, "-5"));
}

#[test]
fn heartbeat_must_be_below_half_the_lease() {
    let text = format!("{AGENTS}\n[reaper]\nlease_ttl_s = 20\nheartbeat_s = 10\n");
    let d = only(&errors(&text), "reaper.heartbeat_s").clone();
    assert_eq!(pos(&d), find(&text, "10"));
    assert!(d.message.starts_with("heartbeat_s (10) must be less than half of lease_ttl_s (20 / 2 = 10)"));
    ok(&format!("{AGENTS}\n[reaper]\nlease_ttl_s = 20\nheartbeat_s = 9.5\n"));
}

#[test]
fn metric_regexes_must_compile_and_capture() {
    let text = format!(
        "{AGENTS}\n[gates.a]\ncommand = [\"x\"]\nmetric = {{ regex = 'cov: ([0-9.]+%', min = 1 }}\n\
         [gates.b]\ncommand = [\"x\"]\nmetric = {{ regex = 'cov: [0-9.]+%', min = 1 }}\n"
    );
    let errs = errors(&text);
    let a = only(&errs, "gates.a.metric.regex");
    assert_eq!(pos(a), find(&text, "'cov: ([0-9.]+%'"));
    assert!(a.message.starts_with("invalid regex \"cov: ([0-9.]+%\": unclosed group;"), "{}", a.message);
    assert!(!a.message.contains('\n'));
    assert!(only(&errs, "gates.b.metric.regex").message.contains("has no capture group"));
}

#[test]
fn store_url_and_listen_address_are_checked() {
    let errs = errors(&format!("{AGENTS}\n[store]\nurl = \"mysql://x\"\n[server]\nlisten = \"7700\"\n"));
    assert!(only(&errs, "store.url").message.starts_with("expected a store URL: sqlite://PATH"));
    assert!(only(&errs, "server.listen").message.starts_with("expected HOST:PORT"));
}

#[test]
fn empty_tracks_repeated_stages_and_done_as_a_stage_are_errors() {
    let text = format!(
        "{AGENTS}\n[tracks.empty]\nstages = []\n[tracks.twice]\nstages = [\"development\", \"testing\", \"development\"]\n\
         [tracks.odd]\nstages = [\"development\", \"done\"]\n"
    );
    let errs = errors(&text);
    assert_eq!(
        only(&errs, "tracks.empty.stages").message,
        "track `empty` has no stages; expected at least one stage name"
    );
    assert!(
        only(&errs, "tracks.twice.stages[2]")
            .message
            .starts_with("stage `development` is listed twice in track `twice` (first as stages[0])")
    );
    assert!(only(&errs, "tracks.odd.stages[1]").message.starts_with("`done` is reserved"));
}

#[test]
fn a_full_cycle_track_always_exists_because_defaults_fill_it_in() {
    let c = ok(&format!("{AGENTS}\n[tracks.quick]\nstages = [\"development\"]\n"));
    assert!(c.tracks.contains_key("full-cycle"));
    let errs = errors(&format!("{AGENTS}\n[tracks.full-cycle]\nstages = []\n"));
    assert_eq!(errs[0].key, "tracks.full-cycle.stages");
}

// ---- the budget invariant ----------------------------------------------------

const BUDGET: &str = r#"
[reaper]
max_running_s = 1000
finalize_grace_s = 300

[gates.retest]
command = ["cargo", "test"]
timeout_s = 200

[gates.lint]
command = ["cargo", "clippy"]
timeout_s = 100

[[edges]]
from = "development"
to = "testing"
gates = ["retest", "lint"]
"#;

/// Agents for all five roles: 100 s each, the developer `dev_s`.
fn agents_with_developer(dev_s: f64) -> String {
    ["analyst", "architect", "developer", "tester", "deployer"]
        .iter()
        .map(|r| {
            let t = if *r == "developer" { dev_s } else { 100.0 };
            format!("[agents.{r}]\ncommand = [\"./{r}.sh\"]\ntimeout_s = {t}\n")
        })
        .collect()
}

#[test]
fn the_budget_invariant_names_stage_edge_numbers_and_sum() {
    let text = format!("{}{BUDGET}", agents_with_developer(400.0));
    let errs = errors(&text);
    assert_eq!(errs.len(), 1, "{errs:#?}");
    let d = &errs[0];
    assert_eq!(d.key, "reaper.max_running_s");
    assert_eq!(pos(d), find(&text, "1000"));
    assert_eq!(
        d.message,
        "time budget of stage `development` (on tracks `full-cycle`, `quick`) exceeds max_running_s: 400 (agent \
         `developer` timeout_s) + 300 (gates on edge `development -> testing`: retest 200 + lint 100) + 300 \
         (finalize_grace_s) = 1000 s, which is not below max_running_s = 1000 s, so the Tier-3 backstop would kill a \
         healthy job; expected max_running_s > 1000 or smaller timeouts"
    );
}

#[test]
fn the_budget_holds_strictly_below_max_running() {
    let c = ok(&format!("{}{BUDGET}", agents_with_developer(399.5)));
    let b = c.budget().into_iter().find(|b| b.track.as_str() == "quick" && b.stage.as_str() == "development").unwrap();
    assert_eq!((b.agent_timeout_s, b.gates_s, b.finalize_grace_s, b.total_s), (399.5, 300.0, 300.0, 999.5));
    assert_eq!((b.max_running_s, b.headroom_s, b.holds), (1000.0, 0.5, true));
    assert_eq!(b.edge_label(), "development -> testing");
    assert_eq!(b.gates.iter().map(|g| g.name.as_str()).collect::<Vec<_>>(), ["retest", "lint"]);
    assert_eq!(c.budget().len(), 10, "four stages on quick and six on full-cycle");
}

#[test]
fn a_budget_broken_by_an_env_override_points_at_the_variable() {
    let errs = errors_with(AGENTS, &env(&[("ORCH_REAPER_MAX_RUNNING_S", "3700")]));
    assert!(!errs.is_empty());
    for d in &errs {
        assert_eq!(d.key, "reaper.max_running_s");
        assert_eq!(d.env_var.as_deref(), Some("ORCH_REAPER_MAX_RUNNING_S"));
    }
    assert!(
        errs[0].to_string().starts_with("env ORCH_REAPER_MAX_RUNNING_S: reaper.max_running_s: time budget of stage")
    );
}

#[test]
fn many_semantic_errors_come_back_from_one_load_in_file_order() {
    let text = format!(
        "{AGENTS}\n[reaper]\nheartbeat_s = 100\n[[repos]]\nname = \"a\"\nkey = \"a\"\npath = \".\"\n\
         [[edges]]\nfrom = \"development\"\nto = \"testing\"\ngates = [\"nope\"]\n"
    );
    let errs = errors(&text);
    let keys: Vec<&str> = errs.iter().map(|d| d.key.as_str()).collect();
    assert_eq!(keys, ["reaper.heartbeat_s", "repos[0].key", "edges[0].gates[0]"]);
    let lines: Vec<usize> = errs.iter().filter_map(|d| d.line).collect();
    assert!(lines.windows(2).all(|w| w[0] <= w[1]), "{lines:?}");
}

#[test]
fn roles_are_only_names() {
    // A role need not be one of the five built-in ones.
    let c = ok(&format!("{AGENTS}\n[agents.reviewer]\ncommand = [\"r\"]\n[stages.testing]\nrole = \"reviewer\"\n"));
    assert_eq!(c.stages["testing"].role, RoleName::new("reviewer"));
}
