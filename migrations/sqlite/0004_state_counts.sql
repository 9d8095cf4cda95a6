-- Requests per state, kept exact by triggers in the same transaction as every
-- change of a request's state, so that reading the counts never scans the
-- requests table (which holds years of requests).
CREATE TABLE state_counts (
    state TEXT    PRIMARY KEY,
    n     INTEGER NOT NULL
);
INSERT INTO state_counts (state, n)
SELECT column1, (SELECT COUNT(*) FROM requests WHERE state = column1)
FROM (VALUES ('waiting'), ('ready'), ('signed'), ('delivered'), ('failed'));

CREATE TRIGGER requests_counted_on_insert AFTER INSERT ON requests
BEGIN
    UPDATE state_counts SET n = n + 1 WHERE state = NEW.state;
END;

CREATE TRIGGER requests_counted_on_update AFTER UPDATE OF state ON requests
WHEN OLD.state <> NEW.state
BEGIN
    UPDATE state_counts SET n = n - 1 WHERE state = OLD.state;
    UPDATE state_counts SET n = n + 1 WHERE state = NEW.state;
END;

CREATE TRIGGER requests_counted_on_delete AFTER DELETE ON requests
BEGIN
    UPDATE state_counts SET n = n - 1 WHERE state = OLD.state;
END;
