-- What instances share beyond claims, cards and singletons (SQLite's
-- migration 0018 says how each column is kept).
ALTER TABLE replays ADD COLUMN worker TEXT;
ALTER TABLE instances ADD COLUMN customs TEXT;
