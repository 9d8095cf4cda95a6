-- A failed request's group (see crates/store/src/replays.rs) is kept in the
-- row when it fails, so that `/api/failures` groups in one indexed pass
-- instead of reading every failed request and its attempts. Rows failed
-- before this migration get theirs when the store is next opened (the kind
-- is computed in Rust). Only meaningful while state = 'failed'.
ALTER TABLE requests ADD COLUMN failed_stage TEXT;
ALTER TABLE requests ADD COLUMN failed_kind TEXT;
CREATE INDEX requests_failure_groups
    ON requests (failed_stage, failed_kind, received_at, updated_at) WHERE state = 'failed';
