-- What the township page shows of a study (docs/reports.md, "Township page"): the
-- patient and the exam as the modality sent them, so a technician can tell which study
-- was sent, refused or read without opening files. Taken from each new instance's header
-- (the latest non-empty value wins); NULL for studies received before this migration.
ALTER TABLE studies ADD COLUMN patient_id TEXT;
ALTER TABLE studies ADD COLUMN patient_name TEXT;
ALTER TABLE studies ADD COLUMN accession_number TEXT;
ALTER TABLE studies ADD COLUMN modality TEXT;

-- "What was read": the page looks up the report of each recently sent study.
CREATE INDEX report_versions_by_study ON report_versions (study_uid) WHERE verified = 1;
