-- orch store schema, version 8: every status_counts row exists from the start.
--
-- A PostgreSQL group commit (issue 13) locks the counter rows its transitions
-- will move, in one order, before it writes, so two groups (two nodes, or two
-- committers) never wait on each other's counters in a cycle. A row that does
-- not exist yet cannot be locked, and two first inserts of one key would queue
-- on the primary key instead; so every (table, terminal status, shard) row is
-- made here, at zero. The counts do not change. Same on SQLite, to keep one
-- schema.

WITH v (tbl, status) AS (
    VALUES ('items', 'done'), ('items', 'cancelled'), ('jobs', 'done'), ('jobs', 'failed'), ('jobs', 'cancelled')
), s (shard) AS (
    VALUES (0), (1), (2), (3), (4), (5), (6), (7), (8), (9), (10), (11), (12), (13), (14), (15)
)
INSERT INTO status_counts (tbl, status, shard, n)
SELECT v.tbl, v.status, s.shard, 0 FROM v CROSS JOIN s WHERE true
ON CONFLICT (tbl, status, shard) DO NOTHING;
