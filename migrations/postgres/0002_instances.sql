-- Several instances on one database (SQLite's migration 0017 says why each
-- table is there), and counters that are not one hot row for all of them.
CREATE TABLE instances (
    id           TEXT   PRIMARY KEY,
    name         TEXT   NOT NULL,
    version      TEXT   NOT NULL,
    intake       TEXT   NOT NULL,
    admin        TEXT   NOT NULL,
    started_at   BIGINT NOT NULL,
    heartbeat_at BIGINT NOT NULL,
    stopped_at   BIGINT,
    stop_reason  TEXT
);
CREATE INDEX instances_running ON instances (heartbeat_at) WHERE stopped_at IS NULL;

ALTER TABLE requests ADD COLUMN lease_owner TEXT;
ALTER TABLE pin_in_flight ADD COLUMN instance TEXT;

CREATE TABLE card_leases (
    card    TEXT   PRIMARY KEY,
    owner   TEXT   NOT NULL,
    since   BIGINT NOT NULL,
    live    TEXT,
    live_at BIGINT
);

CREATE TABLE singletons (
    name  TEXT   PRIMARY KEY,
    owner TEXT   NOT NULL,
    since BIGINT NOT NULL
);

-- Each count is spread over 16 rows, one per shard: a transaction counts in
-- the shard of its connection (its backend's pid), so that the intake batches
-- of several instances do not all queue for one row. A count is the sum of
-- its shards.
ALTER TABLE state_counts ADD COLUMN shard BIGINT NOT NULL DEFAULT 0;
ALTER TABLE state_counts DROP CONSTRAINT state_counts_pkey;
ALTER TABLE state_counts ADD PRIMARY KEY (state, shard);
INSERT INTO state_counts (state, shard, n)
SELECT s.state, g, 0 FROM (SELECT DISTINCT state FROM state_counts) s, generate_series(1, 15) g;

ALTER TABLE late_deliveries DROP CONSTRAINT late_deliveries_id_check;
INSERT INTO late_deliveries (id, n) SELECT g, 0 FROM generate_series(0, 15) g WHERE g <> 1;

CREATE OR REPLACE FUNCTION requests_counted() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    s BIGINT := pg_backend_pid() % 16;
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        UPDATE state_counts SET n = n - 1 WHERE state = OLD.state AND shard = s;
        IF OLD.delivered_at > OLD.deadline_at THEN
            UPDATE late_deliveries SET n = n - 1 WHERE id = s;
        END IF;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        UPDATE state_counts SET n = n + 1 WHERE state = NEW.state AND shard = s;
        IF NEW.delivered_at > NEW.deadline_at THEN
            UPDATE late_deliveries SET n = n + 1 WHERE id = s;
        END IF;
    END IF;
    RETURN NULL;
END;
$$;
