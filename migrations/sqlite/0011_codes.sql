-- What each attempt came to, as a code (customs' answer code, or a kind of
-- error of ours: OPERATIONS.md lists them), and how long it took; and the
-- code of each request's current problem (the kind of its last_error), by
-- which operators find requests (GET /api/requests?code=).
ALTER TABLE attempts ADD COLUMN code TEXT;
ALTER TABLE attempts ADD COLUMN took_ms INTEGER;
ALTER TABLE requests ADD COLUMN last_code TEXT;
-- Only requests with a problem are in these, so intake and deliveries
-- (which clear the problem) barely touch them.
CREATE INDEX requests_by_code ON requests (last_code, received_at, session_id)
    WHERE last_code IS NOT NULL;
CREATE INDEX requests_by_code_deadline ON requests (last_code, deadline_at, session_id)
    WHERE last_code IS NOT NULL;
CREATE INDEX requests_by_state_code ON requests (state, last_code, received_at, session_id)
    WHERE last_code IS NOT NULL;
