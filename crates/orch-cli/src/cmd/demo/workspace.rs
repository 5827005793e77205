//! The demo's workspace: a folder holding a bare git remote (`remote.git`), a clone
//! of it with the sample project (`project/`), the demo agents and gates, and the
//! `orch.toml` that ties them together. Everything is written from text embedded
//! in the binary, so the demo needs nothing but `git`, `sh` and `awk`.
//!
//! A folder given with `--keep` must be new, empty, or a previous demo workspace
//! (it holds the marker file); anything else is refused untouched. The marker is
//! also the workspace's lock, held while the demo runs, so two demos never share
//! (or wipe) one folder.

use std::fs::{self, File};
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};

use super::agent::AgentChoice;

/// The file that marks (and locks) a demo workspace.
pub(crate) const MARKER: &str = ".orch-demo";

/// The config, with `__AGENT_<role>__` and `__MAX_RUNNING_S__` to fill in.
const CONFIG: &str = include_str!("../../../templates/demo/orch.toml");

/// The roles whose agent `--agent` replaces; the deployer stays a script (a deploy
/// is a command to run, not a change to write).
const AI_ROLES: &[&str] = &["analyst", "architect", "developer", "tester"];

/// Files written with the executable bit, relative to the workspace.
const SCRIPTS: &[(&str, &str)] = &[
    ("agents/lib.sh", include_str!("../../../templates/demo/agents/lib.sh")),
    ("agents/analyst.sh", include_str!("../../../templates/demo/agents/analyst.sh")),
    ("agents/architect.sh", include_str!("../../../templates/demo/agents/architect.sh")),
    ("agents/developer.sh", include_str!("../../../templates/demo/agents/developer.sh")),
    ("agents/tester.sh", include_str!("../../../templates/demo/agents/tester.sh")),
    ("agents/deployer.sh", include_str!("../../../templates/demo/agents/deployer.sh")),
    ("gates/design-review.sh", include_str!("../../../templates/demo/gates/design-review.sh")),
];

/// The sample project's first commit, relative to `project/`.
const PROJECT: &[(&str, &str)] = &[
    ("README.md", include_str!("../../../templates/demo/project/README.md")),
    ("test.sh", include_str!("../../../templates/demo/project/test.sh")),
    ("src/total.sh", include_str!("../../../templates/demo/project/src/total.sh")),
    ("src/discount.sh", include_str!("../../../templates/demo/project/src/discount.sh")),
    ("tests/test_total.sh", include_str!("../../../templates/demo/project/tests/test_total.sh")),
    ("tests/test_discount.sh", include_str!("../../../templates/demo/project/tests/test_discount.sh")),
    ("ci/lint.sh", include_str!("../../../templates/demo/project/ci/lint.sh")),
    ("ci/security.sh", include_str!("../../../templates/demo/project/ci/security.sh")),
    ("ci/coverage.sh", include_str!("../../../templates/demo/project/ci/coverage.sh")),
];

/// A demo workspace, locked for as long as this value lives.
#[derive(Debug)]
pub(crate) struct Workspace {
    root: PathBuf,
    /// Whether the folder is ours to remove (a temp dir, not `--keep DIR`).
    temporary: bool,
    /// The marker file, holding the lock.
    _lock: File,
}

impl Workspace {
    /// Prepares the workspace in `keep` (or a new temp dir) for `agent`.
    ///
    /// # Errors
    /// A `keep` folder that is a file, or not empty and not a demo workspace, or
    /// locked by a running demo; git failing; any write failing.
    pub(crate) fn create(keep: Option<&Path>, agent: AgentChoice) -> anyhow::Result<Self> {
        let (root, temporary) = match keep {
            Some(dir) => (claim(dir)?, false),
            None => {
                let dir = tempfile::Builder::new()
                    .prefix("orch-demo-")
                    .tempdir()
                    .context("cannot make a temporary folder for the demo")?;
                (dir.keep(), true)
            }
        };
        let lock = lock_marker(&root)?;
        clear_except_marker(&root)?;
        let ws = Self { root, temporary, _lock: lock };
        ws.write(agent)?;
        Ok(ws)
    }

    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    pub(crate) fn is_temporary(&self) -> bool {
        self.temporary
    }

    pub(crate) fn config(&self) -> PathBuf {
        self.root.join("orch.toml")
    }

    pub(crate) fn remote(&self) -> PathBuf {
        self.root.join("remote.git")
    }

    pub(crate) fn project(&self) -> PathBuf {
        self.root.join("project")
    }

    /// Where the node keeps agent and gate logs.
    pub(crate) fn logs(&self) -> PathBuf {
        self.root.join(".orch").join("logs")
    }

    /// Brings the user's clone up to the remote's main, so `project/` shows what
    /// the agents' merged work looks like (orch itself never touches the clone).
    ///
    /// # Errors
    /// git failing.
    pub(crate) fn pull_project(&self) -> anyhow::Result<()> {
        git(&self.project(), &["pull", "--quiet", "--ff-only", "origin", "main"])?;
        Ok(())
    }

    /// Removes a temporary workspace (a `--keep` one stays).
    pub(crate) fn remove_if_temporary(self) {
        if self.temporary {
            let root = self.root.clone();
            drop(self);
            if let Err(e) = fs::remove_dir_all(&root) {
                eprintln!("warning: cannot remove the demo workspace {}: {e}", root.display());
            }
        }
    }

    fn write(&self, agent: AgentChoice) -> anyhow::Result<()> {
        write_file(&self.config(), &render_config(agent))?;
        for (rel, text) in SCRIPTS {
            let path = self.root.join(rel);
            write_file(&path, text)?;
            make_executable(&path)?;
        }
        let remote = self.remote();
        git(&self.root, &["init", "--quiet", "--bare", "-b", "main", &remote.display().to_string()])?;
        let project = self.project();
        for (rel, text) in PROJECT {
            write_file(&project.join(rel), text)?;
        }
        git(&project, &["init", "--quiet", "-b", "main"])?;
        git(&project, &["add", "--all"])?;
        git(&project, &["commit", "--quiet", "-m", "cart: the sample project of orch demo"])?;
        git(&project, &["remote", "add", "origin", &remote.display().to_string()])?;
        git(&project, &["push", "--quiet", "--set-upstream", "origin", "main"])?;
        Ok(())
    }
}

/// The config for `agent`: the demo scripts, or a real agent for the AI roles.
pub(crate) fn render_config(agent: AgentChoice) -> String {
    let mut text = CONFIG.to_owned();
    for role in AI_ROLES {
        let table = match agent.adapter() {
            None => {
                format!("adapter = \"command\"\ncommand = [\"./agents/{role}.sh\"]\ntimeout_s = 60\nverdict = \"file\"")
            }
            Some((adapter, binary)) => {
                format!("adapter = \"{adapter}\"\nbinary = \"{binary}\"\ntimeout_s = 1200\nverdict = \"file\"")
            }
        };
        text = text.replace(&format!("__AGENT_{role}__"), &table);
    }
    // The backstop must exceed each stage's agent timeout + gates + grace.
    let max_running_s = if agent.adapter().is_some() { "1500" } else { "300" };
    text.replace("__MAX_RUNNING_S__", max_running_s)
}

/// Makes sure `dir` may hold the demo: new, empty, or a previous demo's workspace.
fn claim(dir: &Path) -> anyhow::Result<PathBuf> {
    match fs::metadata(dir) {
        Err(e) if e.kind() == ErrorKind::NotFound => {
            fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        }
        Err(e) => return Err(e).with_context(|| format!("cannot read --keep folder {}", dir.display())),
        Ok(m) if !m.is_dir() => bail!("--keep {}: not a folder", dir.display()),
        Ok(_) => {
            let mut entries = fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))?;
            let empty = entries.next().is_none();
            if !empty && !dir.join(MARKER).is_file() {
                bail!(
                    "--keep {}: the folder is not empty and is not an orch demo workspace (it has no {MARKER} file); \
                     nothing was changed. Name a new or empty folder, or a previous demo's.",
                    dir.display()
                );
            }
        }
    }
    std::path::absolute(dir).with_context(|| format!("cannot resolve {}", dir.display()))
}

/// Creates (or opens) the marker and locks it, refusing a workspace whose demo is
/// still running (with `--serve`, until its Ctrl-C).
fn lock_marker(root: &Path) -> anyhow::Result<File> {
    let path = root.join(MARKER);
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(fs::TryLockError::WouldBlock) => {
            bail!("{}: another `orch demo` is running in this workspace; stop it first", root.display())
        }
        Err(fs::TryLockError::Error(e)) => return Err(e).with_context(|| format!("cannot lock {}", path.display())),
    }
    fs::write(&path, "an orch demo workspace: `orch demo --keep` may replace everything in this folder\n")
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(file)
}

/// Empties a previous demo's workspace, all but the (locked) marker. Links are
/// removed, never followed.
fn clear_except_marker(root: &Path) -> anyhow::Result<()> {
    for entry in fs::read_dir(root).with_context(|| format!("cannot list {}", root.display()))? {
        let entry = entry.with_context(|| format!("cannot list {}", root.display()))?;
        if entry.file_name() == MARKER {
            continue;
        }
        let path = entry.path();
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        let removed = if is_dir { fs::remove_dir_all(&path) } else { fs::remove_file(&path) };
        removed.with_context(|| format!("cannot clear the previous demo's {}", path.display()))?;
    }
    Ok(())
}

fn write_file(path: &Path, text: &str) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    }
    fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

fn make_executable(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    fs::set_permissions(path, fs::Permissions::from_mode(0o755))
        .with_context(|| format!("cannot make {} executable", path.display()))
}

/// `git ARGS` in `dir` with a fixed identity and no signing, so a user's global
/// git config (signing keys, templates) cannot break the demo's own commits.
///
/// # Errors
/// git missing or failing, with its stderr.
pub(crate) fn git(dir: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("git")
        .args(["-c", "user.name=orch demo", "-c", "user.email=orch-demo@localhost", "-c", "commit.gpgsign=false"])
        .args(args)
        .current_dir(dir)
        .output()
        .with_context(|| format!("cannot run git (the demo needs it) in {}", dir.display()))?;
    if !out.status.success() {
        bail!("git {} in {} failed: {}", args.join(" "), dir.display(), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn a_previous_demo_workspace_is_emptied_without_following_links() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside");
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("keep.txt"), "not the demo's").unwrap();
        let ws = tmp.path().join("ws");
        fs::create_dir_all(ws.join("project/src")).unwrap();
        fs::write(ws.join(MARKER), "").unwrap();
        fs::write(ws.join("orch.toml"), "old").unwrap();
        std::os::unix::fs::symlink(&outside, ws.join("link")).unwrap();

        let root = claim(&ws).unwrap();
        let _lock = lock_marker(&root).unwrap();
        clear_except_marker(&root).unwrap();
        let left: Vec<_> = fs::read_dir(&ws).unwrap().flatten().map(|e| e.file_name()).collect();
        assert_eq!(left, [MARKER], "all but the marker removed");
        assert_eq!(fs::read_to_string(outside.join("keep.txt")).unwrap(), "not the demo's");
    }

    #[test]
    fn a_file_is_not_a_workspace() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("f");
        fs::write(&file, "x").unwrap();
        let err = claim(&file).unwrap_err().to_string();
        assert!(err.contains("not a folder"), "{err}");
    }

    #[test]
    fn demo_configs_are_valid_for_every_agent_choice() {
        for agent in [AgentChoice::Script, AgentChoice::ClaudeCode, AgentChoice::Codex] {
            let text = render_config(agent);
            assert!(!text.contains("__"), "a placeholder is left in:\n{text}");
            let config = orch_core::config::load(Path::new("orch.toml"), &text, &BTreeMap::new())
                .unwrap_or_else(|e| panic!("the demo config for {agent:?} must load:\n{e}"));
            assert!(config.budget().iter().all(|b| b.holds), "{agent:?}: the time budget must hold");
            assert!(config.reaper.finalize_grace_s < 3.0, "the design-review gate (3 s) must outlast the grace");
        }
    }
}
