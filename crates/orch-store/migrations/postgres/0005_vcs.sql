-- orch store schema, version 5 (PostgreSQL): the git layer's state.
--
-- items.head_sha is the SHA of the item's feature branch as last pushed by the
-- job's owner (record_push, fenced by the job's epoch): the value the next push
-- names in --force-with-lease, so a stale pusher can never overwrite newer work.
-- gate_results.sha is the commit a gate judged, so a check status is reported
-- for the SHA that was tested, not for whatever the branch holds later.
--
-- prs is the embedded "local" forge's pull requests, one per item. Version 1
-- reserved a prs table (item, url, state, merge_sha, updated_at) that no orch
-- ever wrote; it is replaced. Times are BIGINT milliseconds since the Unix
-- epoch, passed in by the caller; checks is an object from gate name to
-- {sha, passed, reason, at}.

ALTER TABLE items ADD COLUMN head_sha TEXT;

ALTER TABLE gate_results ADD COLUMN sha TEXT;

DROP TABLE prs;

CREATE TABLE prs (
    item       TEXT PRIMARY KEY NOT NULL REFERENCES items (key),
    number     BIGINT NOT NULL,
    repo       TEXT NOT NULL,
    title      TEXT NOT NULL,
    body       TEXT NOT NULL,
    branch     TEXT NOT NULL,
    head_sha   TEXT,
    url        TEXT NOT NULL,
    state      TEXT NOT NULL CHECK (state IN ('open', 'merged', 'closed')),
    merge_sha  TEXT,
    checks     JSONB NOT NULL DEFAULT '{}'::jsonb,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- find_pr_by_branch (the forge is asked by branch). Unique: each item has its
-- own branch, and a lookup by branch must name one pull request.
CREATE UNIQUE INDEX prs_branch ON prs (branch);
