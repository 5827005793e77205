//! Decoding the SQLite store's rows into the store's types; a value that does not
//! decode is `Error::Corrupt`, naming its table and column.

use super::*;

pub(super) fn corrupt(table: &'static str, reason: impl std::fmt::Display) -> Error {
    Error::Corrupt { table, reason: reason.to_string() }
}

pub(super) fn col<T: FromSql>(r: &Row<'_>, table: &'static str, name: &'static str) -> Result<T> {
    r.get(name).map_err(|e| corrupt(table, format!("column {name}: {e}")))
}

pub(super) fn parse<T: FromStr>(table: &'static str, name: &'static str, s: &str) -> Result<T>
where
    T::Err: std::fmt::Display,
{
    s.parse().map_err(|e: T::Err| corrupt(table, format!("column {name}: {e}")))
}

pub(super) fn json_col(r: &Row<'_>, table: &'static str, name: &'static str) -> Result<Option<Value>> {
    col::<Option<String>>(r, table, name)?
        .map(|s| serde_json::from_str(&s).map_err(|e| corrupt(table, format!("column {name}: {e}"))))
        .transpose()
}

pub(super) fn ts(v: Option<i64>) -> Option<Timestamp> {
    v.map(Timestamp::from_millis)
}

pub(super) fn to_i32(table: &'static str, name: &'static str, v: Option<i64>) -> Result<Option<i32>> {
    v.map(|v| i32::try_from(v).map_err(|_| corrupt(table, format!("column {name}: {v} out of range")))).transpose()
}

/// Decodes one job row (selected with `job_columns!`).
pub(super) fn job_from_row(r: &Row<'_>) -> Result<Job> {
    const T: &str = "jobs";
    let attempt: i64 = col(r, T, "attempt")?;
    Ok(Job {
        id: JobId(col(r, T, "id")?),
        item: parse(T, "item", &col::<String>(r, T, "item")?)?,
        stage: StageName::new(col::<String>(r, T, "stage")?),
        attempt: u32::try_from(attempt).map_err(|_| corrupt(T, format!("column attempt: {attempt}")))?,
        status: parse::<JobStatus>(T, "status", &col::<String>(r, T, "status")?)?,
        owner: col(r, T, "owner")?,
        epoch: col(r, T, "epoch")?,
        lease_expires_at: ts(col(r, T, "lease_expires_at")?),
        heartbeat_at: ts(col(r, T, "heartbeat_at")?),
        pid: to_i32(T, "pid", col(r, T, "pid")?)?,
        pgid: to_i32(T, "pgid", col(r, T, "pgid")?)?,
        proc_start: col(r, T, "proc_start")?,
        queued_at: Timestamp::from_millis(col(r, T, "queued_at")?),
        started_at: ts(col(r, T, "started_at")?),
        finished_at: ts(col(r, T, "finished_at")?),
        exit_code: to_i32(T, "exit_code", col(r, T, "exit_code")?)?,
        reason: col(r, T, "reason")?,
        verdict: json_col(r, T, "verdict")?,
        log_path: col(r, T, "log_path")?,
        usage: json_col(r, T, "usage")?.map(|v| common::usage_from(T, v)).transpose()?,
    })
}

/// Decodes the pull request in a row (selected with `pr_columns!`); `None` when the
/// row has none (an item without a PR, through the LEFT JOIN).
pub(super) fn pr_from_row(r: &Row<'_>) -> Result<Option<PullRequest>> {
    const T: &str = "prs";
    let Some(item) = col::<Option<String>>(r, T, "pr_item")? else { return Ok(None) };
    let checks = json_col(r, T, "pr_checks")?.ok_or_else(|| corrupt(T, "column checks is null"))?;
    Ok(Some(PullRequest {
        url: col(r, T, "pr_url")?,
        state: col(r, T, "pr_state")?,
        merge_sha: col(r, T, "pr_merge_sha")?,
        item: parse(T, "item", &item)?,
        number: col(r, T, "pr_number")?,
        repo: col(r, T, "pr_repo")?,
        title: col(r, T, "pr_title")?,
        body: col(r, T, "pr_body")?,
        branch: col(r, T, "pr_branch")?,
        head_sha: col(r, T, "pr_head_sha")?,
        checks: common::pr_checks_from_json(checks)?,
        created_at: Timestamp::from_millis(col(r, T, "pr_created_at")?),
        updated_at: Timestamp::from_millis(col(r, T, "pr_updated_at")?),
    }))
}

/// A PR row that must be there (selected with `pr_select!`).
pub(super) fn some_pr_from_row(r: &Row<'_>) -> Result<PullRequest> {
    pr_from_row(r)?.ok_or_else(common::missing_pr_item)
}

/// Decodes one gate result row.
pub(super) fn gate_result_from_row(r: &Row<'_>) -> Result<GateResult> {
    const T: &str = "gate_results";
    Ok(GateResult {
        gate: col(r, T, "gate")?,
        passed: col(r, T, "passed")?,
        exit_code: to_i32(T, "exit_code", col(r, T, "exit_code")?)?,
        metric: col(r, T, "metric")?,
        duration_ms: col(r, T, "duration_ms")?,
        reason: col(r, T, "reason")?,
        sha: col(r, T, "sha")?,
    })
}

/// Decodes one item row (selected with `ITEM_SELECT`).
pub(super) fn item_from_row(r: &Row<'_>) -> Result<Item> {
    const T: &str = "items";
    let attempts: String = col(r, T, "attempts")?;
    let pr = pr_from_row(r)?;
    Ok(Item {
        key: parse(T, "key", &col::<String>(r, T, "key")?)?,
        repo: col(r, T, "repo")?,
        kind: parse::<ItemKind>(T, "kind", &col::<String>(r, T, "kind")?)?,
        title: col(r, T, "title")?,
        body: col(r, T, "body")?,
        track: TrackName::new(col::<String>(r, T, "track")?),
        stage: StageName::new(col::<String>(r, T, "stage")?),
        status: parse::<ItemStatus>(T, "status", &col::<String>(r, T, "status")?)?,
        version: col(r, T, "version")?,
        attempts: serde_json::from_str(&attempts).map_err(|e| corrupt(T, format!("column attempts: {e}")))?,
        branch: col(r, T, "branch")?,
        head_sha: col(r, T, "head_sha")?,
        pr,
        created_at: Timestamp::from_millis(col(r, T, "created_at")?),
        updated_at: Timestamp::from_millis(col(r, T, "updated_at")?),
    })
}

/// Decodes one event row (selected with `event_columns!`).
pub(super) fn event_from_row(r: &Row<'_>) -> Result<Event> {
    const T: &str = "events";
    Ok(Event {
        seq: col(r, T, "seq")?,
        at: Timestamp::from_millis(col(r, T, "at")?),
        item: parse(T, "item", &col::<String>(r, T, "item")?)?,
        job: col::<Option<i64>>(r, T, "job")?.map(JobId),
        kind: col(r, T, "kind")?,
        from: col(r, T, "from_")?,
        to: col(r, T, "to_")?,
        epoch: col(r, T, "epoch")?,
        reason: col(r, T, "reason")?,
        data: json_col(r, T, "data")?.unwrap_or(Value::Null),
    })
}

/// Decodes one node row (selected with `node_columns!`).
pub(super) fn node_from_row(r: &Row<'_>) -> Result<NodeRecord> {
    const T: &str = "nodes";
    let pid: i64 = col(r, T, "pid")?;
    Ok(NodeRecord {
        id: col(r, T, "id")?,
        incarnation: col(r, T, "incarnation")?,
        host: col(r, T, "host")?,
        pid: i32::try_from(pid).map_err(|_| corrupt(T, format!("column pid: {pid} out of range")))?,
        data_dir: col(r, T, "data_dir")?,
        started_at: Timestamp::from_millis(col(r, T, "started_at")?),
        last_seen: Timestamp::from_millis(col(r, T, "last_seen")?),
        stopped_at: ts(col(r, T, "stopped_at")?),
        clock_offset_ms: col(r, T, "clock_offset_ms")?,
    })
}

pub(super) fn active_job_from_row(r: &Row<'_>) -> Result<ActiveJob> {
    const T: &str = "jobs";
    Ok(ActiveJob {
        id: JobId(col(r, T, "id")?),
        item: parse(T, "item", &col::<String>(r, T, "item")?)?,
        stage: StageName::new(col::<String>(r, T, "stage")?),
        status: parse::<JobStatus>(T, "status", &col::<String>(r, T, "status")?)?,
        owner: col(r, T, "owner")?,
        epoch: col(r, T, "epoch")?,
        started_at: ts(col(r, T, "started_at")?),
        lease_expires_at: ts(col(r, T, "lease_expires_at")?),
    })
}
