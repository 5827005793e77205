-- orch store schema, version 2 (SQLite): queue_stats without counting every row.
--
-- Open items and unfinished jobs are few and are counted live through partial
-- indexes. Terminal statuses (items done/cancelled; jobs done/failed/cancelled)
-- grow for ever, so their counts are kept by triggers in status_counts, in the
-- same transaction as the change. Rows are sharded (number or id modulo 16) so
-- concurrent writers on PostgreSQL do not queue on one counter row; SQLite uses the
-- same layout so both backends answer with the same queries.

CREATE TABLE status_counts (
    tbl    TEXT NOT NULL,
    status TEXT NOT NULL,
    shard  INTEGER NOT NULL,
    n      INTEGER NOT NULL,
    PRIMARY KEY (tbl, status, shard)
) STRICT, WITHOUT ROWID;

INSERT INTO status_counts (tbl, status, shard, n)
SELECT 'items', status, number % 16, COUNT(*) FROM items
WHERE status IN ('done', 'cancelled') GROUP BY status, number % 16;

INSERT INTO status_counts (tbl, status, shard, n)
SELECT 'jobs', status, id % 16, COUNT(*) FROM jobs
WHERE status IN ('done', 'failed', 'cancelled') GROUP BY status, id % 16;

CREATE TRIGGER items_count_insert AFTER INSERT ON items
WHEN NEW.status IN ('done', 'cancelled')
BEGIN
    INSERT INTO status_counts (tbl, status, shard, n) VALUES ('items', NEW.status, NEW.number % 16, 1)
    ON CONFLICT (tbl, status, shard) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER items_count_update AFTER UPDATE OF status ON items
WHEN OLD.status <> NEW.status
 AND (OLD.status IN ('done', 'cancelled') OR NEW.status IN ('done', 'cancelled'))
BEGIN
    UPDATE status_counts SET n = n - 1
    WHERE tbl = 'items' AND status = OLD.status AND shard = OLD.number % 16;
    INSERT INTO status_counts (tbl, status, shard, n)
    SELECT 'items', NEW.status, NEW.number % 16, 1 WHERE NEW.status IN ('done', 'cancelled')
    ON CONFLICT (tbl, status, shard) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER jobs_count_insert AFTER INSERT ON jobs
WHEN NEW.status IN ('done', 'failed', 'cancelled')
BEGIN
    INSERT INTO status_counts (tbl, status, shard, n) VALUES ('jobs', NEW.status, NEW.id % 16, 1)
    ON CONFLICT (tbl, status, shard) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER jobs_count_update AFTER UPDATE OF status ON jobs
WHEN OLD.status <> NEW.status
 AND (OLD.status IN ('done', 'failed', 'cancelled') OR NEW.status IN ('done', 'failed', 'cancelled'))
BEGIN
    UPDATE status_counts SET n = n - 1
    WHERE tbl = 'jobs' AND status = OLD.status AND shard = OLD.id % 16;
    INSERT INTO status_counts (tbl, status, shard, n)
    SELECT 'jobs', NEW.status, NEW.id % 16, 1 WHERE NEW.status IN ('done', 'failed', 'cancelled')
    ON CONFLICT (tbl, status, shard) DO UPDATE SET n = n + 1;
END;

-- Live counts of what is still open, by status and by stage (index-only).
DROP INDEX items_status;
DROP INDEX items_open_stage;
CREATE INDEX items_open ON items (status, stage) WHERE status NOT IN ('done', 'cancelled');
DROP INDEX jobs_status;
CREATE INDEX jobs_open_status ON jobs (status) WHERE status IN ('queued', 'running', 'finishing');
