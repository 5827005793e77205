//! Small bar charts as inline SVG markup, computed on the server from the event
//! log: no charting library, no external service, nothing but this origin's
//! stylesheet to colour them (the CSP forbids inline styles).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use orch_core::{EventKind, Timestamp};
use orch_store::Event;

use super::html::{self, esc};

/// One bar: its label, its value, and the value as text for its tooltip.
pub(crate) struct Bar {
    pub(crate) label: String,
    pub(crate) value: f64,
    pub(crate) text: String,
}

/// Items moved on (advanced, approved on, or done) per `bucket` over `[since, now)`, oldest
/// first; labelled by minutes before now.
pub(crate) fn throughput(events: &[Event], since: Timestamp, now: Timestamp, bucket: Duration) -> Vec<Bar> {
    let width = i64::try_from(bucket.as_millis()).unwrap_or(i64::MAX).max(1);
    let span = now.as_millis().saturating_sub(since.as_millis()).max(1);
    let n = usize::try_from((span + width - 1) / width).unwrap_or(1).clamp(1, 120);
    let mut counts = vec![0_u32; n];
    for e in events {
        if matches!(
            e.kind.parse::<EventKind>(),
            Ok(EventKind::ItemAdvanced | EventKind::ItemApproved | EventKind::ItemDone)
        ) && e.at >= since
            && e.at <= now
        {
            let i = usize::try_from((e.at.as_millis() - since.as_millis()) / width).unwrap_or(0).min(n - 1);
            counts[i] += 1;
        }
    }
    counts
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let ago = (n - i) as i64 * width / 60_000;
            Bar { label: format!("-{ago}m"), value: f64::from(*c), text: format!("{c} moved on") }
        })
        .collect()
}

/// The run of every job that started and finished in the window (job id → its
/// stage, when the window also holds its `job.queued` event, and its run time).
pub(crate) fn job_runs(events: &[Event]) -> BTreeMap<i64, (Option<String>, Duration)> {
    let mut stage: BTreeMap<i64, String> = BTreeMap::new();
    let mut started: BTreeMap<i64, Timestamp> = BTreeMap::new();
    let mut runs = BTreeMap::new();
    for e in events {
        let Some(job) = e.job else { continue };
        match e.kind.parse::<EventKind>() {
            Ok(EventKind::JobQueued) => {
                if let Some(to) = &e.to {
                    stage.insert(job.0, to.clone());
                }
            }
            Ok(EventKind::JobStarted) => {
                started.insert(job.0, e.at);
            }
            Ok(EventKind::JobFinished) => {
                if let Some(s) = started.get(&job.0) {
                    runs.insert(job.0, (stage.get(&job.0).cloned(), e.at.since(*s)));
                }
            }
            _ => {}
        }
    }
    runs
}

/// Mean durations per stage from `(stage, run)` pairs, in stage order given.
pub(crate) fn stage_durations(runs: &[(String, Duration)], order: &[String]) -> Vec<Bar> {
    let mut sums: BTreeMap<&str, (Duration, u32)> = BTreeMap::new();
    for (stage, d) in runs {
        let e = sums.entry(stage.as_str()).or_default();
        e.0 += *d;
        e.1 += 1;
    }
    let mut stages: Vec<&str> = Vec::new();
    for s in order.iter().map(String::as_str).filter(|s| sums.contains_key(s)) {
        if !stages.contains(&s) {
            stages.push(s);
        }
    }
    for s in sums.keys() {
        if !stages.contains(s) {
            stages.push(s);
        }
    }
    stages
        .into_iter()
        .map(|s| {
            let (sum, n) = sums[s];
            let mean = sum / n.max(1);
            Bar {
                label: s.to_owned(),
                value: mean.as_secs_f64(),
                text: format!("{} mean over {n} runs", html::duration(mean)),
            }
        })
        .collect()
}

/// A vertical bar chart: `title` names it for screen readers.
pub(crate) fn bars(id: &str, title: &str, bars: &[Bar]) -> String {
    const W: f64 = 480.0;
    const H: f64 = 160.0;
    const BASE: f64 = 130.0;
    let max = bars.iter().map(|b| b.value).fold(0.0_f64, f64::max);
    let slot = W / bars.len().max(1) as f64;
    let mut out = format!(
        "<figure class=\"chart\" id=\"{id}\"><svg viewBox=\"0 0 {W} {H}\" role=\"img\" aria-labelledby=\"{id}-t\" \
         preserveAspectRatio=\"xMidYMid meet\"><title id=\"{id}-t\">{t}</title>\
         <line class=\"axis\" x1=\"0\" y1=\"{BASE}\" x2=\"{W}\" y2=\"{BASE}\"/>",
        t = esc(title)
    );
    for (i, b) in bars.iter().enumerate() {
        let h = if max > 0.0 { (b.value / max) * (BASE - 12.0) } else { 0.0 };
        let x = i as f64 * slot + slot * 0.15;
        let _ = write!(
            out,
            "<g class=\"bar\" data-value=\"{v}\"><rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"{h:.1}\">\
             <title>{l}: {tt}</title></rect><text x=\"{cx:.1}\" y=\"{ly}\" text-anchor=\"middle\">{l}</text></g>",
            v = b.value,
            y = BASE - h,
            w = slot * 0.7,
            l = esc(&b.label),
            tt = esc(&b.text),
            cx = x + slot * 0.35,
            ly = BASE + 16.0,
        );
    }
    let _ = write!(out, "</svg><figcaption>{}</figcaption></figure>", esc(title));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use orch_store::JobId;

    fn ev(seq: i64, kind: &str, at: i64, job: Option<i64>) -> Event {
        Event {
            seq,
            at: Timestamp::from_millis(at),
            item: "SHOP-1".parse().unwrap(),
            job: job.map(JobId),
            kind: kind.into(),
            from: None,
            to: None,
            epoch: None,
            reason: None,
            data: serde_json::Value::Null,
        }
    }

    #[test]
    fn throughput_counts_moves_per_bucket() {
        let since = Timestamp::from_millis(0);
        let now = Timestamp::from_millis(3_600_000);
        let events = [
            ev(1, "item.advanced", 10, None),
            ev(2, "item.done", 299_999, None),
            ev(3, "item.advanced", 3_599_999, None),
            ev(4, "job.started", 20, Some(1)),
        ];
        let bars = throughput(&events, since, now, Duration::from_secs(300));
        assert_eq!(bars.len(), 12);
        assert_eq!(bars[0].value, 2.0);
        assert_eq!(bars[11].value, 1.0);
        assert_eq!(bars.iter().map(|b| b.value).sum::<f64>(), 3.0);
        assert_eq!(bars[0].label, "-60m");
    }

    #[test]
    fn job_runs_pair_start_and_finish_and_stage_means_average_them() {
        let mut queued = ev(1, "job.queued", 500, Some(7));
        queued.to = Some("testing".into());
        let events = [
            queued,
            ev(2, "job.started", 1_000, Some(7)),
            ev(3, "job.finished", 4_000, Some(7)),
            ev(4, "job.finished", 9_000, Some(8)),
        ];
        let runs = job_runs(&events);
        assert_eq!(runs.len(), 1);
        assert_eq!(runs[&7], (Some("testing".to_owned()), Duration::from_secs(3)));
        let bars = stage_durations(
            &[
                ("testing".into(), Duration::from_secs(2)),
                ("development".into(), Duration::from_secs(4)),
                ("testing".into(), Duration::from_secs(4)),
            ],
            &["development".into(), "testing".into(), "development".into()],
        );
        assert_eq!(bars.iter().map(|b| b.label.as_str()).collect::<Vec<_>>(), ["development", "testing"]);
        assert_eq!(bars[1].value, 3.0);
    }

    #[test]
    fn bars_escape_labels() {
        let svg = bars("c", "t<", &[Bar { label: "<b>".into(), value: 1.0, text: "x".into() }]);
        assert!(svg.contains("&lt;b&gt;") && !svg.contains("<b>"));
    }
}
