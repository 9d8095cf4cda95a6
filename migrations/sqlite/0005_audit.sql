-- Every operator action (replay, pause, resume), by the name of the token or
-- command that did it, with the reason given.
CREATE TABLE audit (
    id     INTEGER PRIMARY KEY,
    at     INTEGER NOT NULL,
    actor  TEXT    NOT NULL,
    action TEXT    NOT NULL,
    target TEXT,
    reason TEXT,
    count  INTEGER NOT NULL DEFAULT 1
);

-- Who paused: an operator's name; NULL when the service paused by itself.
ALTER TABLE controls ADD COLUMN paused_by TEXT;
