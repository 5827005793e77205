//! Config diagnostics: what went wrong, where (file:line:col, an `ORCH_*` variable,
//! or the built-in defaults) and under which dotted key.
//!
//! Every config check reports through a [`Sink`], so the loader can collect as many
//! problems as possible in one pass and hand them back together, in file order, as
//! one [`ConfigErrors`]. Users fix a config faster from a full list than from one
//! error per run.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// One problem with a config: where it is, which key, what was wrong and what was
/// expected instead.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// The config file as passed to [`load`](crate::config::load).
    pub file: PathBuf,
    /// 1-based line in `file`; `None` when the value came from the environment or
    /// the built-in defaults.
    pub line: Option<usize>,
    /// 1-based column (in characters) in `file`; `None` like `line`.
    pub col: Option<usize>,
    /// The `ORCH_*` variable the value came from, if it came from the environment.
    pub env_var: Option<String>,
    /// Dotted path of the offending key, e.g. `agents.developer.timeout_s` or
    /// `edges[2].on_fail` (array indices count from 0). Empty for TOML syntax errors,
    /// which belong to no key.
    pub key: String,
    /// What was wrong and what was expected.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    /// `FILE:LINE:COL: KEY: MESSAGE`, or `env VAR: KEY: MESSAGE` for a value from
    /// the environment, or `FILE: KEY: MESSAGE` for a built-in default.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.env_var, self.line, self.col) {
            (Some(var), _, _) => write!(f, "env {var}: ")?,
            (None, Some(line), Some(col)) => write!(f, "{}:{line}:{col}: ", self.file.display())?,
            _ => write!(f, "{}: ", self.file.display())?,
        }
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        f.write_str(&self.message)
    }
}

/// Everything wrong with a config, in file order (then environment, then defaults).
/// Never empty.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}", render(.diagnostics))]
pub struct ConfigErrors {
    /// One entry per problem found.
    pub diagnostics: Vec<Diagnostic>,
}

impl ConfigErrors {
    /// The first problem, in file order; what a user should fix first.
    pub fn first(&self) -> Option<&Diagnostic> {
        self.diagnostics.first()
    }

    /// All problems.
    pub fn iter(&self) -> std::slice::Iter<'_, Diagnostic> {
        self.diagnostics.iter()
    }

    /// How many problems were found.
    pub fn len(&self) -> usize {
        self.diagnostics.len()
    }

    /// Always false for errors returned by `load`; present for API completeness.
    pub fn is_empty(&self) -> bool {
        self.diagnostics.is_empty()
    }
}

impl<'a> IntoIterator for &'a ConfigErrors {
    type Item = &'a Diagnostic;
    type IntoIter = std::slice::Iter<'a, Diagnostic>;

    fn into_iter(self) -> Self::IntoIter {
        self.diagnostics.iter()
    }
}

fn render(diagnostics: &[Diagnostic]) -> String {
    diagnostics.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")
}

/// Where a raw value came from. Kept next to every raw value so a check far from
/// the parser can still point at the right place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Origin {
    /// A position in the config file, 1-based.
    File { line: usize, col: usize },
    /// An `ORCH_*` override.
    Env(String),
    /// A built-in default: nothing to point at.
    Default,
}

/// A raw config value and where it came from.
#[derive(Clone, Debug)]
pub(crate) struct At<T> {
    pub(crate) value: T,
    pub(crate) origin: Origin,
}

impl<T> At<T> {
    pub(crate) fn new(value: T, origin: Origin) -> Self {
        Self { value, origin }
    }

    /// A value that came from the built-in defaults.
    pub(crate) fn default(value: T) -> Self {
        Self { value, origin: Origin::Default }
    }
}

/// Turns byte offsets from the TOML parser into 1-based line and column numbers.
pub(crate) struct LineIndex<'t> {
    text: &'t str,
    /// Byte offset at which each line starts.
    starts: Vec<usize>,
}

impl<'t> LineIndex<'t> {
    pub(crate) fn new(text: &'t str) -> Self {
        let starts = std::iter::once(0).chain(text.match_indices('\n').map(|(i, _)| i + 1)).collect();
        Self { text, starts }
    }

    /// The position of byte `offset`; columns count characters, not bytes, so they
    /// match what an editor shows.
    pub(crate) fn origin(&self, offset: usize) -> Origin {
        let offset = offset.min(self.text.len());
        let line = self.starts.partition_point(|&s| s <= offset).max(1);
        let start = self.starts.get(line - 1).copied().unwrap_or(0);
        let col = self.text.get(start..offset).map_or(offset - start, |s| s.chars().count()) + 1;
        Origin::File { line, col }
    }

    pub(crate) fn span(&self, span: Range<usize>) -> Origin {
        self.origin(span.start)
    }
}

/// Collects diagnostics for one config file.
pub(crate) struct Sink {
    file: PathBuf,
    diagnostics: Vec<Diagnostic>,
}

impl Sink {
    pub(crate) fn new(file: &Path) -> Self {
        Self { file: file.to_owned(), diagnostics: Vec::new() }
    }

    /// Records a problem at `origin` under `key`.
    pub(crate) fn error(&mut self, origin: &Origin, key: impl Into<String>, message: impl Into<String>) {
        let (line, col, env_var) = match origin {
            Origin::File { line, col } => (Some(*line), Some(*col), None),
            Origin::Env(var) => (None, None, Some(var.clone())),
            Origin::Default => (None, None, None),
        };
        self.diagnostics.push(Diagnostic {
            file: self.file.clone(),
            line,
            col,
            env_var,
            key: key.into(),
            message: message.into(),
        });
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.diagnostics.is_empty()
    }

    /// The collected problems in file order, then environment, then defaults; the
    /// sort is stable, so problems at one place keep the order they were found in.
    pub(crate) fn finish(mut self) -> ConfigErrors {
        self.diagnostics.sort_by_key(|d| match (&d.env_var, d.line, d.col) {
            (None, Some(line), Some(col)) => (0, line, col),
            (Some(_), _, _) => (1, 0, 0),
            _ => (2, 0, 0),
        });
        ConfigErrors { diagnostics: self.diagnostics }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_index_counts_lines_and_characters_from_one() {
        let idx = LineIndex::new("a = 1\nné = \"x\"\n");
        assert_eq!(idx.origin(0), Origin::File { line: 1, col: 1 });
        assert_eq!(idx.origin(6), Origin::File { line: 2, col: 1 });
        // "né = " is 6 bytes but 5 characters.
        assert_eq!(idx.origin(12), Origin::File { line: 2, col: 6 });
        assert_eq!(idx.origin(999), Origin::File { line: 3, col: 1 });
    }

    #[test]
    fn diagnostics_render_one_line_each_in_file_order() {
        let mut sink = Sink::new(Path::new("orch.toml"));
        sink.error(&Origin::Default, "reaper.max_running_s", "too small");
        sink.error(&Origin::Env("ORCH_REAPER_INTERVAL_S".into()), "reaper.interval_s", "not a number");
        sink.error(&Origin::File { line: 9, col: 2 }, "a.b", "late");
        sink.error(&Origin::File { line: 3, col: 7 }, "", "syntax");
        let errs = sink.finish();
        assert_eq!(
            errs.to_string(),
            "orch.toml:3:7: syntax\n\
             orch.toml:9:2: a.b: late\n\
             env ORCH_REAPER_INTERVAL_S: reaper.interval_s: not a number\n\
             orch.toml: reaper.max_running_s: too small"
        );
    }
}
