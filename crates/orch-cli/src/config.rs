//! Reading the config: the file and the `ORCH_*` environment, the I/O that
//! orch-core leaves to the binary. Every verb that needs a config comes through
//! here, so they all report a missing file and bad values the same way.

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::path::Path;

use anyhow::Context as _;
use orch_core::config::{self, Config, ConfigErrors};

/// The process's `ORCH_*` variables (others are none of the config's business).
/// A variable whose value is not UTF-8 is passed on lossily, so a bad override is
/// reported as a bad value rather than silently skipped.
pub(crate) fn orch_env() -> BTreeMap<String, String> {
    std::env::vars_os()
        .filter_map(|(k, v)| {
            let k = k.into_string().ok()?;
            k.starts_with("ORCH_").then(|| (k, v.to_string_lossy().into_owned()))
        })
        .collect()
}

/// Reads and validates the config at `path` with the process's overrides.
///
/// # Errors
/// The outer error is I/O (missing or unreadable file, with a hint to run
/// `orch init`); the inner one is the config's own problems, for the caller to print.
pub(crate) fn load(path: &Path, env: &BTreeMap<String, String>) -> anyhow::Result<Result<Config, ConfigErrors>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == ErrorKind::NotFound => anyhow::bail!(
            "config file {} not found; run `orch init` to write one, or point --config (or ORCH_CONFIG) at yours",
            path.display()
        ),
        Err(e) => return Err(e).with_context(|| format!("cannot read config file {}", path.display())),
    };
    Ok(config::load(path, &text, env))
}

/// Warns about `ORCH_<SECTION>_…` variables that override nothing, which are most
/// likely misspelt overrides: a plain `warning:` line for people, or through
/// `tracing` under `orch serve --log-format json`, so every stderr line stays JSON.
pub(crate) fn warn_stray_overrides(env: &BTreeMap<String, String>) {
    for stray in config::stray_overrides(env) {
        let hint = stray.suggestion.map(|s| format!("; did you mean {s}?")).unwrap_or_default();
        let message = format!("{} overrides no config key and is ignored{hint}", stray.var);
        if crate::json_logs() {
            tracing::warn!("{message}");
        } else {
            eprintln!("warning: {message}");
        }
    }
}
