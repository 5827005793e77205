-- orch store schema, version 3 (PostgreSQL): the guard of the one-statement commit.
--
-- commit_transition without cancels runs as one statement (one round trip instead
-- of six). If the job step matched but the item's version had moved on, the job's
-- change must not stand: this function is called in that case and aborts the whole
-- statement with SQLSTATE OR409, which the store reports as CommitOutcome::Conflict.

CREATE FUNCTION orch_version_conflict() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the item''s version moved on; nothing was written' USING ERRCODE = 'OR409';
END
$$;
