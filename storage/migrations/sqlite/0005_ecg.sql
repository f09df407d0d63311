-- ECG files imported at a township (SCP-ECG, HL7 aECG, DICOM waveform files): the
-- original is a blob; this row makes it an exam (SQLite). DICOM ECGs received by
-- C-STORE are ordinary instances and need no row here.
CREATE TABLE ecg_records (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    exam_id INTEGER NOT NULL UNIQUE REFERENCES exams (id),
    site TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    blob_key TEXT NOT NULL,
    file_name TEXT,
    format TEXT NOT NULL,
    sample_rate_hz REAL NOT NULL,
    lead_count INTEGER NOT NULL,
    duration_ms INTEGER NOT NULL,
    acquired_at INTEGER,
    created_at INTEGER NOT NULL,
    UNIQUE (site, sha256)
);
