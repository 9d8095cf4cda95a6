-- When an upload's signature was made and verified, for a request's timeline.
ALTER TABLE uploads ADD COLUMN signed_at INTEGER;
