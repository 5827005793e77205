//! Style rules cheap enough to enforce with a test (STYLE.md, "tidy"): every Rust
//! file opens with a `//!` header, no `dbg!` or `todo!` anywhere, and no direct
//! clock reads (`SystemTime::now`, `Instant::now` in library code) outside the
//! engine's clock module, since time must be injected for tests to control it.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n == "target") {
                continue;
            }
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn crates_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

#[test]
fn every_rust_file_opens_with_a_module_doc() {
    let mut files = Vec::new();
    rust_files(&crates_dir(), &mut files);
    assert!(files.len() > 20, "found only {} files under {}", files.len(), crates_dir().display());
    let missing: Vec<_> = files
        .iter()
        .filter(|f| {
            let text = std::fs::read_to_string(f).unwrap();
            !text.trim_start().starts_with("//!")
        })
        .collect();
    assert!(missing.is_empty(), "files without a //! header: {missing:#?}");
}

#[test]
fn no_debug_macros_or_todos() {
    let mut files = Vec::new();
    rust_files(&crates_dir(), &mut files);
    let needles = [concat!("dbg", "!("), concat!("todo", "!("), concat!("unimplemented", "!(")];
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        for n in needles {
            assert!(!text.contains(n), "{} contains {n}", f.display());
        }
    }
}

#[test]
fn only_the_clock_module_reads_the_wall_clock() {
    let mut files = Vec::new();
    for krate in ["orch-core", "orch-store", "orch-engine"] {
        rust_files(&crates_dir().join(krate).join("src"), &mut files);
    }
    let needle = concat!("SystemTime", "::now");
    for f in &files {
        if f.ends_with("orch-engine/src/clock.rs") {
            continue;
        }
        let text = std::fs::read_to_string(f).unwrap();
        assert!(!text.contains(needle), "{} reads the wall clock directly; take `now` from a Clock", f.display());
    }
}
