//! `orch item retry|cancel|escalate|approve KEY`: operator actions, applied to the
//! store directly (no server needed). A running node notices at its next lease
//! heartbeat: a cancelled or escalated item's agent is killed and its job fenced.

use std::path::Path;
use std::process::ExitCode;

use orch_core::{ItemKey, OperatorAction};
use orch_engine::clock::{Clock as _, SystemClock};

use crate::context;

/// Applies `action` to the item `key` and prints the decision.
pub(crate) fn run(config_path: &Path, key: &str, action: OperatorAction, json: bool) -> anyhow::Result<ExitCode> {
    let key: ItemKey = key.parse()?;
    context::with_store(config_path, |config, store| async move {
        let t = orch_engine::ops::apply(store.as_ref(), &config, &key, action, SystemClock.now()).await?;
        if json {
            let doc = orch_server::shapes::transition(&key, action, &t);
            println!("{}", serde_json::to_string_pretty(&doc)?);
        } else {
            println!(
                "{key}: {} -> {} at {} on {} (version {})",
                action.as_str(),
                t.next.status,
                t.next.stage,
                t.next.track,
                t.next.version
            );
        }
        Ok(ExitCode::SUCCESS)
    })
}
