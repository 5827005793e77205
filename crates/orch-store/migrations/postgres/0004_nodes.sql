-- orch store schema, version 4 (PostgreSQL): the node registry.
--
-- One row per node id: which incarnation (process start) holds it, where it runs,
-- and when it was last heard from. A node refuses to start under the id of a live
-- one (stopped_at IS NULL and last_seen + live_for > now, judged by the caller's
-- live_for), so two live nodes never share an id; reconcile touches only a dead
-- incarnation's work. Times are BIGINT milliseconds since the Unix epoch, passed
-- in by the caller; clock_offset_ms is the node's last measured offset to the
-- store's clock (DESIGN §5).
--
-- Version 1 reserved a nodes table (id, started_at, heartbeat_at, pid, version)
-- that no orch ever wrote; it is replaced.

DROP TABLE nodes;

CREATE TABLE nodes (
    id              TEXT PRIMARY KEY NOT NULL,
    incarnation     TEXT NOT NULL,
    host            TEXT NOT NULL,
    pid             BIGINT NOT NULL,
    data_dir        TEXT NOT NULL,
    started_at      BIGINT NOT NULL,
    last_seen       BIGINT NOT NULL,
    stopped_at      BIGINT,
    clock_offset_ms BIGINT NOT NULL DEFAULT 0
);
