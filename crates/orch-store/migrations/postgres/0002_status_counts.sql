-- orch store schema, version 2 (PostgreSQL): queue_stats without counting every row.
--
-- Open items and unfinished jobs are few and are counted live through partial
-- indexes. Terminal statuses (items done/cancelled; jobs done/failed/cancelled)
-- grow for ever, so their counts are kept by triggers in status_counts, in the
-- same transaction as the change. Rows are sharded (number or id modulo 16) so
-- concurrent writers do not queue on one counter row's lock until they commit.

CREATE TABLE status_counts (
    tbl    TEXT NOT NULL,
    status TEXT NOT NULL,
    shard  INTEGER NOT NULL,
    n      BIGINT NOT NULL,
    PRIMARY KEY (tbl, status, shard)
);

INSERT INTO status_counts (tbl, status, shard, n)
SELECT 'items', status, (number % 16)::INTEGER, COUNT(*) FROM items
WHERE status IN ('done', 'cancelled') GROUP BY status, number % 16;

INSERT INTO status_counts (tbl, status, shard, n)
SELECT 'jobs', status, (id % 16)::INTEGER, COUNT(*) FROM jobs
WHERE status IN ('done', 'failed', 'cancelled') GROUP BY status, id % 16;

-- Called only for rows entering or leaving a terminal status (see the WHENs).
CREATE FUNCTION orch_count_terminal() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    v_terminal TEXT[];
    v_shard INTEGER;
BEGIN
    IF TG_TABLE_NAME = 'items' THEN
        v_terminal := ARRAY['done', 'cancelled'];
        v_shard := (NEW.number % 16)::INTEGER;
    ELSE
        v_terminal := ARRAY['done', 'failed', 'cancelled'];
        v_shard := (NEW.id % 16)::INTEGER;
    END IF;
    IF TG_OP = 'UPDATE' AND OLD.status = ANY (v_terminal) THEN
        UPDATE status_counts SET n = n - 1
        WHERE tbl = TG_TABLE_NAME AND status = OLD.status AND shard = v_shard;
    END IF;
    IF NEW.status = ANY (v_terminal) THEN
        INSERT INTO status_counts (tbl, status, shard, n) VALUES (TG_TABLE_NAME, NEW.status, v_shard, 1)
        ON CONFLICT (tbl, status, shard) DO UPDATE SET n = status_counts.n + 1;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER items_count_insert AFTER INSERT ON items FOR EACH ROW
WHEN (NEW.status IN ('done', 'cancelled'))
EXECUTE FUNCTION orch_count_terminal();

CREATE TRIGGER items_count_update AFTER UPDATE OF status ON items FOR EACH ROW
WHEN (OLD.status IS DISTINCT FROM NEW.status
      AND (OLD.status IN ('done', 'cancelled') OR NEW.status IN ('done', 'cancelled')))
EXECUTE FUNCTION orch_count_terminal();

CREATE TRIGGER jobs_count_insert AFTER INSERT ON jobs FOR EACH ROW
WHEN (NEW.status IN ('done', 'failed', 'cancelled'))
EXECUTE FUNCTION orch_count_terminal();

CREATE TRIGGER jobs_count_update AFTER UPDATE OF status ON jobs FOR EACH ROW
WHEN (OLD.status IS DISTINCT FROM NEW.status
      AND (OLD.status IN ('done', 'failed', 'cancelled') OR NEW.status IN ('done', 'failed', 'cancelled')))
EXECUTE FUNCTION orch_count_terminal();

-- Live counts of what is still open, by status and by stage (index-only).
DROP INDEX items_status;
DROP INDEX items_open_stage;
CREATE INDEX items_open ON items (status, stage) WHERE status NOT IN ('done', 'cancelled');
DROP INDEX jobs_status;
CREATE INDEX jobs_open_status ON jobs (status) WHERE status IN ('queued', 'running', 'finishing');
