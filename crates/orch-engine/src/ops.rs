//! Operator actions (`orch item retry|cancel|escalate|approve` and their API
//! twins): decide, then commit with the item's version. Cancel and escalate also
//! cancel the item's active job and bump its epoch, so its owner is fenced out and
//! kills its agent at the next heartbeat.

use orch_core::config::Config;
use orch_core::{DecideError, ItemKey, OperatorAction, Outcome, Timestamp, Transition, decide};
use orch_store::{CommitOutcome, Store, TransitionCommit};

use crate::events::decision_event;

/// Why an operator action was refused.
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    #[error("no item {0}")]
    NoSuchItem(ItemKey),
    #[error("cannot {action} {key}: {source}")]
    Refused {
        action: &'static str,
        key: ItemKey,
        #[source]
        source: DecideError,
    },
    #[error("{0} kept changing while applying the action; try again")]
    Busy(ItemKey),
    #[error(transparent)]
    Store(#[from] orch_store::Error),
}

/// A cancelled item's pull request is closed (rollback and escalation keep it).
/// Best effort: the cancel stands whatever happens here, and an item without a PR
/// has nothing to close.
async fn close_pr(store: &dyn Store, key: &ItemKey, now: Timestamp) {
    let Ok(Some(pr)) = store.get_pr(key).await else { return };
    if pr.state != "open" {
        return;
    }
    let update = orch_store::PrUpdate { state: Some("closed".into()), ..orch_store::PrUpdate::default() };
    if let Err(e) = store.update_pr(key, update, now).await {
        tracing::warn!(item = %key, error = %e, "cannot close the cancelled item's pull request");
    }
}

/// Applies `action` to the item `key` at `now`. Retries a few times if the item's
/// version moves underneath (a job finishing at the same moment).
///
/// # Errors
/// `NoSuchItem`, `Refused` (with the reason, e.g. "cannot approve an item that is running"),
/// `Busy` after repeated version conflicts, or a store error.
pub async fn apply(
    store: &dyn Store,
    config: &Config,
    key: &ItemKey,
    action: OperatorAction,
    now: Timestamp,
) -> Result<Transition, OpError> {
    for _ in 0..5 {
        let item = store.get_item(key).await?.ok_or_else(|| OpError::NoSuchItem(key.clone()))?;
        let t = decide(&item.state(), config, &Outcome::Operator(action)).map_err(|source| OpError::Refused {
            action: action.as_str(),
            key: key.clone(),
            source,
        })?;
        let mut event = decision_event(key, &item.stage, &t);
        event.data["operator"] = serde_json::json!(action.as_str());
        let commit = TransitionCommit {
            item: key.clone(),
            expected_version: item.version,
            job: None,
            next: t.next.clone(),
            cancel_active_jobs: matches!(action, OperatorAction::Cancel | OperatorAction::Escalate),
            events: vec![event],
            enqueue: t.enqueue.clone(),
        };
        match store.commit_transition(commit, now).await? {
            CommitOutcome::Applied { .. } => {
                if action == OperatorAction::Cancel {
                    close_pr(store, key, now).await;
                }
                return Ok(t);
            }
            CommitOutcome::Conflict | CommitOutcome::FencedOut => continue,
        }
    }
    Err(OpError::Busy(key.clone()))
}
