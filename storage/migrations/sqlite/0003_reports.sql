-- Worklist deadlines and claims, report templates, signed report versions, the hub's
-- signing keys and the per-site delivery outbox (SQLite). Times: ms since the epoch.

ALTER TABLE exams ADD COLUMN deadline_at INTEGER;
ALTER TABLE exams ADD COLUMN claimed_by INTEGER REFERENCES users (id);
ALTER TABLE exams ADD COLUMN claimed_until INTEGER;
ALTER TABLE exams ADD COLUMN final_at INTEGER;
ALTER TABLE exams ADD COLUMN delivered_at INTEGER;
ALTER TABLE exams ADD COLUMN final_by TEXT;
CREATE INDEX exams_worklist ON exams (status, deadline_at);

CREATE TABLE report_templates (
    id TEXT PRIMARY KEY NOT NULL,
    kind TEXT NOT NULL,
    modality TEXT,
    name TEXT NOT NULL,
    -- JSON array of {"key","label_zh","label_en","multiline"}.
    fields TEXT NOT NULL,
    updated_by TEXT NOT NULL,
    updated_at INTEGER NOT NULL
);

INSERT INTO report_templates (id, kind, modality, name, fields, updated_by, updated_at) VALUES
('imaging', 'imaging', NULL, '影像检查报告',
 '[{"key":"findings","label_zh":"检查所见","label_en":"Findings","multiline":true},{"key":"impression","label_zh":"诊断意见","label_en":"Impression","multiline":true}]',
 'system', 0),
('ecg', 'ecg', NULL, '心电图报告',
 '[{"key":"rhythm","label_zh":"节律","label_en":"Rhythm","multiline":false},{"key":"rate","label_zh":"心率","label_en":"Rate","multiline":false},{"key":"intervals","label_zh":"间期 (PR/QRS/QT/QTc)","label_en":"Intervals (PR/QRS/QT/QTc)","multiline":false},{"key":"axis","label_zh":"电轴","label_en":"Axis","multiline":false},{"key":"conclusion","label_zh":"心电图诊断","label_en":"Conclusion","multiline":true}]',
 'system', 0),
('lab', 'lab', NULL, '检验报告',
 '[{"key":"comment","label_zh":"审核意见","label_en":"Review comment","multiline":true},{"key":"conclusion","label_zh":"结论","label_en":"Conclusion","multiline":true}]',
 'system', 0);

CREATE TABLE reports (
    id TEXT PRIMARY KEY NOT NULL,
    exam_id INTEGER NOT NULL UNIQUE REFERENCES exams (id),
    template_id TEXT NOT NULL REFERENCES report_templates (id),
    -- The text being written: JSON object field -> text.
    draft TEXT NOT NULL,
    critical INTEGER NOT NULL DEFAULT 0,
    draft_by TEXT,
    draft_updated_at INTEGER,
    current_version INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL
);

-- Signed versions: immutable once written.
CREATE TABLE report_versions (
    report_id TEXT NOT NULL REFERENCES reports (id),
    version INTEGER NOT NULL,
    status TEXT NOT NULL,
    critical INTEGER NOT NULL,
    payload TEXT NOT NULL,
    signature TEXT NOT NULL,
    key_id TEXT NOT NULL,
    signer TEXT NOT NULL,
    signed_at INTEGER NOT NULL,
    PRIMARY KEY (report_id, version)
);
CREATE TRIGGER report_versions_no_update BEFORE UPDATE ON report_versions
BEGIN SELECT RAISE(ABORT, 'signed report versions are immutable'); END;
CREATE TRIGGER report_versions_no_delete BEFORE DELETE ON report_versions
BEGIN SELECT RAISE(ABORT, 'signed report versions are immutable'); END;

-- Published verification keys of every hub process that ever signed.
CREATE TABLE signing_keys (
    key_id TEXT PRIMARY KEY NOT NULL,
    public_key TEXT NOT NULL,
    created_at INTEGER NOT NULL
);

-- What each township's gateway is to fetch, in cursor order.
CREATE TABLE deliveries (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    site TEXT NOT NULL,
    report_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    critical INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    delivered_at INTEGER,
    acknowledged_at INTEGER,
    ack_status TEXT,
    ack_reason TEXT,
    critical_ack_at INTEGER,
    critical_ack_by TEXT,
    UNIQUE (report_id, version)
);
CREATE INDEX deliveries_site ON deliveries (site, seq);
