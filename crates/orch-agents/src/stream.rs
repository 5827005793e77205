//! The common face of the adapters' stream parsers: feed one line, get progress
//! lines back; ask for the usage so far and the outcome at the end.

use orch_core::Usage;

use crate::{claude, codex};

/// What one line of the stream yielded.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Fed {
    /// Readable progress lines for the job log (tool calls, files changed, the
    /// final summary), already bounded in length.
    pub lines: Vec<String>,
    /// Whether the line showed the agent getting somewhere. A retry notice is a
    /// line but not progress: a stream of only those is a stall.
    pub progress: bool,
}

/// How the agent said its run ended.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// The agent finished without error; `summary` is its last message, bounded.
    Success { summary: String },
    /// The agent reported that it failed; `reason` says how (max turns, an API
    /// error, a failed turn).
    Failed { reason: String },
    /// The stream ended without a final event (killed, crashed, cut off).
    Unfinished,
}

/// One adapter's parser.
#[derive(Debug)]
pub enum StreamParser {
    Claude(claude::Parser),
    Codex(codex::Parser),
}

/// Why a line was skipped.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    #[error("not JSON: {0}")]
    NotJson(String),
    #[error("a JSON line without a string `type`")]
    NoType,
}

impl StreamParser {
    /// Feeds one line (without its newline). A malformed line is an error the
    /// caller logs and skips; the parser's state is unchanged by it.
    ///
    /// # Errors
    /// [`LineError`] when the line is not a JSON object with a `type`.
    pub fn feed(&mut self, line: &str) -> Result<Fed, LineError> {
        let value: serde_json::Value = serde_json::from_str(line).map_err(|e| LineError::NotJson(e.to_string()))?;
        let kind = value.get("type").and_then(serde_json::Value::as_str).ok_or(LineError::NoType)?.to_owned();
        Ok(match self {
            StreamParser::Claude(p) => p.feed(&kind, &value),
            StreamParser::Codex(p) => p.feed(&kind, &value),
        })
    }

    /// The usage so far: exact once the final event is in, an estimate before.
    pub fn usage(&self) -> Usage {
        match self {
            StreamParser::Claude(p) => p.usage(),
            StreamParser::Codex(p) => p.usage(),
        }
    }

    /// How the run ended, as far as the stream told.
    pub fn outcome(&self) -> Outcome {
        match self {
            StreamParser::Claude(p) => p.outcome(),
            StreamParser::Codex(p) => p.outcome(),
        }
    }
}
