//! Rendering the role prompt an agent reads from `ORCH_PROMPT_FILE`: the item's
//! title and body, the stage and attempt, the artifacts earlier stages reported and
//! the reason the last job failed, so a retry knows what went wrong.

use std::fmt::Write as _;
use std::path::Path;

use orch_core::RoleName;
use orch_store::Job;

use crate::ctx::Ctx;
use crate::{Error, untrusted};

/// Renders the prompt, writes it to `path` and returns its text.
pub(crate) async fn write(ctx: &Ctx, job: &Job, role: &RoleName, path: &Path) -> Result<String, Error> {
    let item = ctx.within_lease(ctx.store.get_item(&job.item)).await?.ok_or(Error::Vanished(job.id))?;
    let jobs = ctx.within_lease(ctx.store.jobs_for_item(&job.item)).await?;
    let mut text = String::new();
    let _ = writeln!(text, "# {} — {}\n", item.key, item.title);
    let _ = writeln!(
        text,
        "You are the **{role}** for stage **{}** (attempt {}) of item {} ({}).\n",
        job.stage, job.attempt, item.key, item.kind
    );
    if !item.body.is_empty() {
        let _ = writeln!(text, "## Description\n\n{}\n", item.body);
    }
    let artifacts: Vec<String> = jobs
        .iter()
        .filter_map(|j| j.verdict.as_ref()?.get("artifacts")?.as_array().cloned())
        .flatten()
        .filter_map(|a| a.as_str().map(str::to_owned))
        .collect();
    if !artifacts.is_empty() {
        let _ = writeln!(text, "## Artifacts from earlier stages\n");
        for a in artifacts {
            let _ = writeln!(text, "- {a}");
        }
        let _ = writeln!(text);
    }
    if let Some(reason) = jobs.iter().rev().filter(|j| j.id != job.id).find_map(|j| j.reason.clone()) {
        let _ = writeln!(text, "## Last failure\n\n{reason}\n");
    }
    let _ = writeln!(
        text,
        "## When you finish\n\nWrite your verdict as JSON to the file named by ORCH_VERDICT_FILE: \
         {{\"verdict\": \"pass\" | \"fail\" | \"blocked\", \"summary\": \"one line\"}}."
    );
    // Created fresh and exclusively: whatever an earlier agent left at the path
    // (a FIFO, a link to a file elsewhere) is removed, never written through.
    let io = |source| Error::Io { path: path.display().to_string(), source };
    let path = path.to_path_buf();
    let written = text.clone();
    tokio::task::spawn_blocking(move || {
        use std::io::Write as _;
        untrusted::create_fresh(&path)?.write_all(written.as_bytes())
    })
    .await
    .map_err(|e| io(std::io::Error::other(e.to_string())))?
    .map_err(io)?;
    Ok(text)
}
