-- How many instances a series had when its default thumbnail was last made, so that
-- after a restart every series whose thumbnail is missing or out of date is found
-- (the render queue itself lives in memory). Series stored before this release are
-- taken as done: their thumbnails are rendered on first request when missing.
ALTER TABLE series ADD COLUMN thumbnailed_instances INTEGER NOT NULL DEFAULT 0;
UPDATE series SET thumbnailed_instances = num_instances;
CREATE INDEX series_thumbnail_due ON series (created_at)
    WHERE num_instances <> thumbnailed_instances;
