-- Global stops ("signing paused: the card refused", "uploads stopped: 20004").
-- A row means paused; only an operator's resume deletes it.
CREATE TABLE controls (
    name      TEXT    PRIMARY KEY,
    paused_at INTEGER NOT NULL,
    reason    TEXT    NOT NULL
);
