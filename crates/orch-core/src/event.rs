//! The kinds of event in the append-only log. Their spelling is part of the
//! interface (API, `--json`, `orch audit`), so it lives in one place.

use crate::model::ParseEnumError;

macro_rules! event_kinds {
    ($($(#[$doc:meta])* $variant:ident => $text:literal),+ $(,)?) => {
        /// One kind of audit-log event.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum EventKind { $($(#[$doc])* $variant),+ }

        impl EventKind {
            /// The stable spelling, e.g. `item.advanced`.
            pub fn as_str(self) -> &'static str {
                match self { $(EventKind::$variant => $text),+ }
            }
        }

        impl std::str::FromStr for EventKind {
            type Err = ParseEnumError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok(EventKind::$variant),)+
                    _ => Err(ParseEnumError { what: "event kind", got: s.to_owned(), expected: concat!($($text, " "),+) }),
                }
            }
        }
    };
}

event_kinds! {
    ItemCreated => "item.created",
    JobQueued => "job.queued",
    JobStarted => "job.started",
    JobFinished => "job.finished",
    JobFailed => "job.failed",
    JobCancelled => "job.cancelled",
    JobReleased => "job.released",
    GatePassed => "gate.passed",
    GateFailed => "gate.failed",
    ItemAdvanced => "item.advanced",
    ItemRolledBack => "item.rolled_back",
    ItemRetried => "item.retried",
    ItemEscalated => "item.escalated",
    ItemWaitingApproval => "item.waiting_approval",
    ItemApproved => "item.approved",
    ItemBlocked => "item.blocked",
    ItemDone => "item.done",
    ItemCancelled => "item.cancelled",
    ReaperDeferred => "reaper.deferred",
    ReaperTookOver => "reaper.took_over",
    ReaperReaped => "reaper.reaped",
    JobFencedOut => "job.fenced_out",
    VcsCommitted => "vcs.committed",
    VcsPushed => "vcs.pushed",
    PrOpened => "pr.opened",
    PrMerged => "pr.merged",
}

impl EventKind {
    /// Whether this event records a transition of the item (one per `version`, I2).
    pub fn is_transition(self) -> bool {
        matches!(
            self,
            EventKind::ItemAdvanced
                | EventKind::ItemRolledBack
                | EventKind::ItemRetried
                | EventKind::ItemEscalated
                | EventKind::ItemWaitingApproval
                | EventKind::ItemApproved
                | EventKind::ItemBlocked
                | EventKind::ItemDone
                | EventKind::ItemCancelled
        )
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
