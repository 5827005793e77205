//! `orch init [DIR]`: scaffolds a commented `orch.toml` and one example agent script
//! per role, a config that passes `orch check` as written, so a new user starts from
//! something that runs and reads the comments to change it.

use std::fs::{self, OpenOptions};
use std::io::{ErrorKind, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;

/// The config `init` writes; `config_template_is_valid` keeps it passing `check`.
const CONFIG: &str = include_str!("../../templates/orch.toml");
/// The example agent, with `__ROLE__` standing for the role.
const AGENT: &str = include_str!("../../templates/agent.sh");
/// The roles the template's agents cover, one script each.
const ROLES: &[&str] = &["analyst", "architect", "developer", "tester", "deployer"];

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Where to write orch.toml and agents/ [default: .]
    #[arg(default_value = ".")]
    dir: PathBuf,

    /// Replace an existing orch.toml and example agent scripts.
    #[arg(long)]
    force: bool,
}

pub(crate) fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let dir = &args.dir;
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let config = dir.join("orch.toml");
    match write_new(&config, CONFIG, args.force) {
        Ok(true) => println!("wrote {}", config.display()),
        Ok(false) => anyhow::bail!(
            "{} already exists; not overwriting it (run `orch init --force` to replace it and the example agents)",
            config.display()
        ),
        Err(e) => return Err(e),
    }

    let agents = dir.join("agents");
    fs::create_dir_all(&agents).with_context(|| format!("cannot create {}", agents.display()))?;
    for role in ROLES {
        let script = agents.join(format!("{role}.sh"));
        if write_new(&script, &AGENT.replace("__ROLE__", role), args.force)? {
            make_executable(&script)?;
            println!("wrote {}", script.display());
        } else {
            println!("kept  {} (exists; --force replaces it)", script.display());
        }
    }

    let check = if dir == Path::new(".") {
        "orch check".to_owned()
    } else {
        format!("orch check --config {}", config.display())
    };
    println!("\nnext: `{check}` validates the config and prints each stage's time budget");
    Ok(ExitCode::SUCCESS)
}

/// Writes `text` to `path` unless it exists (then `Ok(false)`), or always with
/// `force`. `create_new` makes the existence check and the write one step.
fn write_new(path: &Path, text: &str, force: bool) -> anyhow::Result<bool> {
    let mut options = OpenOptions::new();
    options.write(true);
    if force {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    let mut file = match options.open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::AlreadyExists => return Ok(false),
        Err(e) => return Err(e).with_context(|| format!("cannot write {}", path.display())),
    };
    file.write_all(text.as_bytes()).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(true)
}

#[cfg(unix)]
fn make_executable(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    fs::set_permissions(path, fs::Permissions::from_mode(0o755))
        .with_context(|| format!("cannot make {} executable", path.display()))
}

#[cfg(not(unix))]
fn make_executable(_path: &Path) -> anyhow::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn config_template_is_valid() {
        let config = orch_core::config::load(Path::new("orch.toml"), CONFIG, &BTreeMap::new())
            .unwrap_or_else(|e| panic!("the init template must pass check:\n{e}"));
        let roles: Vec<&str> = config.agents.keys().map(|r| r.as_str()).collect();
        let mut expected = ROLES.to_vec();
        expected.sort_unstable();
        assert_eq!(roles, expected, "one example script per agent");
        assert!(config.budget().iter().all(|b| b.holds));
        assert_eq!(config.repo("demo").map(|r| r.key.as_str()), Some("DEMO"));
    }
}
