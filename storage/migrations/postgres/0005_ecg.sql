-- ECG files imported at a township (SCP-ECG, HL7 aECG, DICOM waveform files): the
-- original is a blob; this row makes it an exam (PostgreSQL). DICOM ECGs received by
-- C-STORE are ordinary instances and need no row here.
CREATE TABLE ecg_records (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    exam_id BIGINT NOT NULL UNIQUE REFERENCES exams (id),
    site TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    blob_key TEXT NOT NULL,
    file_name TEXT,
    format TEXT NOT NULL,
    sample_rate_hz DOUBLE PRECISION NOT NULL,
    lead_count BIGINT NOT NULL,
    duration_ms BIGINT NOT NULL,
    acquired_at BIGINT,
    created_at BIGINT NOT NULL,
    UNIQUE (site, sha256)
);
