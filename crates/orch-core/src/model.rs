//! The enums and the per-item state that the transition function reads and writes.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::names::{StageName, TrackName};

/// A string that names none of an enum's values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} {got:?} is not one of: {expected}")]
pub struct ParseEnumError {
    /// What was being parsed, e.g. "item kind".
    pub what: &'static str,
    /// The text that was refused.
    pub got: String,
    /// The accepted values, comma separated.
    pub expected: &'static str,
}

macro_rules! string_enum {
    ($(#[$doc:meta])* $name:ident, $what:literal, { $($(#[$vdoc:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vdoc])* #[serde(rename = $text)] $variant),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The stable wire and database spelling.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = ParseEnumError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err(ParseEnumError {
                        what: $what,
                        got: s.to_owned(),
                        expected: concat!($($text, " "),+),
                    }),
                }
            }
        }
    };
}

string_enum!(
    /// What sort of work an item is; picks its starting track per repo.
    ItemKind, "item kind", {
        Bug => "bug",
        Feature => "feature",
        Chore => "chore",
        Incident => "incident",
    }
);

string_enum!(
    /// Where an item stands. `done` and `cancelled` are terminal and absorb every
    /// later outcome; `blocked` waits for a human (retry, escalate or cancel).
    ItemStatus, "item status", {
        Queued => "queued",
        Running => "running",
        WaitingApproval => "waiting_approval",
        Blocked => "blocked",
        Done => "done",
        Cancelled => "cancelled",
    }
);

impl ItemStatus {
    /// Terminal statuses never change again.
    pub fn is_terminal(self) -> bool {
        matches!(self, ItemStatus::Done | ItemStatus::Cancelled)
    }
}

string_enum!(
    /// The life of one attempt of one stage. `finishing` means the agent has exited
    /// and a finalizer (holding the lease) is running gates and the transition.
    JobStatus, "job status", {
        Queued => "queued",
        Running => "running",
        Finishing => "finishing",
        Done => "done",
        Failed => "failed",
        Cancelled => "cancelled",
    }
);

impl JobStatus {
    /// A job that has ended holds no lease and runs nothing.
    pub fn is_ended(self) -> bool {
        matches!(self, JobStatus::Done | JobStatus::Failed | JobStatus::Cancelled)
    }
}

/// The part of an item that transitions change: where it is, how it stands, and how
/// many jobs each stage has used. `version` rises by one with every transition and
/// is what the store checks to refuse a second transition from the same state (I2).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemState {
    pub track: TrackName,
    pub stage: StageName,
    pub status: ItemStatus,
    pub version: i64,
    /// Jobs started (or queued) per stage; compared with the stage's `max_attempts`.
    pub attempts: BTreeMap<StageName, u32>,
}

impl ItemState {
    /// The state of a new item: queued at `stage` of `track` with its first job counted.
    pub fn new(track: TrackName, stage: StageName) -> Self {
        let mut attempts = BTreeMap::new();
        attempts.insert(stage.clone(), 1);
        Self { track, stage, status: ItemStatus::Queued, version: 1, attempts }
    }

    /// Jobs used so far at `stage`.
    pub fn attempts_at(&self, stage: &StageName) -> u32 {
        self.attempts.get(stage).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enums_round_trip_their_spelling() {
        for s in ItemStatus::ALL {
            assert_eq!(s.as_str().parse::<ItemStatus>().unwrap(), *s);
        }
        for s in JobStatus::ALL {
            assert_eq!(s.as_str().parse::<JobStatus>().unwrap(), *s);
        }
        let err = "epic".parse::<ItemKind>().unwrap_err();
        assert_eq!(err.to_string(), "item kind \"epic\" is not one of: bug feature chore incident ");
        assert_eq!(serde_json::to_string(&ItemStatus::WaitingApproval).unwrap(), "\"waiting_approval\"");
    }
}
