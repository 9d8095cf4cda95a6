-- customs179's queue. Times are unix milliseconds (INTEGER); JSON is TEXT,
-- kept byte for byte as it was written.

-- A payment as the platform sent it, in its canonical stored form.
CREATE TABLE payments (
    id                 INTEGER PRIMARY KEY,
    pay_code           TEXT    NOT NULL,
    pay_transaction_id TEXT    NOT NULL,
    record             TEXT    NOT NULL,
    received_at        INTEGER NOT NULL,
    UNIQUE (pay_code, pay_transaction_id)
);

-- Which payment paid which order: an order is paid by one payment only.
CREATE TABLE payment_orders (
    order_no   TEXT    PRIMARY KEY,
    payment_id INTEGER NOT NULL REFERENCES payments (id)
);

-- One customs request (openReq) and where it stands.
--
-- Work waiting in a state is claimed by setting lease_until and bumping
-- generation in one statement; every later write names the generation it
-- claimed, so a worker whose lease expired cannot overwrite newer work.
CREATE TABLE requests (
    session_id      TEXT    PRIMARY KEY,
    order_no        TEXT    NOT NULL,
    open_req        TEXT    NOT NULL,
    customs_time    INTEGER NOT NULL,
    received_at     INTEGER NOT NULL,
    deadline_at     INTEGER NOT NULL,
    state           TEXT    NOT NULL,
    -- Since when the request waits for payment data (reset by a replay).
    waiting_since   INTEGER NOT NULL,
    generation      INTEGER NOT NULL DEFAULT 0,
    lease_until     INTEGER,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    last_error      TEXT,
    upload_id       INTEGER REFERENCES uploads (id),
    delivered_at    INTEGER,
    updated_at      INTEGER NOT NULL
);
CREATE INDEX requests_due ON requests (state, next_attempt_at);
CREATE INDEX requests_by_order ON requests (order_no);
CREATE INDEX requests_waiting ON requests (state, waiting_since);
CREATE INDEX requests_newest ON requests (received_at DESC, session_id DESC);

-- One prepared upload of a request: a replay makes a new one and keeps the old.
CREATE TABLE uploads (
    id           INTEGER PRIMARY KEY,
    session_id   TEXT    NOT NULL REFERENCES requests (session_id),
    payment_id   INTEGER NOT NULL REFERENCES payments (id),
    guid         TEXT    NOT NULL,
    service_time INTEGER NOT NULL,
    presign      TEXT    NOT NULL,
    cert_no      TEXT,
    sign_value   TEXT,
    upload_body  TEXT,
    created_at   INTEGER NOT NULL
);
CREATE INDEX uploads_by_session ON uploads (session_id);

-- Every attempt at a step of a request, and what came of it.
CREATE TABLE attempts (
    id         INTEGER PRIMARY KEY,
    session_id TEXT    NOT NULL REFERENCES requests (session_id),
    upload_id  INTEGER REFERENCES uploads (id),
    step       TEXT    NOT NULL,
    at         INTEGER NOT NULL,
    outcome    TEXT    NOT NULL,
    detail     TEXT
);
CREATE INDEX attempts_by_session ON attempts (session_id, id);
