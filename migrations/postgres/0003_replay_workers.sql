-- Which instance works a confirmed bulk replay through (SQLite's migration
-- 0018 says how it is kept).
ALTER TABLE replays ADD COLUMN worker TEXT;
