-- The instances of the service that work the queue: one at a time on SQLite
-- (it holds the file's lock), several on PostgreSQL. Each registers at start
-- under a fresh id and beats every second; one that has not beaten for a few
-- seconds is dead, and its claims, cards and singleton work go to the others.
CREATE TABLE instances (
    id           TEXT    PRIMARY KEY,
    name         TEXT    NOT NULL,
    version      TEXT    NOT NULL,
    intake       TEXT    NOT NULL,
    admin        TEXT    NOT NULL,
    started_at   INTEGER NOT NULL,
    heartbeat_at INTEGER NOT NULL,
    stopped_at   INTEGER,
    stop_reason  TEXT
);
CREATE INDEX instances_running ON instances (heartbeat_at) WHERE stopped_at IS NULL;

-- Who holds a claim: the instance that made it.
ALTER TABLE requests ADD COLUMN lease_owner TEXT;

-- Which instance wrote a "PIN in flight" mark (NULL: a command, or a mark
-- older than instances).
ALTER TABLE pin_in_flight ADD COLUMN instance TEXT;

-- The one instance that drives each card, while it lives, and what it last
-- saw of the card (JSON), for the status of every instance. A card's pauses
-- stay in `controls` and its marks in `pin_in_flight`; taking a card over
-- turns the marks others left on it into its pause, in the same transaction.
CREATE TABLE card_leases (
    card    TEXT    PRIMARY KEY,
    owner   TEXT    NOT NULL,
    since   INTEGER NOT NULL,
    live    TEXT,
    live_at INTEGER
);

-- Work that one instance at a time does (the preparer's sweep, the alerts),
-- held while its owner lives.
CREATE TABLE singletons (
    name  TEXT    PRIMARY KEY,
    owner TEXT    NOT NULL,
    since INTEGER NOT NULL
);

-- Instances with event streams open that want to hear of every request
-- changed, whoever changed it. On PostgreSQL only (see its migration 0002):
-- on SQLite one process makes every change, and knows them.
CREATE TABLE change_listeners (
    instance TEXT    PRIMARY KEY,
    since    INTEGER NOT NULL
);
