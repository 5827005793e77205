//! The items the demo files and the end each must reach. The demo agents read the
//! `Demo-Scenario:` line of an item's body to know which story to play; with a real
//! agent (`--agent`) the same items run, but only their ending is checked, since an
//! AI's path cannot be scripted.

use std::path::Path;

use orch_core::{EventKind, ItemKey, ItemStatus};
use orch_store::{Event, Item, Job, Store};

/// One item the demo files and what it is there to show.
#[derive(Debug)]
pub(crate) struct Scenario {
    pub(crate) kind: &'static str,
    pub(crate) title: &'static str,
    pub(crate) body: &'static str,
    /// What to expect from it, stated for the user before the run.
    pub(crate) shows: &'static str,
    pub(crate) expect: Expect,
}

/// The story an item is expected to tell (with the scripted agents).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Expect {
    /// A red re-test gate rolls it back to development exactly once; then it lands.
    RollbackOnce,
    /// Full cycle with documents; a slow gate makes the reaper defer, never roll back.
    DeferredNotRolledBack,
    /// Its developer escalates it from `quick` to `full-cycle`; then it lands.
    Escalated,
}

pub(crate) const SCENARIOS: [Scenario; 3] = [
    Scenario {
        kind: "bug",
        title: "A discount over 100% makes the cart total negative",
        body: "`cart_discount 150 20.00` prints -10.00. A discount must never make a total negative: \
               clamp it to 0..100 %, keep the existing tests green, and add a test for this case.\n\n\
               Demo-Scenario: first-fix-breaks-a-test\n",
        shows: "quick track; the first fix breaks a test, the re-test gate goes red, back to development, fixed, merged",
        expect: Expect::RollbackOnce,
    },
    Scenario {
        kind: "feature",
        title: "Add sales tax to the cart",
        body: "Shops need totals with sales tax: add `cart_tax RATE TOTAL` (8 % on 10.00 is 10.80). \
               Write the requirements to docs/work-items/<item key>/requirements.md and the design \
               decision as an ADR to docs/work-items/<item key>/adr.md, then the code and its test.\n\n\
               Demo-Scenario: feature-full-cycle\n",
        shows: "full-cycle track; requirements, ADR, code, test; a slow design review makes the reaper defer",
        expect: Expect::DeferredNotRolledBack,
    },
    Scenario {
        kind: "bug",
        title: "A negative quantity lowers the cart total",
        body: "A cart line `apple 1.00 -3` takes 3.00 off the total. Whether such lines are refused or \
               skipped changes what callers may send: if so, escalate for requirements and a design \
               decision before coding.\n\n\
               Demo-Scenario: escalates\n",
        shows: "starts on quick; its developer escalates it to full-cycle for analysis and design, then it lands",
        expect: Expect::Escalated,
    },
];

/// Everything the store says about one filed item once the run is over.
#[derive(Debug)]
pub(crate) struct Report {
    pub(crate) scenario: &'static Scenario,
    pub(crate) item: Item,
    pub(crate) jobs: Vec<Job>,
    pub(crate) events: Vec<Event>,
}

impl Report {
    /// Reads `key`'s item, jobs and events.
    ///
    /// # Errors
    /// A store error, or the item missing.
    pub(crate) async fn read(store: &dyn Store, key: &ItemKey, scenario: &'static Scenario) -> anyhow::Result<Self> {
        let item = store.get_item(key).await?.ok_or_else(|| anyhow::anyhow!("item {key} vanished from the store"))?;
        let jobs = store.jobs_for_item(key).await?;
        let events = store.events_for_item(key).await?;
        Ok(Self { scenario, item, jobs, events })
    }

    pub(crate) fn count(&self, kind: EventKind) -> usize {
        self.events.iter().filter(|e| e.kind == kind.as_str()).count()
    }

    pub(crate) fn merge_sha(&self) -> Option<&str> {
        self.item.pr.as_ref().and_then(|p| p.merge_sha.as_deref())
    }

    /// The reason the item's last failed job gave, for a failure message.
    pub(crate) fn last_failure(&self) -> Option<String> {
        self.jobs.iter().rev().find_map(|j| j.reason.clone())
    }

    /// Why this item did not reach its expected end (empty when it did). With a
    /// real agent only the ending is checked: the item must have stopped moving.
    pub(crate) fn problems(&self, scripted: bool, remote: &Path) -> Vec<String> {
        let mut out = Vec::new();
        let status = self.item.status;
        if !scripted {
            if !status.is_terminal() && status != ItemStatus::Blocked {
                out.push(format!("still {status} at stage {}", self.item.stage));
            }
            return out;
        }
        if status != ItemStatus::Done {
            out.push(format!("ended {status} at stage {}, not done", self.item.stage));
        }
        if self.merge_sha().is_none() {
            out.push("its pull request was not merged".to_owned());
        }
        let rollbacks = self.count(EventKind::ItemRolledBack);
        let deferrals = self.count(EventKind::ReaperDeferred);
        let escalations = self.count(EventKind::ItemEscalated);
        match self.scenario.expect {
            Expect::RollbackOnce => {
                if rollbacks != 1 {
                    out.push(format!("rolled back {rollbacks} times, expected exactly once"));
                }
                let dev = self.item.attempts.iter().find(|(s, _)| s.as_str() == "development").map_or(0, |(_, n)| *n);
                if dev != 2 {
                    out.push(format!("development ran {dev} times, expected 2"));
                }
            }
            Expect::DeferredNotRolledBack => {
                if deferrals == 0 {
                    out.push("the reaper never deferred to its slow finalizer".to_owned());
                }
                if rollbacks != 0 {
                    out.push(format!("rolled back {rollbacks} times, expected never"));
                }
                for doc in ["requirements.md", "adr.md"] {
                    let path = format!("main:docs/work-items/{}/{doc}", self.item.key);
                    if super::workspace::git(remote, &["cat-file", "-e", &path]).is_err() {
                        out.push(format!("main has no docs/work-items/{}/{doc}", self.item.key));
                    }
                }
            }
            Expect::Escalated => {
                if escalations != 1 || self.item.track.as_str() != "full-cycle" {
                    out.push(format!("escalated {escalations} times, now on {}", self.item.track));
                }
            }
        }
        out
    }
}
