//! The events of a recent time window, read with the store's one event query
//! (`events_since`, by sequence number): a galloping then binary search finds the
//! first event at or after the window's start in O(log n) indexed lookups, then
//! the window is read forward, bounded. No full scan, and no store method of our
//! own. Event times follow their sequence closely (both are assigned at commit);
//! an event a few milliseconds out of order at the window's edge may be missed,
//! which a chart of the last hour does not notice.

use orch_core::Timestamp;
use orch_store::{Event, Store};

/// Lookups the search may make before it settles for where it is.
const PROBES_MAX: u32 = 128;
/// Events read per query when reading the window forward.
const PAGE: u32 = 1_000;

/// Events with `at >= since`, oldest first, at most `max`; `true` when the
/// window held more than `max`.
///
/// # Errors
/// The store's error.
pub(crate) async fn events_from(
    store: &dyn Store,
    since: Timestamp,
    max: usize,
) -> Result<(Vec<Event>, bool), orch_store::Error> {
    let first_after = |seq: i64| async move { store.events_since(seq, 1).await.map(|mut v| v.pop()) };
    // `lo`: a seq whose event is before the window (0: none known).
    // `hi`: the first event after `hi` is in the window, or there is none.
    let mut lo = 0_i64;
    let mut hi = 1_024_i64;
    let mut probes = 0;
    loop {
        probes += 1;
        match first_after(hi).await? {
            Some(e) if e.at < since && probes < PROBES_MAX => {
                lo = e.seq;
                hi = e.seq.saturating_mul(2).max(hi.saturating_add(1));
            }
            _ => break,
        }
    }
    while hi - lo > 1 && probes < PROBES_MAX {
        probes += 1;
        let mid = lo + (hi - lo) / 2;
        match first_after(mid).await? {
            Some(e) if e.at < since => lo = e.seq.min(hi),
            _ => hi = mid,
        }
    }
    let mut out = Vec::new();
    let mut after = lo;
    loop {
        let page = store.events_since(after, PAGE).await?;
        let Some(last) = page.last() else { return Ok((out, false)) };
        after = last.seq;
        let full = page.len() == PAGE as usize;
        for e in page {
            if e.at >= since {
                if out.len() == max {
                    return Ok((out, true));
                }
                out.push(e);
            }
        }
        if !full {
            return Ok((out, false));
        }
    }
}
