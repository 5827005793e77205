//! What git adds to a stage: worktree creation, commit, fenced push and fetch on a
//! generated repository of 10,000 files and 5,000 commits, as p50/p99 over many
//! items; and worktree creation on a short history next to the long one, to show
//! it does not grow with history. Prints figures; asserts nothing about time.
//!
//! `cargo bench -p orch-vcs --bench git_bench` (ORCH_BENCH_ITEMS=N to change the
//! sample, default 40).

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use orch_vcs::{Author, Git, Repo, RepoSpec};

const FILES: usize = 10_000;

/// A bare repository with `FILES` files and `commits` commits on main, written
/// with `git fast-import` (seconds, not minutes).
fn generate(dir: &Path, commits: usize) -> std::path::PathBuf {
    let remote = dir.join(format!("remote-{commits}.git"));
    let ok = Command::new("git").args(["init", "--quiet", "--bare", "-b", "main"]).arg(&remote).status().unwrap();
    assert!(ok.success());
    // One `commit` block per commit: mark, committer, message, parent, changes.
    let mut stream = String::new();
    for c in 0..commits {
        let msg = format!("commit {c}");
        let _ = writeln!(stream, "commit refs/heads/main\nmark :{}", c + 1);
        let _ = writeln!(stream, "committer bench <b@x> {} +0000", 1_700_000_000 + c);
        let _ = writeln!(stream, "data {}\n{msg}", msg.len());
        if c > 0 {
            let _ = writeln!(stream, "from :{c}");
        }
        let changed: Vec<usize> = if c == 0 { (0..FILES).collect() } else { vec![c % FILES] };
        for f in changed {
            let body = format!("file {f} as of commit {c}\n");
            let _ = write!(stream, "M 100644 inline src/{:03}/f{f}.txt\ndata {}\n{body}", f % 100, body.len());
        }
        stream.push('\n');
    }
    let fixed = stream;
    let mut child = Command::new("git")
        .args(["fast-import", "--quiet"])
        .current_dir(&remote)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(fixed.as_bytes()).unwrap();
    assert!(child.wait().unwrap().success(), "fast-import failed");
    remote
}

fn pct(samples: &mut [Duration], p: f64) -> f64 {
    samples.sort();
    let i = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[i].as_secs_f64() * 1000.0
}

fn row(name: &str, samples: &mut [Duration]) {
    println!("| {name:<28} | {:>8.1} | {:>8.1} | {:>4} |", pct(samples, 0.5), pct(samples, 0.99), samples.len());
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let items: usize = std::env::var("ORCH_BENCH_ITEMS").ok().and_then(|v| v.parse().ok()).unwrap_or(40);
    let tmp = tempfile::tempdir().unwrap();
    let t = Instant::now();
    let long = generate(tmp.path(), 5_000);
    let short = generate(tmp.path(), 100);
    println!("generated {FILES} files x 5,000 commits and x 100 commits in {:.1}s", t.elapsed().as_secs_f64());

    for (label, remote) in [("5,000 commits", &long), ("100 commits", &short)] {
        let spec = RepoSpec { name: "bench".into(), remote: remote.display().to_string(), main_branch: "main".into() };
        let mirror = tmp.path().join(format!("mirror-{}", label.replace([',', ' '], "")));
        let repo = Repo::new(Git::default(), spec, mirror);
        let t = Instant::now();
        repo.ensure().await.unwrap();
        println!("\n### history of {label}: first mirror clone {:.0} ms\n", t.elapsed().as_secs_f64() * 1000.0);
        println!("| operation                    | p50 (ms) | p99 (ms) |    n |");
        println!("|------------------------------|---------:|---------:|-----:|");
        let (mut wt_t, mut commit_t, mut push_t, mut fetch_t) = (vec![], vec![], vec![], vec![]);
        let author = Author::default();
        for i in 0..items {
            let path = tmp.path().join(format!("wt-{}-{i}", label.len()));
            let branch = format!("feature/BEN-{i}-bug-bench");
            let t = Instant::now();
            let wt = repo.worktree(&path, &branch, None).await.unwrap();
            wt_t.push(t.elapsed());
            std::fs::write(path.join(format!("src/000/f{i}.txt")), format!("changed by item {i}\n")).unwrap();
            let msg =
                format!("developer(BEN-{i}): auto-commit from developer job {i}\n\nRefs: BEN-{i}\nOrch-Job: {i}\n");
            let t = Instant::now();
            wt.commit_all(&msg, &author).await.unwrap().unwrap();
            commit_t.push(t.elapsed());
            let t = Instant::now();
            wt.push_fenced(None).await.unwrap();
            push_t.push(t.elapsed());
            let t = Instant::now();
            repo.fetch().await.unwrap();
            fetch_t.push(t.elapsed());
            repo.remove_worktree(&path).await.unwrap();
        }
        row("worktree (new branch)", &mut wt_t);
        row("commit (one changed file)", &mut commit_t);
        row("push --force-with-lease", &mut push_t);
        row("fetch (all branches)", &mut fetch_t);
    }
}
