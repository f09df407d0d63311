-- A corrected critical value follows its alert. Each observation records the one it
-- replaced (a correction, or a final after a preliminary) and the alert version that
-- covers it; an alert becomes a chain of versions under one delivery id: version 1
-- raised, later versions replacing the value (still critical) or withdrawing it.
-- Alerts stored before this release are version 1, not superseded.
ALTER TABLE lab_observations ADD COLUMN replaces BIGINT REFERENCES lab_observations (id);
ALTER TABLE lab_observations ADD COLUMN alert_id BIGINT REFERENCES critical_alerts (id);
ALTER TABLE critical_alerts ADD COLUMN version BIGINT NOT NULL DEFAULT 1;
ALTER TABLE critical_alerts ADD COLUMN withdrawn BIGINT NOT NULL DEFAULT 0;
ALTER TABLE critical_alerts ADD COLUMN superseded_at BIGINT;
UPDATE lab_observations SET alert_id =
    (SELECT MIN(a.id) FROM critical_alerts a WHERE a.observation_id = lab_observations.id);
CREATE INDEX lab_observations_replaces ON lab_observations (replaces);
