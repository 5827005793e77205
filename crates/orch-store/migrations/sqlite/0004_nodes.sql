-- orch store schema, version 4 (SQLite): the node registry.
--
-- One row per node id: which incarnation (process start) holds it, where it runs,
-- and when it was last heard from. A node refuses to start under the id of a live
-- one (stopped_at IS NULL and last_seen + live_for > now, judged by the caller's
-- live_for), so two live nodes never share an id; reconcile touches only a dead
-- incarnation's work. Times are INTEGER milliseconds since the Unix epoch, passed
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
    pid             INTEGER NOT NULL,
    data_dir        TEXT NOT NULL,
    started_at      INTEGER NOT NULL,
    last_seen       INTEGER NOT NULL,
    stopped_at      INTEGER,
    clock_offset_ms INTEGER NOT NULL DEFAULT 0
) STRICT;
