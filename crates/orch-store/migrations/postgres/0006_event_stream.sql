-- orch store schema, version 6 (PostgreSQL): the event stream's order, and the
-- reaper's cluster-wide counters.
--
-- events_after hands out events in (xid, seq) order, and only events whose
-- writing transaction is older than every transaction still running; this index
-- serves that order and the resume lookup (docs/STORE.md, "The event stream").
CREATE INDEX events_xid_seq ON events (xid, seq);

-- The reaper's totals over every node and restart: each pass adds what it did
-- (record_reaper_pass), and last_pass_at keeps the latest pass's end (ms).
-- One row per counter, seeded here, so a pass is one UPDATE of known rows.
CREATE TABLE reaper_counters (
    name  TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);
INSERT INTO reaper_counters (name, value) VALUES
    ('finalizer_defers', 0), ('reaped_tier1', 0), ('reaped_tier2', 0), ('reaped_tier3', 0), ('last_pass_at', 0);
