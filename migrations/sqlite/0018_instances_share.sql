-- What instances share beyond claims, cards and singletons.

-- Which instance works a confirmed bulk replay through. Set by the instance
-- that confirmed it, cleared when that instance stops or is declared dead; a
-- replay no live instance works is adopted by the next one that looks (every
-- instance looks at its start and at each heartbeat).
ALTER TABLE replays ADD COLUMN worker TEXT;

-- What the instance saw of customs in the last hour (JSON: its answers per
-- minute and code, its last success), written with each heartbeat, so that
-- the status and the alerts of any instance tell of every instance's uploads.
ALTER TABLE instances ADD COLUMN customs TEXT;
