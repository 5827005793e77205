//! The config loader: `orch.toml` text plus `ORCH_*` overrides in, a validated
//! [`Config`] or every problem found out.
//!
//! Three passes: parse (TOML syntax; stops at the first error, since the rest of a
//! broken file cannot be trusted), shape (known keys and types, then environment
//! overrides; all reported together), and meaning (`validate`; all reported
//! together). Meaning is only checked on a well-shaped file, so a typo does not
//! set off a cascade of follow-on errors.

use std::collections::BTreeMap;
use std::path::Path;

use toml::de::DeTable;

use super::diag::{ConfigErrors, LineIndex, Origin, Sink};
use super::model::Config;
use super::{env, raw, validate};

/// Loads a config.
///
/// `source` is the file's path as the user gave it: it appears in every
/// diagnostic, and relative paths in the config resolve against its folder. `text`
/// is the file's contents and `env` the process's `ORCH_*` variables (other
/// variables are ignored); the caller does the I/O so this stays pure.
///
/// # Errors
/// [`ConfigErrors`] with at least one [`Diagnostic`](super::Diagnostic), in file
/// order, when the text is not valid TOML, has unknown keys or wrongly typed
/// values, an override does not parse, or the config breaks a rule (references
/// between sections, positive timeouts, the time-budget invariant, …).
pub fn load(source: &Path, text: &str, env: &BTreeMap<String, String>) -> Result<Config, ConfigErrors> {
    let lines = LineIndex::new(text);
    let mut sink = Sink::new(source);
    let doc = match DeTable::parse(text) {
        Ok(doc) => doc,
        Err(e) => {
            let origin = e.span().map_or(Origin::File { line: 1, col: 1 }, |s| lines.span(s));
            sink.error(&origin, "", format!("invalid TOML: {}", e.message().trim()));
            return Err(sink.finish());
        }
    };
    let mut raw = raw::read(doc.get_ref(), &lines, &mut sink);
    env::apply(env, &mut raw.scalars, &mut sink);
    if !sink.is_empty() {
        return Err(sink.finish());
    }
    let config = validate::validate(source, &raw, &mut sink);
    if sink.is_empty() { Ok(config) } else { Err(sink.finish()) }
}
