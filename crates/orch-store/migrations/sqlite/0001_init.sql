-- orch store schema, version 1 (SQLite).
-- Times are INTEGER milliseconds since the Unix epoch, passed in by the caller.
-- JSON columns (attempts, verdict, data) hold JSON text.

-- One row per item key prefix: the last number handed out. Updated in the same
-- transaction as the item insert, so keys are unique and gap-free.
CREATE TABLE key_counters (
    prefix TEXT PRIMARY KEY NOT NULL,
    last   INTEGER NOT NULL
) STRICT;

CREATE TABLE items (
    key        TEXT PRIMARY KEY NOT NULL,
    prefix     TEXT NOT NULL,
    number     INTEGER NOT NULL,
    repo       TEXT NOT NULL,
    kind       TEXT NOT NULL,
    title      TEXT NOT NULL,
    body       TEXT NOT NULL,
    track      TEXT NOT NULL,
    stage      TEXT NOT NULL,
    status     TEXT NOT NULL,
    version    INTEGER NOT NULL,
    attempts   TEXT NOT NULL,
    branch     TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    UNIQUE (prefix, number)
) STRICT;

-- queue_stats groups by status, and by stage over the items still open.
CREATE INDEX items_status ON items (status);
CREATE INDEX items_open_stage ON items (stage) WHERE status NOT IN ('done', 'cancelled');
-- list_items --repo, in key order.
CREATE INDEX items_repo ON items (repo, prefix, number);

CREATE TABLE jobs (
    id               INTEGER PRIMARY KEY,
    item             TEXT NOT NULL REFERENCES items (key),
    stage            TEXT NOT NULL,
    attempt          INTEGER NOT NULL,
    status           TEXT NOT NULL,
    owner            TEXT,
    epoch            INTEGER NOT NULL DEFAULT 0,
    lease_expires_at INTEGER,
    heartbeat_at     INTEGER,
    pid              INTEGER,
    pgid             INTEGER,
    proc_start       INTEGER,
    queued_at        INTEGER NOT NULL,
    started_at       INTEGER,
    finished_at      INTEGER,
    exit_code        INTEGER,
    reason           TEXT,
    verdict          TEXT,
    log_path         TEXT
) STRICT;

-- At most one job per item that has not ended: a second one would mean the item
-- is being worked on twice. The store asserts it; the engine must never try.
CREATE UNIQUE INDEX jobs_one_active_per_item ON jobs (item)
    WHERE status IN ('queued', 'running', 'finishing');
-- jobs_for_item.
CREATE INDEX jobs_item ON jobs (item, id);
-- Claims: oldest queued first.
CREATE INDEX jobs_queued ON jobs (queued_at, id) WHERE status = 'queued';
-- Reaper tier 1: running jobs by lease expiry.
CREATE INDEX jobs_running_lease ON jobs (lease_expires_at) WHERE status = 'running';
-- Reaper tier 2: finishing jobs by finished_at.
CREATE INDEX jobs_finishing ON jobs (finished_at) WHERE status = 'finishing';
-- Reaper tier 3, queue_stats' active list.
CREATE INDEX jobs_active_started ON jobs (started_at) WHERE status IN ('running', 'finishing');
-- jobs_owned_by (start-up reconcile, shutdown).
CREATE INDEX jobs_owner ON jobs (owner) WHERE status IN ('running', 'finishing');
-- queue_stats' per-status counts.
CREATE INDEX jobs_status ON jobs (status);

CREATE TABLE gate_results (
    id          INTEGER PRIMARY KEY,
    job         INTEGER NOT NULL REFERENCES jobs (id),
    epoch       INTEGER NOT NULL,
    gate        TEXT NOT NULL,
    passed      INTEGER NOT NULL,
    exit_code   INTEGER,
    metric      REAL,
    duration_ms INTEGER NOT NULL,
    reason      TEXT,
    at          INTEGER NOT NULL
) STRICT;

CREATE INDEX gate_results_job ON gate_results (job, id);

-- Append-only: the code has no UPDATE or DELETE on this table.
CREATE TABLE events (
    seq    INTEGER PRIMARY KEY,
    at     INTEGER NOT NULL,
    item   TEXT NOT NULL,
    job    INTEGER,
    kind   TEXT NOT NULL,
    from_  TEXT,
    to_    TEXT,
    epoch  INTEGER,
    reason TEXT,
    data   TEXT NOT NULL
) STRICT;

CREATE INDEX events_item ON events (item, seq);

CREATE TABLE prs (
    item       TEXT PRIMARY KEY NOT NULL REFERENCES items (key),
    url        TEXT NOT NULL,
    state      TEXT NOT NULL,
    merge_sha  TEXT,
    updated_at INTEGER NOT NULL
) STRICT;

CREATE TABLE nodes (
    id           TEXT PRIMARY KEY NOT NULL,
    started_at   INTEGER NOT NULL,
    heartbeat_at INTEGER NOT NULL,
    pid          INTEGER,
    version      TEXT
) STRICT;
