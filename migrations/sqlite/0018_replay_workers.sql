-- Which instance works a confirmed bulk replay through. Set by the instance
-- that confirmed it, cleared when that instance stops or is declared dead; a
-- replay no live instance works is adopted by the next one that looks (every
-- instance looks at its start and at each heartbeat).
ALTER TABLE replays ADD COLUMN worker TEXT;
