-- Several cards. Each upload keeps the name of the card that signed it, and
-- each "PIN in flight" mark the card it concerns (NULL for marks written
-- before cards had names: such a mark pauses signing on every card). A
-- card's own pauses are rows of `controls` named `card:NAME:signing` and
-- `card:NAME:uploading`.
ALTER TABLE uploads ADD COLUMN card TEXT;
ALTER TABLE pin_in_flight ADD COLUMN card TEXT;
