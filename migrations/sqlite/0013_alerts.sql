-- Alerts: the start and the end of each condition worth telling, and each
-- channel's delivery of them. The deliveries are a durable outbox: an alert
-- made before a crash is sent after the restart, retried with backoff.
CREATE TABLE alerts (
    id       INTEGER PRIMARY KEY,
    kind     TEXT    NOT NULL,
    -- The card it is about ([[signer]] name); '' for the service's conditions.
    card     TEXT    NOT NULL DEFAULT '',
    -- A stage within the condition: the certificate's days-left threshold.
    level    TEXT    NOT NULL DEFAULT '',
    severity TEXT    NOT NULL CHECK (severity IN ('info', 'warning', 'critical')),
    event    TEXT    NOT NULL CHECK (event IN ('raised', 'cleared')),
    count    INTEGER NOT NULL,
    detail   TEXT    NOT NULL,
    since    INTEGER NOT NULL,
    at       INTEGER NOT NULL,
    -- The enterprise (ebp code) whose service made it.
    source   TEXT    NOT NULL
);

-- The conditions that hold now, one per kind and card, with the alert that
-- raised each: a restart goes on from them instead of raising them again.
CREATE TABLE alert_conditions (
    kind     TEXT    NOT NULL,
    card     TEXT    NOT NULL,
    alert_id INTEGER NOT NULL REFERENCES alerts (id),
    PRIMARY KEY (kind, card)
);

CREATE TABLE alert_deliveries (
    alert_id   INTEGER NOT NULL REFERENCES alerts (id),
    channel    TEXT    NOT NULL,
    state      TEXT    NOT NULL CHECK (state IN ('pending', 'sent', 'failed')),
    attempts   INTEGER NOT NULL DEFAULT 0,
    next_at    INTEGER NOT NULL,
    last_code  TEXT,
    last_error TEXT,
    sent_at    INTEGER,
    PRIMARY KEY (alert_id, channel)
);
-- Each channel sends in order: its oldest pending delivery first.
CREATE INDEX alert_deliveries_pending ON alert_deliveries (channel, alert_id) WHERE state = 'pending';
-- Its sends of the last minute, for its rate limit.
CREATE INDEX alert_deliveries_sent ON alert_deliveries (channel, sent_at) WHERE sent_at IS NOT NULL;

-- The requests failed lately (a failed request is not changed until replayed).
CREATE INDEX requests_failed_at ON requests (updated_at) WHERE state = 'failed';
