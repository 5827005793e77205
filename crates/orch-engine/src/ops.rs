//! Operator actions (`orch item add|retry|cancel|escalate|approve` and their API
//! twins): one copy of each rule, so the CLI and `POST /items…` cannot drift.
//! Filing an item is checked against the config before the store is touched.
//! Actions decide, then commit with the item's version. Cancel and escalate also
//! cancel the item's active job and bump its epoch, so its owner is fenced out and
//! kills its agent at the next heartbeat.

use orch_core::config::Config;
use orch_core::{
    DecideError, ItemKey, ItemKind, ItemState, OperatorAction, Outcome, Timestamp, TrackName, Transition, decide,
};
use orch_store::{CommitOutcome, NewItem, Store, TransitionCommit};

/// What a person or tool asks for when filing an item (`orch item add`,
/// `POST /items`), before it is checked against the config.
#[derive(Clone, Debug, Default)]
pub struct ItemRequest {
    /// A `[[repos]]` name.
    pub repo: String,
    /// `bug`, `feature`, `chore` or `incident`.
    pub kind: String,
    pub title: String,
    pub body: String,
    /// The track to start on; `None` takes the repo's track for the kind.
    pub track: Option<String>,
}

/// Why an item request was refused, naming the request's field at fault.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct InvalidItem {
    /// `repo`, `kind`, `title` or `track`.
    pub field: &'static str,
    pub message: String,
}

fn invalid(field: &'static str, message: impl Into<String>) -> InvalidItem {
    InvalidItem { field, message: message.into() }
}

/// The item to create for `req`: its repo's key prefix, its kind, and its track's
/// first stage. Pure: the store is not touched.
///
/// # Errors
/// `InvalidItem` naming the field: an unknown repo or track (with the known
/// ones), a kind orch does not have, an empty title, or a repo with no track for
/// the kind and none given.
pub fn new_item(config: &Config, req: &ItemRequest) -> Result<NewItem, InvalidItem> {
    let Some(repo) = config.repo(&req.repo) else {
        let known: Vec<&str> = config.repos.iter().map(|r| r.name.as_str()).collect();
        return Err(invalid("repo", format!("unknown repo {:?}; the config has: {}", req.repo, known.join(", "))));
    };
    let kind: ItemKind = req.kind.parse().map_err(|e| invalid("kind", format!("{e}")))?;
    let track = match &req.track {
        Some(t) => TrackName::new(t.as_str()),
        None => repo.track_for(kind).cloned().ok_or_else(|| {
            invalid("track", format!("repo {} names no track for {kind} items; name a track", repo.name))
        })?,
    };
    let Some(first) = config.first_stage(&track) else {
        let known: Vec<&str> = config.tracks.keys().map(TrackName::as_str).collect();
        return Err(invalid("track", format!("unknown track \"{track}\"; the config has: {}", known.join(", "))));
    };
    if req.title.trim().is_empty() {
        return Err(invalid("title", "the title must not be empty"));
    }
    Ok(NewItem {
        repo: repo.name.clone(),
        prefix: repo.key.clone(),
        kind,
        title: req.title.clone(),
        body: req.body.clone(),
        state: ItemState::new(track, first.clone()),
    })
}

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
            claim_next: None,
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
