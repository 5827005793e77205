//! End-to-end tests of `orch check` and `orch init` through the built binary: exit
//! codes, what goes to stdout and stderr, environment overrides, and that a fresh
//! `orch init` passes `orch check` and its example agents write a pass verdict.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repo root, where the bad-config corpus lives and paths are shown from.
fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `orch ARGS` in `dir` with no `ORCH_*` variables but `env`, so the developer's own
/// environment cannot change the outcome.
fn orch(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_orch"));
    cmd.current_dir(dir).args(args);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("ORCH_") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(env.iter().copied());
    cmd.output().unwrap_or_else(|e| panic!("cannot run orch: {e}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn every_bad_config_fails_check_with_its_location_on_stderr() {
    let root = repo_root();
    let dir = root.join("tests/fixtures/bad-config");
    let mut names: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok()?.strip_suffix(".toml").map(str::to_owned))
        .collect();
    names.sort();
    assert!(names.len() >= 18, "only {} fixtures", names.len());
    for name in names {
        let path = format!("tests/fixtures/bad-config/{name}.toml");
        let out = orch(&root, &["check", "--config", &path], &[]);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{name}: {stderr}");
        assert!(out.stdout.is_empty(), "{name}: nothing on stdout when the config is bad");
        let expected = fs::read_to_string(dir.join(format!("{name}.expected"))).unwrap();
        let expected = expected.trim_end();
        // "FILE:LINE:COL" is the part every editor and CI log understands.
        let location: String = expected.splitn(4, ':').take(3).collect::<Vec<_>>().join(":");
        assert!(stderr.contains(&location), "{name}: stderr lacks {location}:\n{stderr}");
        assert_eq!(stderr.lines().next(), Some(expected), "{name}: first line");
    }
}

#[test]
fn a_missing_config_names_the_path_and_suggests_init() {
    let tmp = tempfile::tempdir().unwrap();
    let out = orch(tmp.path(), &["check", "--config", "nowhere/orch.toml"], &[]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("nowhere/orch.toml") && stderr.contains("orch init"), "{stderr}");
}

#[test]
fn init_writes_a_config_that_passes_check_and_prints_the_budget() {
    let tmp = tempfile::tempdir().unwrap();
    let out = orch(tmp.path(), &["init", "proj"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("wrote proj/orch.toml"), "{stdout}");
    assert!(stdout.contains("orch check --config proj/orch.toml"), "says what to run next: {stdout}");
    // `path = "."` names a clone whose origin is the repo's remote.
    orch_test_support::origin_for(&tmp.path().join("proj"));

    let out = orch(tmp.path(), &["check", "--config", "proj/orch.toml"], &[]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(stdout.contains("time budget"), "{stdout}");
    let header = stdout.lines().find(|l| l.contains("headroom_s")).unwrap_or_default();
    for column in ["track", "stage", "agent_s", "gates", "grace_s", "total_s", "max_running_s"] {
        assert!(header.contains(column), "budget header lacks {column}: {header}");
    }
    let row = stdout
        .lines()
        .find(|l| l.split_whitespace().take(2).eq(["quick", "development"]))
        .unwrap_or_else(|| panic!("no budget row for quick/development:\n{stdout}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cells, ["quick", "development", "testing", "600", "lint", "60", "60", "300", "960", "5400", "4440"]);
    for section in ["config", "store", "node", "reaper", "repos", "tracks", "edges"] {
        assert!(stdout.lines().any(|l| l.starts_with(section)), "no {section} section:\n{stdout}");
    }
}

#[test]
fn init_refuses_to_overwrite_without_force() {
    let tmp = tempfile::tempdir().unwrap();
    assert_eq!(orch(tmp.path(), &["init"], &[]).status.code(), Some(0));
    fs::write(tmp.path().join("agents/developer.sh"), "#!/bin/sh\n# mine\n").unwrap();

    let again = orch(tmp.path(), &["init"], &[]);
    assert_eq!(again.status.code(), Some(1));
    let stderr = text(&again.stderr);
    assert!(stderr.contains("orch.toml already exists") && stderr.contains("--force"), "{stderr}");
    assert!(fs::read_to_string(tmp.path().join("agents/developer.sh")).unwrap().contains("# mine"));

    let forced = orch(tmp.path(), &["init", "--force"], &[]);
    assert_eq!(forced.status.code(), Some(0), "{}", text(&forced.stderr));
    assert!(!fs::read_to_string(tmp.path().join("agents/developer.sh")).unwrap().contains("# mine"));
}

#[test]
fn init_keeps_existing_agent_scripts_when_only_the_config_is_new() {
    let tmp = tempfile::tempdir().unwrap();
    fs::create_dir_all(tmp.path().join("agents")).unwrap();
    fs::write(tmp.path().join("agents/tester.sh"), "#!/bin/sh\n# mine\n").unwrap();
    let out = orch(tmp.path(), &["init"], &[]);
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stdout).contains("kept  ./agents/tester.sh"), "{}", text(&out.stdout));
    assert!(fs::read_to_string(tmp.path().join("agents/tester.sh")).unwrap().contains("# mine"));
}

#[test]
fn example_agents_do_work_and_write_a_pass_verdict() {
    let tmp = tempfile::tempdir().unwrap();
    assert_eq!(orch(tmp.path(), &["init"], &[]).status.code(), Some(0));
    let worktree = tmp.path().join("wt");
    fs::create_dir_all(&worktree).unwrap();
    let verdict = tmp.path().join("verdict.json");
    let out = Command::new(tmp.path().join("agents/developer.sh"))
        .current_dir(&worktree)
        .env("ORCH_ITEM", "DEMO-1")
        .env("ORCH_STAGE", "development")
        .env("ORCH_ROLE", "developer")
        .env("ORCH_ATTEMPT", "1")
        .env("ORCH_JOB_ID", "7")
        .env("ORCH_WORKTREE", &worktree)
        .env("ORCH_PROMPT_FILE", tmp.path().join("no-prompt.md"))
        .env("ORCH_VERDICT_FILE", &verdict)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("developer: working on DEMO-1"), "{}", text(&out.stdout));
    let notes = fs::read_to_string(worktree.join("docs/work-items/DEMO-1/developer.md")).unwrap();
    assert!(notes.contains("job 7"), "{notes}");
    let v: serde_json::Value = serde_json::from_str(&fs::read_to_string(&verdict).unwrap()).unwrap();
    assert_eq!(v["verdict"], "pass");
    assert!(v["summary"].as_str().is_some_and(|s| !s.is_empty()));
}

#[test]
fn json_output_shows_env_overrides_and_the_budget() {
    let tmp = tempfile::tempdir().unwrap();
    assert_eq!(orch(tmp.path(), &["init"], &[]).status.code(), Some(0));
    orch_test_support::origin_for(tmp.path());
    let out = orch(tmp.path(), &["check", "--json"], &[("ORCH_REAPER_FINALIZE_GRACE_S", "7")]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["reaper"]["finalize_grace_s"], serde_json::json!(7.0));
    assert_eq!(v["source"], "orch.toml");
    assert_eq!(v["resolved"]["store_url"], "sqlite://.orch/orch.db");
    let budget = v["budget"].as_array().unwrap();
    assert_eq!(budget.len(), 10);
    assert!(budget.iter().all(|b| b["finalize_grace_s"] == serde_json::json!(7.0) && b["holds"] == true));
    assert_eq!(v["edges"][0]["to"], "testing");
}

#[test]
fn a_bad_env_override_fails_check_naming_the_variable() {
    let tmp = tempfile::tempdir().unwrap();
    assert_eq!(orch(tmp.path(), &["init"], &[]).status.code(), Some(0));
    let out = orch(tmp.path(), &["check"], &[("ORCH_REAPER_FINALIZER_LIVENESS_ENABLED", "maybe")]);
    assert_eq!(out.status.code(), Some(1));
    let first = text(&out.stderr).lines().next().unwrap_or_default().to_owned();
    assert_eq!(
        first,
        "env ORCH_REAPER_FINALIZER_LIVENESS_ENABLED: reaper.finalizer_liveness_enabled: expected a boolean (true or false), got \"maybe\""
    );
}

#[test]
fn a_misspelt_override_is_warned_about() {
    let tmp = tempfile::tempdir().unwrap();
    assert_eq!(orch(tmp.path(), &["init"], &[]).status.code(), Some(0));
    orch_test_support::origin_for(tmp.path());
    let out = orch(tmp.path(), &["check"], &[("ORCH_REAPER_FINALISE_GRACE_S", "7")]);
    assert_eq!(out.status.code(), Some(0));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("warning: ORCH_REAPER_FINALISE_GRACE_S") && stderr.contains("ORCH_REAPER_FINALIZE_GRACE_S"),
        "{stderr}"
    );
}
