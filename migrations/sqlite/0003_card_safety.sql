-- "PIN in flight": written before a Sign carrying a PIN not yet proven on the
-- card is sent, deleted when the card answers. A row found at start means a
-- process died while the card may have been checking an unproven PIN: signing
-- pauses rather than risk another wrong try.
CREATE TABLE pin_in_flight (
    holder  TEXT    PRIMARY KEY,
    cert_no TEXT    NOT NULL,
    since   INTEGER NOT NULL
);

-- Bumped by every change an operator makes behind a running service's back
-- (replay, pause, resume from the CLI): the service polls it every second.
CREATE TABLE changes (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL
);
INSERT INTO changes (id, version) VALUES (1, 0);
