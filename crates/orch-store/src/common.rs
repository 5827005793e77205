//! What both backends share: the column lists, the checks made before a commit,
//! the shape of the `data` the store itself writes into events, key allocation and
//! URL redaction; plus the sqlx row decoding and error mapping (sqlx serves the
//! PostgreSQL backend; SQLite runs on rusqlite and decodes its own rows). Kept in
//! one place so the two SQL dialects cannot drift apart on anything but SQL.

use std::collections::BTreeMap;
use std::num::NonZeroU64;

use orch_core::{EventKind, ItemKey, ItemStatus, JobStatus, KeyPrefix, StageName, Timestamp};
use serde_json::{Value, json};
use sqlx::types::Json;
use sqlx::{ColumnIndex, Decode, Row, Type};

use crate::{
    ActiveJob, Error, Event, GateResult, Item, Job, JobId, NewEvent, NewPr, NodeRecord, PrCheck, PrUpdate, PullRequest,
    Result,
};

/// The columns `job_from_row` reads, in one place so every job query selects the same.
macro_rules! job_columns {
    () => {
        "id, item, stage, attempt, status, owner, epoch, lease_expires_at, heartbeat_at, pid, pgid, \
         proc_start, queued_at, started_at, finished_at, exit_code, reason, verdict, log_path, usage"
    };
}
pub(crate) use job_columns;

/// The same columns qualified with the table alias `j`, for joins and CTEs.
macro_rules! job_columns_j {
    () => {
        "j.id, j.item, j.stage, j.attempt, j.status, j.owner, j.epoch, j.lease_expires_at, \
         j.heartbeat_at, j.pid, j.pgid, j.proc_start, j.queued_at, j.started_at, j.finished_at, \
         j.exit_code, j.reason, j.verdict, j.log_path, j.usage"
    };
}
pub(crate) use job_columns_j;

/// The pull request columns `pr_from_row` reads, from the table alias `p`, each
/// named `pr_*`: one list serves the PR queries and the items' LEFT JOIN alike, so
/// `Item.pr` and `get_pr` cannot disagree on a field.
macro_rules! pr_columns {
    () => {
        "p.item AS pr_item, p.number AS pr_number, p.repo AS pr_repo, p.title AS pr_title, \
         p.body AS pr_body, p.branch AS pr_branch, p.head_sha AS pr_head_sha, p.url AS pr_url, \
         p.state AS pr_state, p.merge_sha AS pr_merge_sha, p.checks AS pr_checks, \
         p.created_at AS pr_created_at, p.updated_at AS pr_updated_at"
    };
}
pub(crate) use pr_columns;

/// `SELECT` of pull requests (`prs p`); the caller adds `WHERE …`.
macro_rules! pr_select {
    () => {
        concat!("SELECT ", $crate::common::pr_columns!(), " FROM prs p ")
    };
}
pub(crate) use pr_select;

/// The item columns `item_from_row` reads (items `i` left-joined with prs `p`), so
/// an item and its whole PR come back in one query.
macro_rules! item_select {
    () => {
        concat!(
            "SELECT i.key, i.repo, i.kind, i.title, i.body, i.track, i.stage, i.status, i.version, \
             i.attempts, i.branch, i.head_sha, i.created_at, i.updated_at, ",
            $crate::common::pr_columns!(),
            " FROM items i LEFT JOIN prs p ON p.item = i.key "
        )
    };
}
pub(crate) use item_select;

/// The event columns `event_from_row` reads.
macro_rules! event_columns {
    () => {
        "seq, at, item, job, kind, from_, to_, epoch, reason, data"
    };
}
pub(crate) use event_columns;

/// The node columns `node_from_row` reads.
macro_rules! node_columns {
    () => {
        "id, incarnation, host, pid, data_dir, started_at, last_seen, stopped_at, clock_offset_ms"
    };
}
pub(crate) use node_columns;

/// A redacted URL (password removed) for error messages and logs.
pub(crate) fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let (authority, tail) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            if userinfo.contains(':') {
                format!("{scheme}://{user}:***@{host}{tail}")
            } else {
                format!("{scheme}://{user}@{host}{tail}")
            }
        }
        None => url.to_owned(),
    }
}

/// PostgreSQL SQLSTATE classes that mean the server cannot serve us now.
fn pg_unavailable(code: &str) -> bool {
    code.starts_with("08") // connection exception
        || code.starts_with("28") // invalid authorization
        || code.starts_with("53") // insufficient resources
        || code.starts_with("57P") // operator intervention (shutdown)
        || code == "3D000" // database does not exist
}

/// Maps a driver error to the backend-neutral kinds, naming `url` where the store
/// itself is the problem.
pub(crate) fn map_err(url: &str, err: sqlx::Error) -> Error {
    match err {
        sqlx::Error::Io(e) => Error::Unavailable { url: url.to_owned(), reason: e.to_string() },
        sqlx::Error::Tls(e) => Error::Unavailable { url: url.to_owned(), reason: format!("TLS: {e}") },
        sqlx::Error::PoolTimedOut => {
            Error::Unavailable { url: url.to_owned(), reason: "timed out waiting for a database connection".into() }
        }
        sqlx::Error::PoolClosed => {
            Error::Unavailable { url: url.to_owned(), reason: "the store has been closed".into() }
        }
        sqlx::Error::Configuration(e) => Error::Unavailable { url: url.to_owned(), reason: format!("bad URL: {e}") },
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
            if pg_unavailable(&code) {
                return Error::Unavailable {
                    url: url.to_owned(),
                    reason: format!("{} (SQLSTATE {code})", db.message()),
                };
            }
            Error::Database(format!("{} (code {code})", db.message()))
        }
        sqlx::Error::ColumnDecode { index, source } => {
            Error::Corrupt { table: "row", reason: format!("column {index}: {source}") }
        }
        sqlx::Error::Decode(e) => Error::Corrupt { table: "row", reason: e.to_string() },
        other => Error::Database(other.to_string()),
    }
}

/// Whether `err` is a unique-constraint violation (the one-active-job-per-item
/// index, or a key collision).
pub(crate) fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.kind() == sqlx::error::ErrorKind::UniqueViolation)
}

/// Whether `err` is a PostgreSQL deadlock or serialization failure, which are safe
/// to retry from the start of the transaction.
pub(crate) fn is_retryable(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if matches!(db.code().as_deref(), Some("40001" | "40P01")))
}

/// Builds a key from the counter value the store allocated.
pub(crate) fn item_key(prefix: &KeyPrefix, number: i64) -> Result<ItemKey> {
    let n = u64::try_from(number).ok().and_then(NonZeroU64::new).ok_or_else(|| Error::Corrupt {
        table: "key_counters",
        reason: format!("prefix {prefix} allocated number {number}"),
    })?;
    Ok(ItemKey::new(prefix.clone(), n))
}

/// The `data` of a transition event: the caller's data with `version` (the item's
/// version before the transition) merged in, so the audit can check that no two
/// transitions leave one version (I2).
pub(crate) fn transition_data(data: &Value, expected_version: i64) -> Value {
    match data {
        Value::Object(map) => {
            let mut map = map.clone();
            map.insert("version".into(), json!(expected_version));
            Value::Object(map)
        }
        Value::Null => json!({ "version": expected_version }),
        other => json!({ "version": expected_version, "value": other }),
    }
}

/// The events a transition appends from the caller's list: each owned by the
/// transition's item and, where unset, its job and epoch, with the
/// pre-transition version merged into transition events' data. One copy for
/// every backend and path, so the log is the same whichever wrote it.
pub(crate) fn commit_events(commit: &crate::TransitionCommit) -> Vec<crate::NewEvent> {
    let job = commit.job.as_ref();
    commit
        .events
        .iter()
        .map(|ev| crate::NewEvent {
            item: commit.item.clone(),
            job: ev.job.or(job.map(|j| j.id)),
            kind: ev.kind,
            from: ev.from.clone(),
            to: ev.to.clone(),
            epoch: ev.epoch.or(job.map(|j| j.epoch)),
            reason: ev.reason.clone(),
            data: event_data(ev.kind, &ev.data, Some(commit.expected_version)),
        })
        .collect()
}

/// Why an operator's transition cancelled the jobs in flight (`job.cancelled`).
pub(crate) fn cancel_reason(commit: &crate::TransitionCommit) -> String {
    format!("cancelled by the transition of {} from version {}", commit.item, commit.expected_version)
}

/// What a transition whose job row did not match means, from the item that
/// job id belongs to (`None`: no such job): the job ended or moved on to
/// another epoch (fenced out), or the request named a job that is not there.
pub(crate) fn job_miss(
    commit: &crate::TransitionCommit,
    job: crate::JobId,
    owner_item: Option<String>,
) -> Result<crate::CommitOutcome> {
    let key = commit.item.to_string();
    match owner_item {
        None => Err(Error::NotFound { what: format!("job {job}") }),
        Some(other) if other != key => Err(Error::Invalid(format!("job {job} belongs to {other}, not {key}"))),
        Some(_) => Ok(crate::CommitOutcome::FencedOut),
    }
}

/// What a transition whose item row did not match means: the item is at
/// another version (a conflict), or there is no such item.
pub(crate) fn item_miss(commit: &crate::TransitionCommit, exists: bool) -> Result<crate::CommitOutcome> {
    if exists {
        Ok(crate::CommitOutcome::Conflict)
    } else {
        Err(Error::NotFound { what: format!("item {}", commit.item) })
    }
}

/// The data of `job.started`, on every backend and in `NewEvent::job_started`.
pub(crate) fn started_data(run: &crate::RunInfo) -> Value {
    serde_json::json!({ "pid": run.pid, "pgid": run.pgid, "log_path": run.log_path })
}

/// The data of `job.finished` (see `started_data`).
pub(crate) fn finished_data(exit: &crate::ExitInfo) -> Value {
    serde_json::json!({ "exit_code": exit.exit_code })
}

/// The data an event carries: for a transition, the caller's data with the
/// pre-transition version merged in; otherwise the caller's data as given.
pub(crate) fn event_data(kind: EventKind, data: &Value, expected_version: Option<i64>) -> Value {
    match expected_version {
        Some(v) if kind.is_transition() => transition_data(data, v),
        _ => data.clone(),
    }
}

/// Refuses an empty value where the store needs one (a branch, a SHA, a URL).
pub(crate) fn require(what: &str, value: &str) -> Result<()> {
    if value.trim().is_empty() { Err(Error::Invalid(format!("{what} must not be empty"))) } else { Ok(()) }
}

/// Refuses a pull request state orch does not know.
pub(crate) fn check_pr_state(state: &str) -> Result<()> {
    if PullRequest::STATES.contains(&state) {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "unknown pull request state {state:?}: expected one of {}",
            PullRequest::STATES.join(", ")
        )))
    }
}

/// Checks a new PR's fields before anything is written.
pub(crate) fn validate_new_pr(new: &NewPr) -> Result<()> {
    require("a pull request's branch", &new.branch)?;
    require("a pull request's head SHA", &new.head_sha)?;
    require("a pull request's URL", &new.url)
}

/// The PR `open_pr` creates for `new` on the item numbered `number`.
pub(crate) fn new_pr(new: NewPr, number: i64, now: Timestamp) -> PullRequest {
    PullRequest {
        url: new.url,
        state: PullRequest::OPEN.to_owned(),
        merge_sha: None,
        item: new.item,
        number,
        repo: new.repo,
        title: new.title,
        body: new.body,
        branch: new.branch,
        head_sha: Some(new.head_sha),
        checks: BTreeMap::new(),
        created_at: now,
        updated_at: now,
    }
}

/// The one copy of `update_pr`'s rules, applied to the stored PR under its row
/// lock (or the single writer) before it is written back: the set fields replace
/// the stored ones, a check replaces its gate's entry, and a merged PR stays
/// merged. On `Err` the PR is unchanged.
pub(crate) fn apply_pr_update(pr: &mut PullRequest, update: PrUpdate, now: Timestamp) -> Result<()> {
    if let Some(state) = &update.state {
        check_pr_state(state)?;
        if pr.state == PullRequest::MERGED && state != PullRequest::MERGED {
            return Err(Error::Invalid(format!(
                "pull request #{} of {} is merged and cannot become {state} (merged -> {state}): a merge is final",
                pr.number, pr.item
            )));
        }
    }
    if let Some((gate, _)) = &update.check {
        require("a check's gate", gate)?;
    }
    let PrUpdate { head_sha, body, state, merge_sha, check } = update;
    if head_sha.is_some() {
        pr.head_sha = head_sha;
    }
    if let Some(body) = body {
        pr.body = body;
    }
    if let Some(state) = state {
        pr.state = state;
    }
    if merge_sha.is_some() {
        pr.merge_sha = merge_sha;
    }
    if let Some((gate, check)) = check {
        pr.checks.insert(gate, check);
    }
    pr.updated_at = now;
    Ok(())
}

/// `update_pr` of an item that has no pull request.
pub(crate) fn no_pr(item: &ItemKey) -> Error {
    Error::NotFound { what: format!("pull request of item {item}") }
}

/// `open_pr` with a branch another item's pull request already has.
pub(crate) fn branch_taken(branch: &str) -> Error {
    Error::Invalid(format!("branch {branch} already has a pull request of another item; each item has its own branch"))
}

/// A row selected with `pr_select!` whose `item` is null, which the schema forbids.
pub(crate) fn missing_pr_item() -> Error {
    corrupt("prs", "column item is null")
}

/// Encodes a PR's checks for the `checks` column.
pub(crate) fn pr_checks_json(checks: &BTreeMap<String, PrCheck>) -> Result<Value> {
    serde_json::to_value(checks).map_err(|e| Error::Invalid(format!("checks cannot be encoded: {e}")))
}

/// Decodes the `checks` column.
pub(crate) fn pr_checks_from_json(value: Value) -> Result<BTreeMap<String, PrCheck>> {
    serde_json::from_value(value).map_err(|e| corrupt("prs", format!("column checks: {e}")))
}

/// An owner's event as stored: the job's item, and the job and epoch where the
/// caller left them unset (as `commit_transition` fills its events).
pub(crate) fn owner_event(ev: &NewEvent, item: &ItemKey, job: JobId, epoch: i64) -> NewEvent {
    NewEvent {
        item: item.clone(),
        job: ev.job.or(Some(job)),
        kind: ev.kind,
        from: ev.from.clone(),
        to: ev.to.clone(),
        epoch: ev.epoch.or(Some(epoch)),
        reason: ev.reason.clone(),
        data: ev.data.clone(),
    }
}

/// The `data` of a gate's event: what the audit and the forge need to know of it.
pub(crate) fn gate_event_data(result: &GateResult) -> Value {
    json!({
        "gate": result.gate, "exit_code": result.exit_code, "metric": result.metric,
        "duration_ms": result.duration_ms, "sha": result.sha,
    })
}

/// Serialises an item's attempts map for the `attempts` TEXT column.
pub(crate) fn attempts_json(attempts: &BTreeMap<StageName, u32>) -> Result<String> {
    serde_json::to_string(attempts).map_err(|e| Error::Invalid(format!("attempts cannot be encoded: {e}")))
}

fn corrupt(table: &'static str, reason: impl std::fmt::Display) -> Error {
    Error::Corrupt { table, reason: reason.to_string() }
}

fn get<'r, R, T>(row: &'r R, table: &'static str, col: &'static str) -> Result<T>
where
    R: Row,
    &'static str: ColumnIndex<R>,
    T: Decode<'r, R::Database> + Type<R::Database>,
{
    row.try_get(col).map_err(|e| corrupt(table, format!("column {col}: {e}")))
}

fn parse<T: std::str::FromStr>(table: &'static str, col: &'static str, s: &str) -> Result<T>
where
    T::Err: std::fmt::Display,
{
    s.parse().map_err(|e: T::Err| corrupt(table, format!("column {col}: {e}")))
}

fn to_i32(table: &'static str, col: &'static str, v: Option<i64>) -> Result<Option<i32>> {
    v.map(|v| i32::try_from(v).map_err(|_| corrupt(table, format!("column {col}: {v} out of range")))).transpose()
}

fn to_u32(table: &'static str, col: &'static str, v: i64) -> Result<u32> {
    u32::try_from(v).map_err(|_| corrupt(table, format!("column {col}: {v} out of range")))
}

fn ts(v: Option<i64>) -> Option<Timestamp> {
    v.map(Timestamp::from_millis)
}

/// Decodes one job row (selected with `job_columns!`).
pub(crate) fn job_from_row<R>(row: &R) -> Result<Job>
where
    R: Row,
    &'static str: ColumnIndex<R>,
    for<'r> i64: Decode<'r, R::Database>,
    i64: Type<R::Database>,
    for<'r> String: Decode<'r, R::Database>,
    String: Type<R::Database>,
    for<'r> Json<Value>: Decode<'r, R::Database>,
    Json<Value>: Type<R::Database>,
{
    const T: &str = "jobs";
    let item: String = get(row, T, "item")?;
    let status: String = get(row, T, "status")?;
    let stage: String = get(row, T, "stage")?;
    let verdict: Option<Json<Value>> = get(row, T, "verdict")?;
    let usage: Option<Json<Value>> = get(row, T, "usage")?;
    Ok(Job {
        id: JobId(get(row, T, "id")?),
        item: parse(T, "item", &item)?,
        stage: StageName::new(stage),
        attempt: to_u32(T, "attempt", get(row, T, "attempt")?)?,
        status: parse::<JobStatus>(T, "status", &status)?,
        owner: get(row, T, "owner")?,
        epoch: get(row, T, "epoch")?,
        lease_expires_at: ts(get(row, T, "lease_expires_at")?),
        heartbeat_at: ts(get(row, T, "heartbeat_at")?),
        pid: to_i32(T, "pid", get(row, T, "pid")?)?,
        pgid: to_i32(T, "pgid", get(row, T, "pgid")?)?,
        proc_start: get(row, T, "proc_start")?,
        queued_at: Timestamp::from_millis(get(row, T, "queued_at")?),
        started_at: ts(get(row, T, "started_at")?),
        finished_at: ts(get(row, T, "finished_at")?),
        exit_code: to_i32(T, "exit_code", get(row, T, "exit_code")?)?,
        reason: get(row, T, "reason")?,
        verdict: verdict.map(|j| j.0),
        log_path: get(row, T, "log_path")?,
        usage: usage.map(|j| usage_from(T, j.0)).transpose()?,
    })
}

/// Decodes the pull request in a row (selected with `pr_columns!`); `None` when the
/// row has none (an item without a PR, through the LEFT JOIN).
pub(crate) fn pr_from_row<R>(row: &R) -> Result<Option<PullRequest>>
where
    R: Row,
    &'static str: ColumnIndex<R>,
    for<'r> i64: Decode<'r, R::Database>,
    i64: Type<R::Database>,
    for<'r> String: Decode<'r, R::Database>,
    String: Type<R::Database>,
    for<'r> Json<Value>: Decode<'r, R::Database>,
    Json<Value>: Type<R::Database>,
{
    const T: &str = "prs";
    let Some(item) = get::<_, Option<String>>(row, T, "pr_item")? else { return Ok(None) };
    // Through the items' LEFT JOIN every PR column decodes as nullable; once the
    // row has a PR, only head_sha and merge_sha may really be null.
    let required = |v: Option<i64>, col: &'static str| v.ok_or_else(|| corrupt(T, format!("column {col} is null")));
    let text = |col: &'static str| -> Result<String> {
        get::<_, Option<String>>(row, T, col)?.ok_or_else(|| corrupt(T, format!("column {col} is null")))
    };
    let checks: Option<Json<Value>> = get(row, T, "pr_checks")?;
    Ok(Some(PullRequest {
        url: text("pr_url")?,
        state: text("pr_state")?,
        merge_sha: get(row, T, "pr_merge_sha")?,
        item: parse(T, "item", &item)?,
        number: required(get(row, T, "pr_number")?, "number")?,
        repo: text("pr_repo")?,
        title: text("pr_title")?,
        body: text("pr_body")?,
        branch: text("pr_branch")?,
        head_sha: get(row, T, "pr_head_sha")?,
        checks: pr_checks_from_json(checks.map_or(Value::Object(Default::default()), |j| j.0))?,
        created_at: Timestamp::from_millis(required(get(row, T, "pr_created_at")?, "created_at")?),
        updated_at: Timestamp::from_millis(required(get(row, T, "pr_updated_at")?, "updated_at")?),
    }))
}

/// Decodes one item row (selected with `item_select!`).
pub(crate) fn item_from_row<R>(row: &R) -> Result<Item>
where
    R: Row,
    &'static str: ColumnIndex<R>,
    for<'r> i64: Decode<'r, R::Database>,
    i64: Type<R::Database>,
    for<'r> String: Decode<'r, R::Database>,
    String: Type<R::Database>,
    for<'r> Json<Value>: Decode<'r, R::Database>,
    Json<Value>: Type<R::Database>,
{
    const T: &str = "items";
    let key: String = get(row, T, "key")?;
    let kind: String = get(row, T, "kind")?;
    let status: String = get(row, T, "status")?;
    let attempts: String = get(row, T, "attempts")?;
    let attempts: BTreeMap<StageName, u32> =
        serde_json::from_str(&attempts).map_err(|e| corrupt(T, format!("column attempts: {e}")))?;
    let pr = pr_from_row(row)?;
    Ok(Item {
        key: parse(T, "key", &key)?,
        repo: get(row, T, "repo")?,
        kind: parse(T, "kind", &kind)?,
        title: get(row, T, "title")?,
        body: get(row, T, "body")?,
        track: orch_core::TrackName::new(get::<_, String>(row, T, "track")?),
        stage: StageName::new(get::<_, String>(row, T, "stage")?),
        status: parse::<ItemStatus>(T, "status", &status)?,
        version: get(row, T, "version")?,
        attempts,
        branch: get(row, T, "branch")?,
        head_sha: get(row, T, "head_sha")?,
        pr,
        created_at: Timestamp::from_millis(get(row, T, "created_at")?),
        updated_at: Timestamp::from_millis(get(row, T, "updated_at")?),
    })
}

/// Decodes one gate result row (`gate, passed, exit_code, metric, duration_ms,
/// reason, sha`).
pub(crate) fn gate_result_from_row<R>(row: &R) -> Result<GateResult>
where
    R: Row,
    &'static str: ColumnIndex<R>,
    for<'r> i64: Decode<'r, R::Database>,
    i64: Type<R::Database>,
    for<'r> f64: Decode<'r, R::Database>,
    f64: Type<R::Database>,
    for<'r> bool: Decode<'r, R::Database>,
    bool: Type<R::Database>,
    for<'r> String: Decode<'r, R::Database>,
    String: Type<R::Database>,
{
    const T: &str = "gate_results";
    Ok(GateResult {
        gate: get(row, T, "gate")?,
        passed: get(row, T, "passed")?,
        exit_code: to_i32(T, "exit_code", get(row, T, "exit_code")?)?,
        metric: get(row, T, "metric")?,
        duration_ms: get(row, T, "duration_ms")?,
        reason: get(row, T, "reason")?,
        sha: get(row, T, "sha")?,
    })
}

/// Decodes one event row (selected with `event_columns!`).
pub(crate) fn event_from_row<R>(row: &R) -> Result<Event>
where
    R: Row,
    &'static str: ColumnIndex<R>,
    for<'r> i64: Decode<'r, R::Database>,
    i64: Type<R::Database>,
    for<'r> String: Decode<'r, R::Database>,
    String: Type<R::Database>,
    for<'r> Json<Value>: Decode<'r, R::Database>,
    Json<Value>: Type<R::Database>,
{
    const T: &str = "events";
    let item: String = get(row, T, "item")?;
    let data: Json<Value> = get(row, T, "data")?;
    Ok(Event {
        seq: get(row, T, "seq")?,
        at: Timestamp::from_millis(get(row, T, "at")?),
        item: parse(T, "item", &item)?,
        job: get::<_, Option<i64>>(row, T, "job")?.map(JobId),
        kind: get(row, T, "kind")?,
        from: get(row, T, "from_")?,
        to: get(row, T, "to_")?,
        epoch: get(row, T, "epoch")?,
        reason: get(row, T, "reason")?,
        data: data.0,
    })
}

/// Decodes one row of the active-jobs listing.
pub(crate) fn active_job_from_row<R>(row: &R) -> Result<ActiveJob>
where
    R: Row,
    &'static str: ColumnIndex<R>,
    for<'r> i64: Decode<'r, R::Database>,
    i64: Type<R::Database>,
    for<'r> String: Decode<'r, R::Database>,
    String: Type<R::Database>,
{
    const T: &str = "jobs";
    let item: String = get(row, T, "item")?;
    let status: String = get(row, T, "status")?;
    Ok(ActiveJob {
        id: JobId(get(row, T, "id")?),
        item: parse(T, "item", &item)?,
        stage: StageName::new(get::<_, String>(row, T, "stage")?),
        status: parse::<JobStatus>(T, "status", &status)?,
        owner: get(row, T, "owner")?,
        epoch: get(row, T, "epoch")?,
        started_at: ts(get(row, T, "started_at")?),
        lease_expires_at: ts(get(row, T, "lease_expires_at")?),
    })
}

/// Decodes one node row (selected with `node_columns!`).
pub(crate) fn node_from_row<R>(row: &R) -> Result<NodeRecord>
where
    R: Row,
    &'static str: ColumnIndex<R>,
    for<'r> i64: Decode<'r, R::Database>,
    i64: Type<R::Database>,
    for<'r> String: Decode<'r, R::Database>,
    String: Type<R::Database>,
{
    const T: &str = "nodes";
    let pid: i64 = get(row, T, "pid")?;
    Ok(NodeRecord {
        id: get(row, T, "id")?,
        incarnation: get(row, T, "incarnation")?,
        host: get(row, T, "host")?,
        pid: i32::try_from(pid).map_err(|_| corrupt(T, format!("column pid: {pid} out of range")))?,
        data_dir: get(row, T, "data_dir")?,
        started_at: Timestamp::from_millis(get(row, T, "started_at")?),
        last_seen: Timestamp::from_millis(get(row, T, "last_seen")?),
        stopped_at: ts(get(row, T, "stopped_at")?),
        clock_offset_ms: get(row, T, "clock_offset_ms")?,
    })
}

/// Whether the node in `row` still holds its id at `now`: it has not stopped and
/// was heard from less than `live_for` ago. The one copy of the liveness rule.
pub(crate) fn node_is_live(row: &NodeRecord, now: Timestamp, live_for: std::time::Duration) -> bool {
    row.stopped_at.is_none() && row.last_seen.add(live_for) > now
}

/// The refusal of a registration under the id of the live node in `row`.
pub(crate) fn node_id_in_use(row: &NodeRecord) -> Error {
    Error::NodeIdInUse {
        id: row.id.clone(),
        host: row.host.clone(),
        pid: row.pid,
        incarnation: row.incarnation.clone(),
        last_seen: row.last_seen,
    }
}

/// Turns `(status, count)` rows into a map holding every status, zero included.
pub(crate) fn counts_with_zeroes<'a>(
    all: impl Iterator<Item = &'a str>,
    rows: impl IntoIterator<Item = (String, i64)>,
) -> BTreeMap<String, i64> {
    let mut map: BTreeMap<String, i64> = all.map(|s| (s.to_owned(), 0)).collect();
    for (status, n) in rows {
        *map.entry(status).or_insert(0) += n;
    }
    map
}

/// Checks the parts of a commit the database cannot: the next version and the
/// job's final status.
pub(crate) fn validate_commit(commit: &crate::TransitionCommit) -> Result<()> {
    if commit.next.version != commit.expected_version + 1 {
        return Err(Error::Invalid(format!(
            "transition of {} from version {} must produce version {}, not {}",
            commit.item,
            commit.expected_version,
            commit.expected_version + 1,
            commit.next.version
        )));
    }
    if let Some(job) = &commit.job
        && !job.status.is_ended()
    {
        return Err(Error::Invalid(format!(
            "job {} must end with done, failed or cancelled, not {}",
            job.id, job.status
        )));
    }
    if commit.claim_next.is_some() && (commit.enqueue.is_none() || commit.cancel_active_jobs) {
        return Err(Error::Invalid(format!(
            "transition of {}: claim_next needs a job to enqueue and no cancel_active_jobs",
            commit.item
        )));
    }
    Ok(())
}

/// The error for enqueueing a job for an item that already has one not ended.
pub(crate) fn second_active_job(item: &ItemKey) -> Error {
    Error::Invalid(format!("item {item} already has a job that has not ended; cancel it first"))
}

/// A count as the `BIGINT` it is stored in (a count past `i64::MAX` cannot happen).
pub(crate) fn count_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The reaper totals from `reaper_counters`' `(name, value)` rows plus a
/// `finalizer_owned` count; a missing or negative value reads as zero.
pub(crate) fn reaper_totals(rows: &[(String, i64)]) -> crate::ReaperTotals {
    let get = |name: &str| rows.iter().find(|(n, _)| n == name).map_or(0, |(_, v)| u64::try_from(*v).unwrap_or(0));
    let last = rows.iter().find(|(n, _)| n == "last_pass_at").map_or(0, |(_, v)| *v);
    crate::ReaperTotals {
        finalizer_defers_total: get("finalizer_defers"),
        reaped_tier1: get("reaped_tier1"),
        reaped_tier2: get("reaped_tier2"),
        reaped_tier3: get("reaped_tier3"),
        last_pass_at: (last > 0).then(|| Timestamp::from_millis(last)),
        finalizer_owned: get("finalizer_owned"),
    }
}

/// A job's stored usage. A row another version wrote with fields this one does
/// not know still reads (unknown fields are ignored, missing ones are zero).
pub(crate) fn usage_from(table: &'static str, v: Value) -> Result<orch_core::Usage> {
    serde_json::from_value(v).map_err(|e| Error::Corrupt { table, reason: format!("column usage: {e}") })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords_only() {
        assert_eq!(redact("postgres://u:secret@h:5432/db"), "postgres://u:***@h:5432/db");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("sqlite://.orch/orch.db"), "sqlite://.orch/orch.db");
    }

    #[test]
    fn transition_data_merges_version() {
        assert_eq!(transition_data(&Value::Null, 3), json!({"version": 3}));
        assert_eq!(transition_data(&json!({"a": 1, "version": 9}), 3), json!({"a": 1, "version": 3}));
        assert_eq!(transition_data(&json!([1]), 3), json!({"version": 3, "value": [1]}));
    }
}
