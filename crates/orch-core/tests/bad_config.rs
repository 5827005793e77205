//! The bad-config corpus: every `tests/fixtures/bad-config/NN-name.toml` at the repo
//! root must fail to load, and its first diagnostic must be exactly the line in the
//! sibling `NN-name.expected` (file:line:col, key and message). The corpus is how
//! we keep config errors pointing at the right place as the loader changes.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

/// The corpus folder, and the same folder as users pass it from the repo root.
fn corpus() -> (PathBuf, &'static str) {
    (Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/bad-config"), "tests/fixtures/bad-config")
}

/// Every fixture's name without extension, sorted.
fn fixtures() -> Vec<String> {
    let (dir, _) = corpus();
    let mut names: Vec<String> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            name.strip_suffix(".toml").map(str::to_owned)
        })
        .collect();
    names.sort();
    names
}

#[test]
fn the_corpus_covers_at_least_eighteen_error_classes() {
    let names = fixtures();
    assert!(names.len() >= 18, "only {} fixtures", names.len());
    let (dir, _) = corpus();
    for name in &names {
        assert!(dir.join(format!("{name}.expected")).is_file(), "{name}.toml has no {name}.expected");
    }
    let mut numbers: Vec<&str> = names.iter().map(|n| n.split('-').next().unwrap_or("")).collect();
    numbers.dedup();
    assert_eq!(numbers.len(), names.len(), "fixture numbers must be unique: {names:?}");
}

#[test]
fn every_bad_config_reports_its_expected_first_diagnostic() {
    let (dir, shown) = corpus();
    let mut failures = Vec::new();
    for name in fixtures() {
        let text = fs::read_to_string(dir.join(format!("{name}.toml"))).unwrap();
        let expected = fs::read_to_string(dir.join(format!("{name}.expected"))).unwrap();
        let expected = expected.trim_end();
        let source = format!("{shown}/{name}.toml");
        let errors = match orch_core::config::load(Path::new(&source), &text, &BTreeMap::new()) {
            Ok(_) => {
                failures.push(format!("{name}: loaded without errors"));
                continue;
            }
            Err(e) => e,
        };
        let Some(first) = errors.first() else {
            failures.push(format!("{name}: an error without diagnostics"));
            continue;
        };

        // Field by field, so a failure says which part moved.
        let rest =
            expected.strip_prefix(&format!("{source}:")).unwrap_or_else(|| panic!("{name}.expected: bad prefix"));
        let mut parts = rest.splitn(3, ':');
        let line: Option<usize> = parts.next().and_then(|s| s.parse().ok());
        let col: Option<usize> = parts.next().and_then(|s| s.parse().ok());
        let tail = parts.next().unwrap_or("").trim_start();
        let shown_tail =
            if first.key.is_empty() { first.message.clone() } else { format!("{}: {}", first.key, first.message) };
        if (first.line, first.col) != (line, col) {
            failures.push(format!("{name}: at {:?}:{:?}, expected {line:?}:{col:?}", first.line, first.col));
        }
        if shown_tail != tail {
            failures.push(format!("{name}: key and message\n   got: {shown_tail}\n  want: {tail}"));
        }
        if first.to_string() != expected {
            failures.push(format!("{name}: rendered\n   got: {first}\n  want: {expected}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
