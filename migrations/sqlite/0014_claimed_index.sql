-- The requests claimed now (few: what the workers hold), so that a start
-- releases a dead process's leases without reading every request.
CREATE INDEX requests_claimed ON requests (lease_until) WHERE lease_until IS NOT NULL;
