-- orch store schema, version 6 (SQLite): the reaper's cluster-wide counters.
-- (SQLite commits events in seq order, so its event stream needs no new index.)
--
-- The reaper's totals over every node and restart: each pass adds what it did
-- (record_reaper_pass), and last_pass_at keeps the latest pass's end (ms).
CREATE TABLE reaper_counters (
    name  TEXT PRIMARY KEY NOT NULL,
    value INTEGER NOT NULL
);
INSERT INTO reaper_counters (name, value) VALUES
    ('finalizer_defers', 0), ('reaped_tier1', 0), ('reaped_tier2', 0), ('reaped_tier3', 0), ('last_pass_at', 0);
