//! Rendering the role prompt an agent reads from `ORCH_PROMPT_FILE`, with
//! orch-agents' templates (or the repo's own, `prompts = "…"`): the item, the
//! stage and attempt, the artifacts earlier stages left under
//! `docs/work-items/<KEY>/` and reported in their verdicts, and why the previous
//! attempt failed (its reason, the red gate and its output's tail, or the
//! verdict's summary), so a retry knows what went wrong. `orch prompt show`
//! renders the same text.

use std::path::{Path, PathBuf};

use orch_agents::prompt::{self as templates, PromptInput};
use orch_core::config::Config;
use orch_core::{RoleName, StageName};
use orch_store::{Item, Job, JobId, Store};

use crate::ctx::Ctx;
use crate::layout::Layout;
use crate::{Error, untrusted};

/// Bounds on what of an earlier stage's artifact goes into a prompt.
const MAX_ARTIFACT_FILES: usize = 8;
const MAX_ARTIFACT_BYTES: u64 = 16 * 1024;
/// A template larger than this is refused (the built-in one is used instead).
const MAX_TEMPLATE_BYTES: u64 = 256 * 1024;
/// How much of a red gate's log the prompt quotes.
const GATE_TAIL_BYTES: usize = 2 * 1024;

/// Renders the prompt for `job` on `item` (as read when the job started: the
/// prompt uses only fields no stage changes), writes it to `path` and returns
/// its text.
pub(crate) async fn write(ctx: &Ctx, job: &Job, item: &Item, role: &RoleName, path: &Path) -> Result<String, Error> {
    let verdict = ctx.layout.verdict_file(job.id);
    let text = ctx
        .within_lease(render(
            &*ctx.store,
            &ctx.config,
            &ctx.layout,
            item,
            &job.stage,
            role,
            job.attempt,
            Some(job.id),
            &verdict,
        ))
        .await?;
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

/// The prompt an agent of `role` gets for `item` at `stage`, attempt `attempt`.
/// `this_job` is left out of "the previous attempt".
///
/// # Errors
/// A store error reading the item's jobs.
#[allow(clippy::too_many_arguments)]
pub async fn render(
    store: &dyn Store,
    config: &Config,
    layout: &Layout,
    item: &Item,
    stage: &StageName,
    role: &RoleName,
    attempt: u32,
    this_job: Option<JobId>,
    verdict_file: &Path,
) -> Result<String, orch_store::Error> {
    let jobs = store.jobs_for_item(&item.key).await?;
    let earlier: Vec<&Job> = jobs.iter().filter(|j| Some(j.id) != this_job).collect();
    let worktree = layout.workdir(&item.key);
    let last_failure =
        match earlier.iter().rev().find(|j| j.status == orch_core::JobStatus::Failed || j.reason.is_some()) {
            Some(j) => Some(failure(store, j).await?),
            None => None,
        };
    let input = PromptInput {
        key: item.key.to_string(),
        kind: item.kind.to_string(),
        title: item.title.clone(),
        body: item.body.clone(),
        stage: stage.to_string(),
        role: role.to_string(),
        attempt,
        worktree: worktree.display().to_string(),
        artifacts: artifacts(&item.key.to_string(), &worktree, &earlier).await,
        last_failure,
        verdict_file: verdict_file.display().to_string(),
    };
    let folder = config.repo(&item.repo).and_then(|r| r.prompts.as_ref()).map(|p| config.resolve_path(p));
    let frame = template(folder.as_ref().map(|f| f.join("common.md"))).await;
    let brief = template(folder.as_ref().map(|f| f.join(format!("{role}.md")))).await;
    Ok(templates::render(
        frame.as_deref().unwrap_or(templates::COMMON),
        brief.as_deref().unwrap_or_else(|| templates::role_brief(role.as_str())),
        &input,
    ))
}

/// A repo's template, if it has one there (read bounded, without following links).
async fn template(path: Option<PathBuf>) -> Option<String> {
    let path = path?;
    match untrusted::read(&path, MAX_TEMPLATE_BYTES).await {
        Ok(bytes) => Some(String::from_utf8_lossy(&bytes).into_owned()),
        Err(untrusted::ReadError::Missing { .. }) => None,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "prompt template refused; using the built-in one");
            None
        }
    }
}

/// Why job `j` failed, with the red gate's output tail where a gate said no.
async fn failure(store: &dyn Store, j: &Job) -> Result<String, orch_store::Error> {
    let mut text = format!(
        "Attempt {} of stage {} failed: {}",
        j.attempt,
        j.stage,
        j.reason.as_deref().unwrap_or("no reason recorded")
    );
    if let Some(summary) = j.verdict.as_ref().and_then(|v| v.get("summary")).and_then(|s| s.as_str()) {
        text.push_str(&format!("\nIts verdict's summary: {summary}"));
    }
    let gates = store.gate_results(j.id).await?;
    if let Some(red) = gates.iter().find(|g| !g.passed) {
        text.push_str(&format!("\nThe red gate: {} ({})", red.gate, red.reason.as_deref().unwrap_or("failed")));
        let log = j.log_path.as_ref().and_then(|p| Path::new(p).parent().map(Path::to_path_buf));
        if let Some(dir) = log {
            let file = dir.join(format!("job-{}.e{}.gate-{}.log", j.id, j.epoch, red.gate));
            if let Ok(bytes) = untrusted::read(&file, 4 * 1024 * 1024).await {
                let tail = String::from_utf8_lossy(&bytes[bytes.len().saturating_sub(GATE_TAIL_BYTES)..]).into_owned();
                text.push_str(&format!("\nThe end of its output:\n\n```\n{}\n```", tail.trim_end()));
            }
        }
    }
    Ok(text)
}

/// Earlier stages' artifacts: files under `docs/work-items/<KEY>/` in the
/// worktree (quoted, bounded) and paths the verdicts reported.
async fn artifacts(key: &str, worktree: &Path, earlier: &[&Job]) -> Vec<(String, Option<String>)> {
    let dir = worktree.join("docs/work-items").join(key);
    let listed = tokio::task::spawn_blocking(move || {
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .map(|rd| {
                rd.flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
                    .filter_map(|e| e.file_name().into_string().ok())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names.truncate(MAX_ARTIFACT_FILES);
        names
    })
    .await
    .unwrap_or_default();
    let mut out = Vec::new();
    for name in listed {
        let rel = format!("docs/work-items/{key}/{name}");
        let text = match untrusted::read(&worktree.join(&rel), MAX_ARTIFACT_BYTES).await {
            Ok(bytes) => Some(String::from_utf8_lossy(&bytes).into_owned()),
            Err(untrusted::ReadError::TooLarge { .. }) => {
                Some(format!("(larger than {MAX_ARTIFACT_BYTES} bytes: read it in the worktree)"))
            }
            Err(_) => None,
        };
        out.push((rel, text));
    }
    let reported = earlier
        .iter()
        .filter_map(|j| j.verdict.as_ref()?.get("artifacts")?.as_array().cloned())
        .flatten()
        .filter_map(|a| a.as_str().map(str::to_owned));
    for path in reported {
        if !out.iter().any(|(p, _)| *p == path) {
            out.push((path, None));
        }
    }
    out
}
