//! Coalescing of concurrent reads of one costly document (`GET /queue`): requests
//! that arrive while it is being built wait for the next build instead of each
//! starting their own, so 32 clients cost the store about one build at a time,
//! not 32.
//!
//! Freshness is not traded away: an answer is always built by a run that
//! *started after* the request arrived, so it reflects the store at some moment
//! after the request was made — what a request served alone would give. A request
//! waits for at most the build in flight when it arrived plus one more.

use std::future::Future;

use axum::body::Bytes;
use tokio::sync::Mutex;

/// The last build, and the ticket of the run that made it.
#[derive(Default)]
struct Last {
    /// Tickets handed out so far; a run takes the next one as it starts.
    started: u64,
    /// The ticket and result of the last run that finished.
    done: Option<(u64, Bytes)>,
}

/// One document built by at most one run at a time, shared by the requests that
/// waited for it.
#[derive(Default)]
pub(crate) struct Coalesced {
    /// Held for the whole of a run: runs never overlap, and waiters queue here.
    last: Mutex<Last>,
    /// `Last::started` as of the last run's start, readable without the lock so
    /// an arriving request can note where it stands.
    started: std::sync::atomic::AtomicU64,
}

impl Coalesced {
    /// The document as built by a run that started after this call began.
    ///
    /// # Errors
    /// The error of the run this request itself made; a failed run is not shared
    /// (the next waiter tries again).
    pub(crate) async fn get<E, F, Fut>(&self, build: F) -> Result<Bytes, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Bytes, E>>,
    {
        use std::sync::atomic::Ordering;
        let arrived = self.started.load(Ordering::Acquire);
        let mut last = self.last.lock().await;
        if let Some((ticket, doc)) = &last.done
            && *ticket > arrived
        {
            return Ok(doc.clone());
        }
        last.started += 1;
        let ticket = last.started;
        self.started.store(ticket, Ordering::Release);
        let doc = build().await?;
        last.done = Some((ticket, doc.clone()));
        Ok(doc)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;

    /// Concurrent requests share builds, and each answer comes from a build that
    /// started after its request arrived.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_requests_share_builds_that_started_after_they_arrived() {
        let c = Arc::new(Coalesced::default());
        let version = Arc::new(AtomicU64::new(0));
        let builds = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for _ in 0..64 {
            let (c, version, builds) = (Arc::clone(&c), Arc::clone(&version), Arc::clone(&builds));
            tasks.push(tokio::spawn(async move {
                // The "store" moves on before the request: its answer must see it.
                let seen_before = version.fetch_add(1, Ordering::SeqCst) + 1;
                let doc = c
                    .get(|| async {
                        builds.fetch_add(1, Ordering::SeqCst);
                        let v = version.load(Ordering::SeqCst);
                        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                        Ok::<_, ()>(Bytes::from(v.to_string()))
                    })
                    .await
                    .unwrap();
                let got: u64 = std::str::from_utf8(&doc).unwrap().parse().unwrap();
                assert!(got >= seen_before, "an answer older than its request: {got} < {seen_before}");
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let n = builds.load(Ordering::SeqCst);
        assert!((1..64).contains(&n), "{n} builds for 64 concurrent requests");
    }

    #[tokio::test]
    async fn a_failed_build_is_not_shared() {
        let c = Coalesced::default();
        assert_eq!(c.get(|| async { Err::<Bytes, _>("down") }).await, Err("down"));
        assert_eq!(c.get(|| async { Ok::<_, &str>(Bytes::from("up")) }).await, Ok(Bytes::from("up")));
    }
}
