-- ECG files imported from the watched folder (`ecg_import_dir`, filled by carts that only
-- export files and by `gateway import`) and forwarded to the hub by POST /ingest/ecg.
-- All times are Unix epoch milliseconds (UTC).

-- One row per distinct file content. The file is removed from the import folder only
-- after its row (with the bytes) is committed: the row is the durable copy.
CREATE TABLE ecg_files (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    -- Hex SHA-256 of the file exactly as found: the same bytes imported again (another
    -- name, another folder) are the same recording and are stored once.
    sha256           TEXT NOT NULL UNIQUE,
    -- The original file, byte for byte. Emptied once delivered (the hub keeps the
    -- original) or rejected by the hub (the quarantine file keeps it).
    body             BLOB NOT NULL,
    size             INTEGER NOT NULL,
    -- The file's name in the import folder (without `stat/`), sent to the hub.
    file_name        TEXT NOT NULL,
    -- 'SCP-ECG', 'aECG' or 'DICOM ECG', as read by formats::ecg::read_any.
    format           TEXT NOT NULL,
    -- From the recording, for the operator: leads (derived limb leads included),
    -- duration, patient.
    leads            INTEGER NOT NULL,
    duration_ms      INTEGER NOT NULL,
    patient_id       TEXT,
    patient_name     TEXT,
    -- 1 = STAT (the `stat/` subfolder, a `.stat.` name, or STAT/HIGH in the file).
    stat             INTEGER NOT NULL DEFAULT 0,
    state            TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'rejected')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  INTEGER NOT NULL,
    last_error       TEXT,
    last_error_at    INTEGER,
    received_at      INTEGER NOT NULL,
    delivered_at     INTEGER,
    -- What the hub said: "stored" or "duplicate", and its exam id.
    hub_status       TEXT,
    exam_id          INTEGER
);

-- The forwarder takes the due file that is STAT first, then oldest.
CREATE INDEX ecg_files_pending ON ecg_files (stat DESC, id) WHERE state = 'pending';

-- The import folder being watched, or why none is (one row).
CREATE TABLE ecg_state (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    import_dir  TEXT,
    note        TEXT
);

INSERT INTO ecg_state (id) VALUES (1);

-- Quarantine rows now also hold ECG files. SQLite cannot change a CHECK constraint in
-- place, so the table is rebuilt with the same rows (ids kept) and a file_name column
-- (the ECG file's original name).
CREATE TABLE quarantine_new (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    item_id           INTEGER REFERENCES items (id),
    sop_instance_uid  TEXT,
    study_uid         TEXT,
    calling_ae        TEXT,
    path              TEXT,
    source            TEXT NOT NULL CHECK (source IN ('receive', 'hub')),
    reason            TEXT NOT NULL,
    created_at        INTEGER NOT NULL,
    kind              TEXT NOT NULL DEFAULT 'dicom' CHECK (kind IN ('dicom', 'hl7', 'ecg')),
    control_id        TEXT,
    sha256            TEXT,
    file_name         TEXT
);

INSERT INTO quarantine_new (id, item_id, sop_instance_uid, study_uid, calling_ae, path, source,
                            reason, created_at, kind, control_id, sha256)
SELECT id, item_id, sop_instance_uid, study_uid, calling_ae, path, source, reason, created_at,
       kind, control_id, sha256
FROM quarantine;

DROP TABLE quarantine;
ALTER TABLE quarantine_new RENAME TO quarantine;
CREATE INDEX quarantine_by_sha256 ON quarantine (sha256) WHERE sha256 IS NOT NULL;
