-- orch store schema, version 9 (SQLite only): the status counters' triggers
-- without IN lists.
--
-- SQLite evaluates `x IN ('a', 'b', 'c')` (three values or more) by building an
-- ephemeral index, opened and closed at every firing of a trigger: three times
-- in every stage hand-off (a profile of the writer thread showed the opens and
-- closes). Comparisons joined by OR say the same. And since version 8 every
-- counter row exists, so the triggers only update; an UPDATE naming a status
-- that is not counted matches no row. PostgreSQL's triggers are unchanged.

DROP TRIGGER items_count_insert;
DROP TRIGGER items_count_update;
DROP TRIGGER jobs_count_insert;
DROP TRIGGER jobs_count_update;

CREATE TRIGGER items_count_insert AFTER INSERT ON items
WHEN NEW.status = 'done' OR NEW.status = 'cancelled'
BEGIN
    UPDATE status_counts SET n = n + 1 WHERE tbl = 'items' AND status = NEW.status AND shard = NEW.number % 16;
END;

CREATE TRIGGER items_count_update AFTER UPDATE OF status ON items
WHEN OLD.status <> NEW.status
 AND (OLD.status = 'done' OR OLD.status = 'cancelled' OR NEW.status = 'done' OR NEW.status = 'cancelled')
BEGIN
    UPDATE status_counts SET n = n - 1 WHERE tbl = 'items' AND status = OLD.status AND shard = OLD.number % 16;
    UPDATE status_counts SET n = n + 1 WHERE tbl = 'items' AND status = NEW.status AND shard = NEW.number % 16;
END;

CREATE TRIGGER jobs_count_insert AFTER INSERT ON jobs
WHEN NEW.status = 'done' OR NEW.status = 'failed' OR NEW.status = 'cancelled'
BEGIN
    UPDATE status_counts SET n = n + 1 WHERE tbl = 'jobs' AND status = NEW.status AND shard = NEW.id % 16;
END;

CREATE TRIGGER jobs_count_update AFTER UPDATE OF status ON jobs
WHEN OLD.status <> NEW.status
 AND (OLD.status = 'done' OR OLD.status = 'failed' OR OLD.status = 'cancelled'
      OR NEW.status = 'done' OR NEW.status = 'failed' OR NEW.status = 'cancelled')
BEGIN
    UPDATE status_counts SET n = n - 1 WHERE tbl = 'jobs' AND status = OLD.status AND shard = OLD.id % 16;
    UPDATE status_counts SET n = n + 1 WHERE tbl = 'jobs' AND status = NEW.status AND shard = NEW.id % 16;
END;
