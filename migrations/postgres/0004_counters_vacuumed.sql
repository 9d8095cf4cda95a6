-- The counter rows (state_counts, late_deliveries, changes) change with every step of every
-- request: each change leaves a dead version behind. Vacuumed once a thousand pile up, not
-- at a fifth of the table as by default, so that reading them stays a read of a few pages.
-- (This needs autovacuum, which PostgreSQL runs unless it is turned off.)
ALTER TABLE state_counts SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000);
ALTER TABLE late_deliveries SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000);
ALTER TABLE changes SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000);
