//! Group commit (issue 13): the transitions a node sends while its previous
//! commit is in flight go to the server together, as one statement over arrays,
//! so k transitions share one statement's planning and executor start-up, one
//! round trip and one WAL flush. A profile of the one-statement path under 16
//! workers showed the server's time spread over per-statement work (planning,
//! expression set-up, lock release), not over the rows, so that is what a group
//! saves (docs/BENCHMARKS.md).
//!
//! Each transition keeps its exact outcome. The statement first locks, in id and
//! key order, the jobs still at their epoch and the items still at their
//! expected version; only transitions whose job and item both matched are
//! written, and a transition that matched neither, or only one, writes nothing
//! and is classified as the one-statement path classifies it (fenced out,
//! conflict, not found). Events keep their order within each transition, and a
//! transition's `job.queued` follows its other events. Nothing here decides
//! anything the one-statement path does not: any database error of a group, after
//! the usual retries of deadlocks, sends its transitions one by one down that path,
//! so an error is reported to the transition that caused it alone.

use std::collections::{HashSet, VecDeque};

use tokio::sync::oneshot;

use super::*;
use crate::RunEnd;

/// A transition waiting for the committer, and where its outcome goes.
pub(super) struct Pending {
    pub(super) commit: TransitionCommit,
    pub(super) attempts: String,
    pub(super) now: Timestamp,
    pub(super) reply: oneshot::Sender<Result<CommitOutcome>>,
}

/// Most transitions in one group (and one statement).
const MAX_GROUP: usize = 64;

/// Waiting transitions the channel holds before callers commit on their own.
pub(super) const QUEUE: usize = 1024;

/// Committer tasks per store. One: measured with 16 and 64 workers, two
/// committers (two groups in flight) moved fewer transitions than one (1,396 /
/// 2,088 against 1,802 / 2,887 per second): smaller groups, and the server's two
/// cores are already busy. The code takes any number, and `sc` keeps groups of
/// several committers or nodes from deadlocking on the status counters.
pub(super) const COMMITTERS: usize = 1;

/// The receiving end the committers share: the one holding it gathers a group.
pub(super) type Queue = Arc<tokio::sync::Mutex<mpsc::Receiver<Pending>>>;

/// A committer task: takes whatever is ready, commits it as one group, and
/// answers each caller. No timer: a transition that arrives alone goes at once.
pub(super) async fn committer(pool: PgPool, url: String, queue: Queue) {
    // Transitions of an item already in the group wait for the next one: one
    // statement must not write an item twice.
    let mut deferred: VecDeque<Pending> = VecDeque::new();
    loop {
        let mut rx = queue.lock().await;
        let first = match deferred.pop_front() {
            Some(p) => p,
            None => match rx.recv().await {
                Some(p) => p,
                None => return,
            },
        };
        let mut keys = HashSet::from([first.commit.item.to_string()]);
        let mut group = vec![first];
        let mut later = VecDeque::new();
        while group.len() < MAX_GROUP {
            let next = match deferred.pop_front() {
                Some(p) => p,
                None => match rx.try_recv() {
                    Ok(p) => p,
                    Err(_) => break,
                },
            };
            if keys.insert(next.commit.item.to_string()) {
                group.push(next);
            } else {
                later.push_back(next);
            }
        }
        drop(rx);
        later.extend(deferred.drain(..));
        deferred = later;
        // A caller that gave up (its deadline passed) gets nothing written late.
        group.retain(|p| !p.reply.is_closed());
        run(&pool, &url, group).await;
    }
}

/// Commits `group` and answers every caller.
async fn run(pool: &PgPool, url: &str, group: Vec<Pending>) {
    if group.len() > 1 {
        let mut attempt = 1;
        loop {
            match statement(pool, url, &group).await {
                Ok(outcomes) => {
                    for (p, out) in group.into_iter().zip(outcomes) {
                        let _ = p.reply.send(out);
                    }
                    return;
                }
                Err(e) if common::is_retryable(&e) && attempt < TX_ATTEMPTS => attempt += 1,
                Err(e) => {
                    tracing::warn!(store = %url, transitions = group.len(), error = %e,
                        "group commit failed; committing its transitions one by one");
                    break;
                }
            }
        }
    }
    for p in group {
        let out = one(pool, url, &p).await;
        let _ = p.reply.send(out);
    }
}

/// One transition down the one-statement path, with its retries.
pub(super) async fn one(pool: &PgPool, url: &str, p: &Pending) -> Result<CommitOutcome> {
    let mut attempt = 1;
    loop {
        match commit_one_statement(pool, &p.commit, &p.attempts, p.now).await {
            Ok(out) => return Ok(out),
            Err(Fail::Sql(e)) if common::is_retryable(&e) && attempt < TX_ATTEMPTS => attempt += 1,
            Err(Fail::Sql(e)) => return Err(common::map_err(url, e)),
            Err(Fail::Store(e)) => return Err(e),
        }
    }
}

fn job(p: &Pending) -> Option<&crate::JobFinal> {
    p.commit.job.as_ref()
}

/// The group's statement (see the module's comment); every transition in it
/// names a different item. Returns each transition's outcome, in order.
async fn statement(pool: &PgPool, url: &str, group: &[Pending]) -> sqlx::Result<Vec<Result<CommitOutcome>>> {
    let (mut ev_t, mut ev_job, mut ev_kind, mut ev_from, mut ev_to, mut ev_epoch, mut ev_reason, mut ev_data) =
        (vec![], vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
    for (n, p) in group.iter().enumerate() {
        let t = i64::try_from(n + 1).unwrap_or(i64::MAX);
        for ev in common::commit_events(&p.commit) {
            ev_t.push(t);
            ev_job.push(ev.job.map(|j| j.0));
            ev_kind.push(ev.kind.as_str());
            ev_from.push(ev.from);
            ev_to.push(ev.to);
            ev_epoch.push(ev.epoch);
            ev_reason.push(ev.reason);
            ev_data.push(Json(ev.data));
        }
    }
    let end = |p: &Pending| job(p).and_then(|j| j.run_end.clone()).unwrap_or_default();
    let ends: Vec<RunEnd> = group.iter().map(end).collect();
    let status = |p: &Pending| if p.commit.claim_next.is_some() { ItemStatus::Running } else { p.commit.next.status };
    // One `now` for the group: the latest, so no stamp goes back in time.
    let now = group.iter().map(|p| p.now).max().unwrap_or(group[0].now);
    let rows = sqlx::query(GROUP_SQL)
        .bind(now.as_millis())
        .bind(group.iter().map(|p| job(p).is_some()).collect::<Vec<_>>())
        .bind(group.iter().map(|p| job(p).map_or(0, |j| j.id.0)).collect::<Vec<_>>())
        .bind(group.iter().map(|p| job(p).map_or(0, |j| j.epoch)).collect::<Vec<_>>())
        .bind(group.iter().map(|p| job(p).map(|j| j.status.as_str())).collect::<Vec<_>>())
        .bind(group.iter().map(|p| job(p).and_then(|j| j.reason.clone())).collect::<Vec<_>>())
        .bind(group.iter().map(|p| job(p).and_then(|j| j.verdict.clone()).map(Json)).collect::<Vec<_>>())
        .bind(ends.iter().map(|e| e.exit_code.map(i64::from)).collect::<Vec<_>>())
        .bind(ends.iter().map(|e| e.usage.as_ref().map(|u| Json(json!(u)))).collect::<Vec<_>>())
        .bind(ends.iter().map(|e| e.run.as_ref().map(|r| i64::from(r.pid))).collect::<Vec<_>>())
        .bind(ends.iter().map(|e| e.run.as_ref().map(|r| i64::from(r.pgid))).collect::<Vec<_>>())
        .bind(ends.iter().map(|e| e.run.as_ref().and_then(|r| r.proc_start)).collect::<Vec<_>>())
        .bind(ends.iter().map(|e| e.run.as_ref().map(|r| r.log_path.clone())).collect::<Vec<_>>())
        .bind(group.iter().map(|p| p.commit.item.to_string()).collect::<Vec<_>>())
        .bind(group.iter().map(|p| p.commit.expected_version).collect::<Vec<_>>())
        .bind(group.iter().map(|p| p.commit.next.track.as_str()).collect::<Vec<_>>())
        .bind(group.iter().map(|p| p.commit.next.stage.as_str()).collect::<Vec<_>>())
        .bind(group.iter().map(|p| status(p).as_str()).collect::<Vec<_>>())
        .bind(group.iter().map(|p| p.commit.next.version).collect::<Vec<_>>())
        .bind(group.iter().map(|p| p.attempts.as_str()).collect::<Vec<_>>())
        .bind(group.iter().map(|p| p.commit.enqueue.as_ref().map(|(s, _)| s.as_str())).collect::<Vec<_>>())
        .bind(group.iter().map(|p| p.commit.enqueue.as_ref().map_or(0, |(_, a)| i64::from(*a))).collect::<Vec<_>>())
        .bind(group.iter().map(|p| p.commit.claim_next.as_ref().map(|c| c.node.as_str())).collect::<Vec<_>>())
        .bind(
            group
                .iter()
                .map(|p| p.commit.claim_next.as_ref().map(|c| now.add(c.lease_ttl).as_millis()))
                .collect::<Vec<_>>(),
        )
        .bind(ev_t)
        .bind(ev_job)
        .bind(ev_kind)
        .bind(ev_from)
        .bind(ev_to)
        .bind(ev_epoch)
        .bind(ev_reason)
        .bind(ev_data)
        .bind(EventKind::JobQueued.as_str())
        .fetch_all(pool)
        .await?;
    let mut outcomes = Vec::with_capacity(group.len());
    for (p, row) in group.iter().zip(&rows) {
        let applied: bool = row.try_get("applied")?;
        let job_ok: bool = row.try_get("job_ok")?;
        let out = if applied {
            let enqueued: Option<i64> = row.try_get("new_id")?;
            Ok(CommitOutcome::Applied { enqueued: enqueued.map(JobId) })
        } else if let Some(j) = job(p).filter(|_| !job_ok) {
            let owner_item: Option<String> =
                sqlx::query_scalar("SELECT item FROM jobs WHERE id = $1").bind(j.id.0).fetch_optional(pool).await?;
            common::job_miss(&p.commit, j.id, owner_item)
        } else {
            let exists = sqlx::query("SELECT 1 FROM items WHERE key = $1")
                .bind(p.commit.item.to_string())
                .fetch_optional(pool)
                .await?
                .is_some();
            common::item_miss(&p.commit, exists)
        };
        outcomes.push(out);
    }
    if outcomes.len() != group.len() {
        return Err(sqlx::Error::Protocol(format!(
            "group commit on {url}: {} outcomes for {} transitions",
            outcomes.len(),
            group.len()
        )));
    }
    Ok(outcomes)
}

/// The group's statement. Binds: $1 now; one array per transition field ($2–$24,
/// element n is transition n); the transitions' events flattened ($25 the 1-based
/// transition each belongs to, $26–$32 its fields); $33 `job.queued`.
/// `jm` and `im` lock what matched, jobs before items and each in one order, as
/// every other writer does, and `sc` the status counters the triggers will move
/// (jobs' before items', each in one order; migration 0008 made every row), so
/// two groups never wait on each other in a cycle; each looks its rows up by
/// `= ANY(array)`, so the planner takes the primary keys (joined to the arrays'
/// rows alone it chose a full scan of `items`); `j` → `i` → `nj` → `ev` each read the previous, so
/// the old job has ended before the item's next one is inserted (the
/// one-active-job index checks each row as it goes in).
const GROUP_SQL: &str = "WITH t AS MATERIALIZED ( \
    SELECT * FROM UNNEST($2::BOOLEAN[], $3::BIGINT[], $4::BIGINT[], $5::TEXT[], $6::TEXT[], $7::JSONB[], \
        $8::BIGINT[], $9::JSONB[], $10::BIGINT[], $11::BIGINT[], $12::BIGINT[], $13::TEXT[], $14::TEXT[], \
        $15::BIGINT[], $16::TEXT[], $17::TEXT[], $18::TEXT[], $19::BIGINT[], $20::TEXT[], $21::TEXT[], \
        $22::BIGINT[], $23::TEXT[], $24::BIGINT[]) WITH ORDINALITY \
      AS t(has_job, job_id, epoch, job_status, reason, verdict, exit_code, usage, pid, pgid, proc_start, \
           log_path, key, expected, track, stage, item_status, version, attempts, enq_stage, enq_attempt, \
           claim_node, claim_lease, o) \
 ), jm AS MATERIALIZED ( \
    SELECT j.id FROM jobs j, t \
    WHERE j.id = ANY($3::BIGINT[]) AND t.has_job AND j.id = t.job_id AND j.epoch = t.epoch AND j.item = t.key \
      AND j.status IN ('running', 'finishing') \
    ORDER BY j.id FOR UPDATE OF j \
 ), im AS MATERIALIZED ( \
    SELECT i.key FROM items i, t WHERE i.key = ANY($14::TEXT[]) AND i.key = t.key AND i.version = t.expected \
    ORDER BY i.key FOR UPDATE OF i \
 ), sc AS MATERIALIZED ( \
    SELECT s.tbl FROM status_counts s \
    WHERE (s.tbl = 'jobs' AND (s.status, s.shard) IN \
            (SELECT t.job_status, (t.job_id % 16)::INTEGER FROM t WHERE t.has_job)) \
       OR (s.tbl = 'items' AND (s.status, s.shard) IN \
            (SELECT t.item_status, (i.number % 16)::INTEGER FROM t JOIN items i \
             ON i.key = ANY($14::TEXT[]) AND i.key = t.key)) \
    ORDER BY s.tbl DESC, s.status, s.shard FOR UPDATE OF s \
 ), ok AS MATERIALIZED ( \
    SELECT t.*, CASE WHEN t.enq_stage IS NOT NULL THEN nextval('jobs_id_seq') END AS new_id \
    FROM t WHERE (NOT t.has_job OR t.job_id IN (SELECT id FROM jm)) AND t.key IN (SELECT key FROM im) \
      AND (SELECT COUNT(*) FROM sc) >= 0 \
 ), j AS ( \
    UPDATE jobs SET status = ok.job_status, reason = COALESCE(ok.reason, jobs.reason), \
        verdict = COALESCE(ok.verdict, jobs.verdict), finished_at = COALESCE(jobs.finished_at, $1), \
        heartbeat_at = $1, lease_expires_at = NULL, exit_code = COALESCE(ok.exit_code, jobs.exit_code), \
        usage = COALESCE(ok.usage, jobs.usage), pid = COALESCE(ok.pid, jobs.pid), \
        pgid = COALESCE(ok.pgid, jobs.pgid), proc_start = COALESCE(ok.proc_start, jobs.proc_start), \
        log_path = COALESCE(ok.log_path, jobs.log_path) \
    FROM ok WHERE ok.has_job AND jobs.id = ok.job_id RETURNING jobs.id \
 ), i AS ( \
    UPDATE items SET track = ok.track, stage = ok.stage, status = ok.item_status, version = ok.version, \
        attempts = ok.attempts, updated_at = $1 \
    FROM ok WHERE items.key = ok.key AND (NOT ok.has_job OR ok.job_id IN (SELECT id FROM j)) \
    RETURNING items.key \
 ), nj AS ( \
    INSERT INTO jobs (id, item, stage, attempt, status, epoch, queued_at, owner, lease_expires_at, \
                      heartbeat_at, started_at) \
    SELECT ok.new_id, ok.key, ok.enq_stage, ok.enq_attempt, \
           CASE WHEN ok.claim_node IS NULL THEN 'queued' ELSE 'running' END, \
           CASE WHEN ok.claim_node IS NULL THEN 0 ELSE 1 END, $1, ok.claim_node, ok.claim_lease, \
           CASE WHEN ok.claim_node IS NULL THEN NULL ELSE $1 END, \
           CASE WHEN ok.claim_node IS NULL THEN NULL ELSE $1 END \
    FROM ok WHERE ok.new_id IS NOT NULL AND ok.key IN (SELECT key FROM i) \
    RETURNING id \
 ), ev AS ( \
    INSERT INTO events (at, item, job, kind, from_, to_, epoch, reason, data) \
    SELECT $1, x.item, x.job, x.kind, x.from_, x.to_, x.epoch, x.reason, x.data FROM ( \
        SELECT ok.o, e.ord, ok.key AS item, e.job, e.kind, e.from_, e.to_, e.epoch, e.reason, e.data \
        FROM ok JOIN UNNEST($25::BIGINT[], $26::BIGINT[], $27::TEXT[], $28::TEXT[], $29::TEXT[], \
                            $30::BIGINT[], $31::TEXT[], $32::JSONB[]) WITH ORDINALITY \
                 AS e(tn, job, kind, from_, to_, epoch, reason, data, ord) ON e.tn = ok.o \
        UNION ALL \
        SELECT ok.o, 9223372036854775807, ok.key, ok.new_id, $33, NULL, ok.enq_stage, 0, NULL, \
               jsonb_build_object('attempt', ok.enq_attempt) \
        FROM ok WHERE ok.new_id IS NOT NULL AND ok.new_id IN (SELECT id FROM nj) \
    ) x WHERE x.item IN (SELECT key FROM i) \
    ORDER BY x.o, x.ord RETURNING seq \
 ) SELECT t.o, ok.o IS NOT NULL AS applied, ok.new_id, \
          (NOT t.has_job OR t.job_id IN (SELECT id FROM jm)) AS job_ok, \
          (SELECT COUNT(*) FROM ev) AS event_rows \
   FROM t LEFT JOIN ok ON ok.o = t.o ORDER BY t.o";
