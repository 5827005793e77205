-- orch store schema, version 9 (PostgreSQL): the status counters' trigger
-- function only updates (the file name is SQLite's version 9, kept the same).
--
-- Since version 8 every counter row exists, so a row entering a counted status
-- needs no INSERT ... ON CONFLICT (a speculative insertion into the primary key
-- at every firing, then the update). The triggers and their WHEN clauses are
-- unchanged. (SQLite's version 9 rewrites its triggers' IN lists, which SQLite
-- evaluates through an ephemeral index; PostgreSQL does not.)

CREATE OR REPLACE FUNCTION orch_count_terminal() RETURNS trigger LANGUAGE plpgsql AS $$
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
        UPDATE status_counts SET n = n + 1
        WHERE tbl = TG_TABLE_NAME AND status = NEW.status AND shard = v_shard;
    END IF;
    RETURN NULL;
END
$$;
