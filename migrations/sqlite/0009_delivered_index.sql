-- Deliveries by time, for the status's last hour (per minute, and how long
-- each took from customs' call).
CREATE INDEX requests_by_delivered ON requests (delivered_at) WHERE delivered_at IS NOT NULL;
