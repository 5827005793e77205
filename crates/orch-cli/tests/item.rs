//! End-to-end tests of `orch migrate` and `orch item add|show|list|events` through
//! the built binary, on SQLite and on the local PostgreSQL (a fresh database per
//! test, named by `ORCH_STORE_URL` as an operator would): the JSON shapes of
//! DESIGN §8, the human tables, and exit 1 with a clear message on bad input.

use std::path::Path;
use std::process::{Command, Output};

use orch_test_support::PgDatabase;
use serde_json::Value;

/// A scratch deployment: `orch init` output in a temp dir, plus the store URL.
struct Deployment {
    dir: tempfile::TempDir,
    url: String,
    /// The PostgreSQL database of a `postgres` deployment, dropped with it.
    _pg: Option<PgDatabase>,
}

impl Deployment {
    fn new(backend: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let out = orch(dir.path(), "", &["init", "."]);
        assert!(out.status.success(), "orch init: {}", text(&out.stderr));
        let (url, pg) = if backend == "sqlite" {
            (format!("sqlite://{}", dir.path().join("state/orch.db").display()), None)
        } else {
            let db = PgDatabase::create("orch_cli");
            (db.url().to_owned(), Some(db))
        };
        Self { dir, url, _pg: pg }
    }

    fn run(&self, args: &[&str]) -> Output {
        orch(self.dir.path(), &self.url, args)
    }

    /// Runs a verb that must succeed and returns its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.status.success(), "orch {args:?} failed: {}", text(&out.stderr));
        text(&out.stdout)
    }

    fn json(&self, args: &[&str]) -> Value {
        let out = self.ok(args);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("orch {args:?} printed no JSON ({e}): {out}"))
    }

    /// Runs a verb that must fail with exit 1 and returns its stderr.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert_eq!(out.status.code(), Some(1), "orch {args:?}: {}", text(&out.stderr));
        text(&out.stderr)
    }
}

/// `orch ARGS` in `dir` with `ORCH_STORE_URL=url` (if set) and no other `ORCH_*`.
fn orch(dir: &Path, url: &str, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_orch"));
    cmd.current_dir(dir).args(args);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("ORCH_") {
            cmd.env_remove(k);
        }
    }
    if !url.is_empty() {
        cmd.env("ORCH_STORE_URL", url);
    }
    cmd.output().unwrap_or_else(|e| panic!("cannot run orch: {e}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `migrate` reports the store; `add` files DEMO-1 with the repo's track for the
/// kind; `show`, `list` and `events` read it back in DESIGN §8 shapes.
fn add_show_list_events(backend: &str) {
    let d = Deployment::new(backend);
    assert!(d.ok(&["migrate"]).contains("migrated and ready"));
    std::fs::write(d.dir.path().join("body.md"), "Steps to reproduce\n").unwrap();
    let item = d.json(&[
        "item",
        "add",
        "--repo",
        "demo",
        "--kind",
        "bug",
        "--title",
        "login fails",
        "--body-file",
        "body.md",
        "--json",
    ]);
    assert_eq!(item["key"], "DEMO-1");
    assert_eq!(item["track"], "quick");
    assert_eq!(item["stage"], "development");
    assert_eq!(item["status"], "queued");
    assert_eq!(item["version"], 1);
    assert_eq!(item["attempts"], serde_json::json!({ "development": 1 }));
    assert_eq!(item["body"], "Steps to reproduce\n");
    assert_eq!(item["pr"], Value::Null);
    let created = item["created_at"].as_str().unwrap();
    assert!(created.ends_with('Z') && created.contains('T'), "RFC 3339: {created}");
    for field in [
        "key",
        "repo",
        "kind",
        "title",
        "body",
        "track",
        "stage",
        "status",
        "version",
        "attempts",
        "branch",
        "pr",
        "created_at",
        "updated_at",
    ] {
        assert!(item.get(field).is_some(), "item JSON lacks {field}");
    }

    let human = d.ok(&["item", "add", "--repo", "demo", "--kind", "feature", "--title", "dark mode"]);
    assert!(human.contains("created DEMO-2"), "{human}");
    let feature = d.json(&["item", "show", "DEMO-2", "--json"]);
    assert_eq!(feature["track"], "full-cycle", "a feature starts on the repo's feature track");
    let quick = d
        .json(&["item", "add", "--repo", "demo", "--kind", "feature", "--title", "tiny", "--track", "quick", "--json"]);
    assert_eq!((quick["key"].as_str(), quick["track"].as_str()), (Some("DEMO-3"), Some("quick")));

    let shown = d.json(&["item", "show", "DEMO-1", "--json"]);
    assert_eq!(shown["title"], "login fails");
    assert_eq!(shown["jobs"][0]["status"], "queued");
    assert_eq!(shown["jobs"][0]["stage"], "development");
    let table = d.ok(&["item", "show", "DEMO-1"]);
    assert!(table.contains("login fails") && table.contains("development"), "{table}");

    let all = d.json(&["item", "list", "--json"]);
    let keys: Vec<&str> = all.as_array().unwrap().iter().map(|i| i["key"].as_str().unwrap()).collect();
    assert_eq!(keys, ["DEMO-1", "DEMO-2", "DEMO-3"]);
    let paged = d.json(&["item", "list", "--limit", "1", "--offset", "1", "--json"]);
    assert_eq!(paged[0]["key"], "DEMO-2");
    assert_eq!(paged.as_array().unwrap().len(), 1);
    let at_analysis = d.json(&["item", "list", "--stage", "analysis", "--json"]);
    assert_eq!(at_analysis.as_array().unwrap().len(), 1);
    let queued = d.json(&["item", "list", "--repo", "demo", "--status", "queued", "--json"]);
    assert_eq!(queued.as_array().unwrap().len(), 3);
    assert!(d.json(&["item", "list", "--status", "done", "--json"]).as_array().unwrap().is_empty());
    let listing = d.ok(&["item", "list"]);
    let lines: Vec<&str> = listing.lines().collect();
    assert!(lines[0].starts_with("KEY ") && lines[0].contains("STATUS"), "{listing}");
    let title_col = lines[0].find("TITLE").unwrap();
    assert!(lines[1..].iter().all(|l| l.len() > title_col), "columns are aligned:\n{listing}");
    assert_eq!(lines[1].find("login fails"), Some(title_col), "columns are aligned:\n{listing}");

    let events = d.json(&["item", "events", "DEMO-1", "--json"]);
    let kinds: Vec<&str> = events.as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["item.created", "job.queued"]);
    for field in ["seq", "at", "item", "job", "kind", "from", "to", "epoch", "reason", "data"] {
        assert!(events[0].get(field).is_some(), "event JSON lacks {field}");
    }
    assert!(d.ok(&["item", "events", "DEMO-1"]).contains("job.queued"));
}

/// Unknown repo, kind, track, key and status, and a malformed key, each exit 1
/// with a message naming what was wrong.
fn bad_input_exits_1(backend: &str) {
    let d = Deployment::new(backend);
    let e = d.fails(&["item", "add", "--repo", "nope", "--kind", "bug", "--title", "x"]);
    assert!(e.contains("unknown repo \"nope\"") && e.contains("demo"), "{e}");
    let e = d.fails(&["item", "add", "--repo", "demo", "--kind", "epic", "--title", "x"]);
    assert!(e.contains("epic"), "{e}");
    let e = d.fails(&["item", "add", "--repo", "demo", "--kind", "bug", "--title", "x", "--track", "slow"]);
    assert!(e.contains("unknown track \"slow\""), "{e}");
    let e = d.fails(&["item", "add", "--repo", "demo", "--kind", "bug", "--title", "x", "--body-file", "missing.md"]);
    assert!(e.contains("missing.md"), "{e}");
    let e = d.fails(&["item", "show", "DEMO-9"]);
    assert!(e.contains("no item DEMO-9"), "{e}");
    let e = d.fails(&["item", "events", "DEMO-9"]);
    assert!(e.contains("no item DEMO-9"), "{e}");
    let e = d.fails(&["item", "show", "demo-1"]);
    assert!(e.contains("must look like PREFIX-N"), "{e}");
    let e = d.fails(&["item", "list", "--status", "asleep"]);
    assert!(e.contains("asleep"), "{e}");
    // Nothing was created by any of that.
    assert!(d.json(&["item", "list", "--json"]).as_array().unwrap().is_empty());
}

macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $( #[test] fn $name() { super::$name("sqlite") } )*
        }
        mod postgres {
            $( #[test] fn $name() { super::$name("postgres") } )*
        }
    };
}

on_both_backends!(add_show_list_events, bad_input_exits_1);

#[test]
fn unreachable_store_exits_1_naming_it() {
    let d = Deployment::new("sqlite");
    let out = orch(d.dir.path(), "postgres://postgres@127.0.0.1:1/none", &["item", "list"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("127.0.0.1:1"), "{}", text(&out.stderr));
}
