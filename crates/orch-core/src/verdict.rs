//! The agent's machine verdict (DESIGN §6), parsed strictly: an agent's output is
//! untrusted input, so every way it can be wrong gets a reason a human can act on,
//! and none of them can crash the node (I8).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Verdict files larger than this are refused unread: a runaway agent must not be
/// able to make orch load gigabytes.
pub const MAX_VERDICT_BYTES: usize = 1024 * 1024;

/// The agent's judgement of its own stage.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VerdictValue {
    Pass,
    Fail,
    /// Needs a human.
    Blocked,
}

/// A parsed verdict.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub verdict: VerdictValue,
    #[serde(default)]
    pub summary: String,
    #[serde(default)]
    pub escalate: bool,
    #[serde(default)]
    pub artifacts: Vec<String>,
    #[serde(default)]
    pub metrics: BTreeMap<String, f64>,
}

/// Why a verdict file was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum VerdictError {
    #[error("verdict file is missing: the agent did not write ORCH_VERDICT_FILE")]
    Missing,
    #[error("verdict file is {size} bytes, over the {MAX_VERDICT_BYTES}-byte limit")]
    TooLarge { size: usize },
    #[error("verdict file is not valid JSON at line {line} column {column}: {message}")]
    NotJson { line: usize, column: usize, message: String },
    #[error("verdict file has the wrong shape at line {line} column {column}: {message}")]
    BadShape { line: usize, column: usize, message: String },
}

impl Verdict {
    /// Parses the bytes of a verdict file.
    ///
    /// # Errors
    /// `TooLarge` over [`MAX_VERDICT_BYTES`]; `NotJson` for syntax errors (or text that
    /// is not UTF-8); `BadShape` for a wrong type, a missing `verdict`, or a verdict
    /// value other than `pass`, `fail`, `blocked`.
    pub fn parse(bytes: &[u8]) -> Result<Self, VerdictError> {
        if bytes.len() > MAX_VERDICT_BYTES {
            return Err(VerdictError::TooLarge { size: bytes.len() });
        }
        serde_json::from_slice(bytes).map_err(|e| {
            let (line, column, message) = (e.line(), e.column(), e.to_string());
            let message = strip_position(&message);
            match e.classify() {
                serde_json::error::Category::Data => VerdictError::BadShape { line, column, message },
                _ => VerdictError::NotJson { line, column, message },
            }
        })
    }
}

/// serde_json appends " at line L column C"; we report those as fields instead.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_example() {
        let v = Verdict::parse(
            br#"{"verdict": "pass", "summary": "one line", "escalate": false,
                "artifacts": ["docs/work-items/ORCH-113/adr.md"], "metrics": {"coverage": 91.2}}"#,
        )
        .unwrap();
        assert_eq!(v.verdict, VerdictValue::Pass);
        assert_eq!(v.metrics["coverage"], 91.2);
        assert_eq!(Verdict::parse(br#"{"verdict":"blocked"}"#).unwrap().verdict, VerdictValue::Blocked);
    }

    #[test]
    fn names_what_is_wrong() {
        let not_json = Verdict::parse(b"verdict: pass").unwrap_err();
        assert!(matches!(not_json, VerdictError::NotJson { line: 1, .. }), "{not_json}");
        let unknown = Verdict::parse(br#"{"verdict": "maybe"}"#).unwrap_err();
        let text = unknown.to_string();
        assert!(text.contains("unknown variant `maybe`") && text.contains("`pass`"), "{text}");
        let wrong_type = Verdict::parse(br#"{"verdict": "pass", "escalate": "yes"}"#).unwrap_err();
        assert!(wrong_type.to_string().contains("expected a boolean"), "{wrong_type}");
        let missing = Verdict::parse(br#"{"summary": "x"}"#).unwrap_err();
        assert!(missing.to_string().contains("missing field `verdict`"), "{missing}");
        let big = vec![b' '; MAX_VERDICT_BYTES + 1];
        assert_eq!(Verdict::parse(&big), Err(VerdictError::TooLarge { size: MAX_VERDICT_BYTES + 1 }));
        assert!(matches!(Verdict::parse(&[0xff, 0xfe]), Err(VerdictError::NotJson { .. })));
    }
}
