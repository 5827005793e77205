-- orch store schema, version 1 (PostgreSQL).
-- Times are BIGINT milliseconds since the Unix epoch, passed in by the caller.
-- attempts holds JSON text; verdict and data are JSONB.

-- One row per item key prefix: the last number handed out. Updated in the same
-- transaction as the item insert, so keys are unique and gap-free.
CREATE TABLE key_counters (
    prefix TEXT PRIMARY KEY NOT NULL,
    last   BIGINT NOT NULL
);

CREATE TABLE items (
    key        TEXT PRIMARY KEY NOT NULL,
    prefix     TEXT NOT NULL,
    number     BIGINT NOT NULL,
    repo       TEXT NOT NULL,
    kind       TEXT NOT NULL,
    title      TEXT NOT NULL,
    body       TEXT NOT NULL,
    track      TEXT NOT NULL,
    stage      TEXT NOT NULL,
    status     TEXT NOT NULL,
    version    BIGINT NOT NULL,
    attempts   TEXT NOT NULL,
    branch     TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE (prefix, number)
);

-- queue_stats groups by status, and by stage over the items still open.
CREATE INDEX items_status ON items (status);
CREATE INDEX items_open_stage ON items (stage) WHERE status NOT IN ('done', 'cancelled');
-- list_items --repo, in key order.
CREATE INDEX items_repo ON items (repo, prefix, number);

CREATE TABLE jobs (
    id               BIGSERIAL PRIMARY KEY,
    item             TEXT NOT NULL REFERENCES items (key),
    stage            TEXT NOT NULL,
    attempt          BIGINT NOT NULL,
    status           TEXT NOT NULL,
    owner            TEXT,
    epoch            BIGINT NOT NULL DEFAULT 0,
    lease_expires_at BIGINT,
    heartbeat_at     BIGINT,
    pid              BIGINT,
    pgid             BIGINT,
    proc_start       BIGINT,
    queued_at        BIGINT NOT NULL,
    started_at       BIGINT,
    finished_at      BIGINT,
    exit_code        BIGINT,
    reason           TEXT,
    verdict          JSONB,
    log_path         TEXT
);

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
    id          BIGSERIAL PRIMARY KEY,
    job         BIGINT NOT NULL REFERENCES jobs (id),
    epoch       BIGINT NOT NULL,
    gate        TEXT NOT NULL,
    passed      BOOLEAN NOT NULL,
    exit_code   BIGINT,
    metric      DOUBLE PRECISION,
    duration_ms BIGINT NOT NULL,
    reason      TEXT,
    at          BIGINT NOT NULL
);

CREATE INDEX gate_results_job ON gate_results (job, id);

-- Append-only: the code has no UPDATE or DELETE on this table.
CREATE TABLE events (
    seq    BIGSERIAL PRIMARY KEY,
    at     BIGINT NOT NULL,
    item   TEXT NOT NULL,
    job    BIGINT,
    kind   TEXT NOT NULL,
    from_  TEXT,
    to_    TEXT,
    epoch  BIGINT,
    reason TEXT,
    data   JSONB NOT NULL,
    -- The writing transaction, so events_since never hands out a seq while a
    -- lower one may still commit (see events_since in postgres.rs).
    xid    xid8 NOT NULL DEFAULT pg_current_xact_id()
);

CREATE INDEX events_item ON events (item, seq);

CREATE TABLE prs (
    item       TEXT PRIMARY KEY NOT NULL REFERENCES items (key),
    url        TEXT NOT NULL,
    state      TEXT NOT NULL,
    merge_sha  TEXT,
    updated_at BIGINT NOT NULL
);

CREATE TABLE nodes (
    id           TEXT PRIMARY KEY NOT NULL,
    started_at   BIGINT NOT NULL,
    heartbeat_at BIGINT NOT NULL,
    pid          BIGINT,
    version      TEXT
);
