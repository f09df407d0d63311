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

-- The ECG report records the automatic measurements beside the confirmed ones.
UPDATE report_templates SET fields =
 '[{"key":"rhythm","label_zh":"节律","label_en":"Rhythm","multiline":false},{"key":"rate","label_zh":"心率","label_en":"Rate","multiline":false},{"key":"intervals","label_zh":"间期 (PR/QRS/QT/QTc)","label_en":"Intervals (PR/QRS/QT/QTc)","multiline":false},{"key":"axis","label_zh":"电轴","label_en":"Axis","multiline":false},{"key":"conclusion","label_zh":"心电图诊断","label_en":"Conclusion","multiline":true},{"key":"automatic","label_zh":"自动测量（仅供参考）","label_en":"Automatic measurements (for reference)","multiline":true}]'
WHERE id = 'ecg';
