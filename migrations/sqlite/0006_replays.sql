-- The operators' view of failures and their bulk replays.

-- Failed requests only (a small part of years of requests): GET /api/failures
-- and a bulk replay's selection read these, never the whole table.
CREATE INDEX requests_failed ON requests (received_at, session_id) WHERE state = 'failed';
-- The attempt that failed a request: its step is the failure's stage.
CREATE INDEX attempts_failed ON attempts (session_id, id) WHERE outcome = 'failed';

-- A bulk replay: made by a dry run (which captures the requests in `replay_items`
-- and hands out `token`), confirmed once with a reason before `expires_at`, then
-- worked through in chunks; `finished_at` is set when no item is left.
CREATE TABLE replays (
    id           INTEGER PRIMARY KEY,
    token        TEXT    NOT NULL UNIQUE,
    -- What the operator asked for, as JSON ({"session_ids": …}, {"group": …}, {"filter": …}).
    selection    TEXT    NOT NULL,
    count        INTEGER NOT NULL,
    created_at   INTEGER NOT NULL,
    created_by   TEXT    NOT NULL,
    expires_at   INTEGER NOT NULL,
    confirmed_at INTEGER,
    confirmed_by TEXT,
    reason       TEXT,
    replayed     INTEGER NOT NULL DEFAULT 0,
    skipped      INTEGER NOT NULL DEFAULT 0,
    finished_at  INTEGER
);
CREATE INDEX replays_unfinished ON replays (id) WHERE confirmed_at IS NOT NULL AND finished_at IS NULL;

-- The requests a dry run captured, as they were then (all failed, at this
-- generation). done: 0 to do, 1 replayed, 2 skipped (it changed meanwhile).
CREATE TABLE replay_items (
    replay_id  INTEGER NOT NULL REFERENCES replays (id),
    session_id TEXT    NOT NULL,
    generation INTEGER NOT NULL,
    done       INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (replay_id, session_id)
) WITHOUT ROWID;
CREATE INDEX replay_items_to_do ON replay_items (replay_id, session_id) WHERE done = 0;
