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

-- Instances with event streams open (a console), which want to hear of every
-- request changed, whoever changed it. While there is one, each statement that
-- changes requests notifies the sessionIDs it changed on the schema's channel,
-- in notifications under PostgreSQL's 8,000-byte limit; while there is none, a
-- statement costs a look at this small table.
CREATE TABLE change_listeners (
    instance TEXT   PRIMARY KEY,
    since    BIGINT NOT NULL
);

CREATE FUNCTION requests_notified() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    channel TEXT;
    batch   TEXT := '';
    id      TEXT;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM change_listeners) THEN
        RETURN NULL;
    END IF;
    channel := 'customs179_' || md5(current_schema());
    FOR id IN SELECT DISTINCT session_id FROM changed LOOP
        IF octet_length(batch) + octet_length(id) >= 7000 THEN
            PERFORM pg_notify(channel, batch);
            batch := '';
        END IF;
        batch := CASE WHEN batch = '' THEN id ELSE batch || E'\n' || id END;
    END LOOP;
    IF batch <> '' THEN
        PERFORM pg_notify(channel, batch);
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER requests_notified_on_insert AFTER INSERT ON requests
REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION requests_notified();
CREATE TRIGGER requests_notified_on_update AFTER UPDATE ON requests
REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION requests_notified();
