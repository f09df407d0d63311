-- Laboratory results (PostgreSQL). Lab exams have no DICOM study.
ALTER TABLE exams ALTER COLUMN study_uid DROP NOT NULL;

-- Every HL7 message as received (the original is evidence), once per site + MSH-10.
CREATE TABLE hl7_messages (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    site TEXT NOT NULL,
    control_id TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    message_type TEXT NOT NULL,
    raw BYTEA NOT NULL,
    received_at BIGINT NOT NULL,
    UNIQUE (site, control_id)
);

CREATE TABLE lab_orders (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    exam_id BIGINT NOT NULL UNIQUE REFERENCES exams (id),
    site TEXT NOT NULL,
    -- site + filler (else placer) number + test code identify an order across messages.
    order_key TEXT NOT NULL,
    patient_id TEXT NOT NULL,
    patient_name TEXT,
    birth_date TEXT,
    sex TEXT,
    placer_number TEXT,
    filler_number TEXT,
    test_code TEXT NOT NULL,
    test_text TEXT,
    test_system TEXT,
    test_loinc TEXT,
    specimen_at BIGINT,
    observed_at BIGINT,
    priority TEXT,
    result_status TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE (site, order_key)
);
CREATE INDEX lab_orders_patient ON lab_orders (site, patient_id, observed_at);

CREATE TABLE lab_observations (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    order_id BIGINT NOT NULL REFERENCES lab_orders (id),
    message_id BIGINT NOT NULL REFERENCES hl7_messages (id),
    set_id TEXT,
    code TEXT NOT NULL,
    code_text TEXT,
    code_system TEXT,
    loinc TEXT,
    sub_id TEXT,
    value_type TEXT NOT NULL,
    value_text TEXT NOT NULL,
    value_num DOUBLE PRECISION,
    units TEXT,
    reference_range TEXT,
    flags TEXT NOT NULL DEFAULT '',
    status TEXT,
    observed_at BIGINT,
    critical BIGINT NOT NULL DEFAULT 0,
    -- 1 for the value shown; a correction (status C) sets the earlier one to 0.
    current BIGINT NOT NULL DEFAULT 1,
    received_at BIGINT NOT NULL
);
CREATE INDEX lab_observations_order ON lab_observations (order_id, current);
CREATE INDEX lab_observations_code ON lab_observations (code, loinc);

-- A critical result and what became of it; delivered to the township like a report.
CREATE TABLE critical_alerts (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    exam_id BIGINT NOT NULL REFERENCES exams (id),
    observation_id BIGINT NOT NULL REFERENCES lab_observations (id),
    site TEXT NOT NULL,
    payload TEXT NOT NULL,
    signature TEXT NOT NULL,
    key_id TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    escalated_at BIGINT
);
CREATE INDEX critical_alerts_open ON critical_alerts (escalated_at, created_at);

ALTER TABLE deliveries ADD COLUMN alert_id BIGINT REFERENCES critical_alerts (id);

UPDATE report_templates SET fields =
 '[{"key":"results","label_zh":"检验结果","label_en":"Results","multiline":true},{"key":"comment","label_zh":"审核意见","label_en":"Review comment","multiline":true},{"key":"conclusion","label_zh":"结论","label_en":"Conclusion","multiline":true}]'
WHERE id = 'lab';
INSERT INTO report_templates (id, kind, modality, name, fields, updated_by, updated_at) VALUES
('critical-alert', 'lab', 'ALERT', '危急值通知',
 '[{"key":"alert","label_zh":"危急值","label_en":"Critical value","multiline":true},{"key":"test","label_zh":"项目","label_en":"Test","multiline":false},{"key":"value","label_zh":"结果","label_en":"Value","multiline":false}]',
 'system', 0);
