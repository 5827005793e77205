//! Live progress: one line per item (track, stage, attempt, status), redrawn in
//! place with indicatif when stdout is a terminal, or printed as a plain line each
//! time it changes otherwise (no escape codes in a log or a pipe). Notable events —
//! a red gate, a rollback, an escalation, a reaper deferral, a merge — are printed
//! above the lines as they arrive.

use std::collections::BTreeMap;
use std::io::IsTerminal as _;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use orch_core::{EventKind, ItemKey};
use orch_store::{Event, Item};

pub(crate) struct Progress {
    /// `None` writes plain lines.
    multi: Option<MultiProgress>,
    bars: BTreeMap<ItemKey, ProgressBar>,
    /// The last line shown per item, so plain output prints changes only.
    last: BTreeMap<ItemKey, String>,
}

impl Progress {
    /// Redrawn lines when stdout is a terminal, plain lines otherwise.
    pub(crate) fn new() -> Self {
        let multi = std::io::stdout()
            .is_terminal()
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stdout_with_hz(10)));
        Self { multi, bars: BTreeMap::new(), last: BTreeMap::new() }
    }

    /// A line outside the item lines (a heading, an event).
    pub(crate) fn say(&self, text: &str) {
        match &self.multi {
            Some(m) => {
                if m.println(text).is_err() {
                    println!("{text}");
                }
            }
            None => println!("{text}"),
        }
    }

    /// Shows `item`'s current state (`job_note` adds e.g. "agent running").
    pub(crate) fn item(&mut self, item: &Item, job_note: &str) {
        let line = item_line(item, job_note);
        if self.last.get(&item.key) == Some(&line) {
            return;
        }
        self.last.insert(item.key.clone(), line.clone());
        match &self.multi {
            Some(m) => {
                let bar = self.bars.entry(item.key.clone()).or_insert_with(|| {
                    let bar = m.add(ProgressBar::new_spinner());
                    if let Ok(style) = ProgressStyle::with_template("{spinner} {msg}") {
                        bar.set_style(style);
                    }
                    bar.enable_steady_tick(Duration::from_millis(120));
                    bar
                });
                if item.status.is_terminal() || item.status == orch_core::ItemStatus::Blocked {
                    bar.finish_with_message(line);
                } else {
                    bar.set_message(line);
                }
            }
            None => println!("{line}"),
        }
    }

    /// Prints the events worth a line of their own.
    pub(crate) fn event(&self, e: &Event) {
        if let Some(text) = event_line(e) {
            self.say(&text);
        }
    }

    /// Stops redrawing; the item lines stay on screen.
    pub(crate) fn finish(&mut self) {
        for bar in self.bars.values() {
            if !bar.is_finished() {
                bar.finish();
            }
        }
    }
}

/// `DEMO-1  bug      quick       testing         attempt 1  running (agent)`.
pub(crate) fn item_line(item: &Item, job_note: &str) -> String {
    let attempt = item.attempts.get(&item.stage).copied().unwrap_or(0);
    let note = if job_note.is_empty() { String::new() } else { format!(" ({job_note})") };
    format!(
        "{:<7} {:<8} {:<11} {:<15} attempt {attempt}  {}{note}",
        item.key.to_string(),
        item.kind.to_string(),
        item.track.to_string(),
        item.stage.to_string(),
        item.status
    )
}

/// The one-line story of an event, for the kinds a user should notice.
fn event_line(e: &Event) -> Option<String> {
    let kind: EventKind = e.kind.parse().ok()?;
    let from = e.from.as_deref().unwrap_or("?");
    let to = e.to.as_deref().unwrap_or("?");
    let reason = e.reason.as_deref().unwrap_or("");
    let gate = e.data.get("gate").and_then(|g| g.as_str()).unwrap_or("?");
    let text = match kind {
        EventKind::GateFailed => format!("gate {gate} failed: {reason}"),
        EventKind::ItemRolledBack => format!("rolled back {from} -> {to}"),
        EventKind::ItemEscalated => format!("escalated to the full-cycle track, back to {to}"),
        EventKind::ReaperDeferred => {
            "reaper: finalization is past finalize_grace_s but its lease is live; deferring to it".to_owned()
        }
        EventKind::ReaperTookOver => format!("reaper took the job over: {reason}"),
        EventKind::PrOpened => "pull request opened".to_owned(),
        EventKind::PrMerged => {
            let sha = e.data.get("merge_sha").and_then(|s| s.as_str()).unwrap_or("?");
            format!("pull request merged into main at {}", short(sha))
        }
        EventKind::ItemDone => "done".to_owned(),
        EventKind::ItemBlocked => format!("blocked: {reason}"),
        _ => return None,
    };
    Some(format!("  {:<7} {text}", e.item.to_string()))
}

/// The first 10 characters of a SHA.
pub(crate) fn short(sha: &str) -> &str {
    sha.get(..10).unwrap_or(sha)
}
