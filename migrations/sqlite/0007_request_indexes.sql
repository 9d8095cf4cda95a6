-- Indexes for the operators' lists (GET /api/requests): each filter with
-- either sort, and state with each of the others (OPERATIONS.md lists them).
-- Newest first: requests_newest (received_at DESC, session_id DESC) exists.
DROP INDEX requests_by_order;
CREATE INDEX requests_by_order ON requests (order_no, received_at, session_id);
CREATE INDEX requests_by_state ON requests (state, received_at, session_id);
CREATE INDEX requests_by_deadline ON requests (deadline_at, session_id);
CREATE INDEX requests_by_state_deadline ON requests (state, deadline_at, session_id);
-- Pending requests by deadline: at risk, late and still pending.
CREATE INDEX requests_pending_by_deadline ON requests (deadline_at)
    WHERE state IN ('waiting', 'ready', 'signed');
-- Delivered late.
CREATE INDEX requests_delivered_late ON requests (received_at) WHERE delivered_at > deadline_at;
