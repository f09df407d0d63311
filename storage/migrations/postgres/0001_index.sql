-- Index of stored DICOM instances and the exams they form (PostgreSQL).
-- Times are milliseconds since the Unix epoch (UTC).

CREATE TABLE studies (
    study_uid TEXT PRIMARY KEY NOT NULL,
    site TEXT NOT NULL,
    patient_id TEXT,
    issuer_of_patient_id TEXT,
    patient_name TEXT,
    patient_name_match TEXT,
    patient_birth_date TEXT,
    patient_sex TEXT,
    study_date TEXT,
    study_time TEXT,
    accession_number TEXT,
    study_id TEXT,
    study_description TEXT,
    referring_physician_name TEXT,
    specific_character_set TEXT,
    num_series BIGINT NOT NULL DEFAULT 0,
    num_instances BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX studies_patient_id ON studies (patient_id);
CREATE INDEX studies_patient_name ON studies (patient_name_match);
CREATE INDEX studies_study_date ON studies (study_date);
CREATE INDEX studies_accession ON studies (accession_number);
CREATE INDEX studies_site ON studies (site);

CREATE TABLE series (
    series_uid TEXT PRIMARY KEY NOT NULL,
    study_uid TEXT NOT NULL REFERENCES studies (study_uid),
    modality TEXT,
    series_number BIGINT,
    series_description TEXT,
    body_part_examined TEXT,
    num_instances BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL
);
CREATE INDEX series_study ON series (study_uid);
CREATE INDEX series_modality ON series (modality);

CREATE TABLE instances (
    sop_instance_uid TEXT PRIMARY KEY NOT NULL,
    series_uid TEXT NOT NULL REFERENCES series (series_uid),
    study_uid TEXT NOT NULL REFERENCES studies (study_uid),
    sop_class_uid TEXT NOT NULL,
    instance_number BIGINT,
    transfer_syntax_uid TEXT NOT NULL,
    number_of_frames BIGINT,
    rows_ BIGINT,
    columns_ BIGINT,
    size_bytes BIGINT NOT NULL,
    data_set_sha256 TEXT NOT NULL,
    blob_key TEXT NOT NULL,
    metadata TEXT NOT NULL,
    site TEXT NOT NULL,
    received_at BIGINT NOT NULL
);
CREATE INDEX instances_series ON instances (series_uid, instance_number);
CREATE INDEX instances_study ON instances (study_uid);

CREATE TABLE exams (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    study_uid TEXT NOT NULL UNIQUE REFERENCES studies (study_uid),
    site TEXT NOT NULL,
    modality TEXT,
    patient_id TEXT,
    patient_name TEXT,
    priority TEXT NOT NULL,
    status TEXT NOT NULL,
    received_at BIGINT NOT NULL,
    ready_at BIGINT,
    updated_at BIGINT NOT NULL
);
CREATE INDEX exams_status ON exams (status, priority, received_at);

CREATE TABLE exam_events (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    exam_id BIGINT NOT NULL REFERENCES exams (id),
    status TEXT NOT NULL,
    actor TEXT NOT NULL,
    detail TEXT,
    at BIGINT NOT NULL
);
CREATE INDEX exam_events_exam ON exam_events (exam_id, at);
