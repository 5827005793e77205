//! Budgets per item (`max_cost_usd`, `max_tokens`, `max_agent_s`), set per repo
//! or per track: what an item's agent runs may consume in all. A run that pushes
//! its item over is stopped, its job fails with a reason starting [`BUDGET`],
//! and the finalizer blocks the item for a human instead of retrying.
//!
//! The check runs on the agent's usage as its stream reports it (each line), on
//! top of what the item's earlier jobs recorded; agent seconds are measured on
//! the node's clock.

use std::sync::Arc;

use orch_core::Usage;
use orch_store::Job;

use crate::agent_stream::BudgetCheck;
use crate::ctx::Ctx;

/// How the reason of a job stopped by a budget starts.
pub(crate) const BUDGET: &str = "budget: ";

/// The check a run's stream watch applies to the run's usage so far, or `None`
/// when no budget applies to the job's item (or its records cannot be read, in
/// which case the run goes on unlimited rather than failing: a budget is a
/// guard, not a precondition).
pub(crate) async fn check(ctx: &Arc<Ctx>, job: &Job) -> Option<BudgetCheck> {
    let item = ctx.within_lease(ctx.store.get_item(&job.item)).await.ok()??;
    let budgets = ctx.config.budgets_for(&item.repo, &item.track);
    if budgets.is_empty() {
        return None;
    }
    let jobs = ctx.within_lease(ctx.store.jobs_for_item(&job.item)).await.ok()?;
    let earlier = || jobs.iter().filter(|j| j.id != job.id);
    let prior = earlier().filter_map(|j| j.usage.as_ref()).fold(Usage::default(), |acc, u| acc.plus(u));
    let prior_ms: i64 = earlier()
        .filter_map(|j| Some(j.finished_at?.as_millis() - j.started_at?.as_millis()))
        .filter(|ms| *ms > 0)
        .sum();
    let started = ctx.now().as_millis();
    let key = job.item.clone();
    let ctx = ctx.clone();
    Some(Box::new(move |live: &Usage| {
        let used = prior.plus(live);
        let agent_s = (prior_ms + (ctx.now().as_millis() - started).max(0)) as f64 / 1000.0;
        budgets.iter().find_map(|(name, b)| b.breached(&used, agent_s).map(|why| format!("item {key}: {why} ({name})")))
    }))
}
