-- Reports the county signs, pulled from the hub's delivery feed (docs/reports.md).
-- All times are Unix epoch milliseconds (UTC).

-- One row per received report version: the verified ones, and those kept aside because
-- they failed verification (verified = 0 with verify_error; never shown as valid). The
-- signed text is kept exactly as received so it can be verified again at any time.
CREATE TABLE report_versions (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    report_id         TEXT NOT NULL,
    version           INTEGER NOT NULL,
    -- preliminary / final / amended (from the signed payload when it parses).
    status            TEXT NOT NULL,
    critical          INTEGER NOT NULL DEFAULT 0,
    -- Exam fields for listing, from the payload (unverified rows: as claimed, untrusted).
    exam_kind         TEXT,
    exam_site         TEXT,
    patient_id        TEXT,
    patient_name      TEXT,
    study_uid         TEXT,
    accession_number  TEXT,
    modality          TEXT,
    -- Amendment reason.
    reason            TEXT,
    signer_name       TEXT,
    signed_at         INTEGER,
    payload           TEXT NOT NULL,
    payload_sha256    TEXT NOT NULL,
    signature         TEXT NOT NULL,
    key_id            TEXT NOT NULL,
    verified          INTEGER NOT NULL CHECK (verified IN (0, 1)),
    verify_error      TEXT,
    received_at       INTEGER NOT NULL,
    -- The version's PDF under data_dir (reports/...), once fetched.
    pdf_path          TEXT,
    pdf_attempts      INTEGER NOT NULL DEFAULT 0,
    pdf_next_at       INTEGER NOT NULL DEFAULT 0,
    pdf_error         TEXT,
    -- Critical finding acknowledged by a township clinician, then relayed to the hub.
    acknowledged_by   TEXT,
    acknowledged_at   INTEGER,
    relayed_at        INTEGER,
    relay_attempts    INTEGER NOT NULL DEFAULT 0,
    relay_next_at     INTEGER NOT NULL DEFAULT 0,
    relay_error       TEXT,
    -- Forwarding to the local HIS as HL7 v2 ORU^R01 over MLLP (only when his_mllp_addr
    -- was configured when the version arrived): NULL = not to be sent.
    hl7_state         TEXT CHECK (hl7_state IN ('pending', 'sent', 'refused')),
    hl7_attempts      INTEGER NOT NULL DEFAULT 0,
    hl7_next_at       INTEGER NOT NULL DEFAULT 0,
    hl7_error         TEXT,
    hl7_sent_at       INTEGER,
    -- What failed verification never gets a PDF, an acknowledgement or goes to the HIS.
    CHECK (verified = 1 OR (pdf_path IS NULL AND acknowledged_at IS NULL AND hl7_state IS NULL))
);

-- Signed versions are immutable: one verified text per report version.
CREATE UNIQUE INDEX report_versions_valid ON report_versions (report_id, version) WHERE verified = 1;
CREATE INDEX report_versions_by_report ON report_versions (report_id, version);
CREATE INDEX report_versions_pdf_due ON report_versions (pdf_next_at)
    WHERE verified = 1 AND pdf_path IS NULL;
CREATE INDEX report_versions_relay_due ON report_versions (relay_next_at)
    WHERE acknowledged_at IS NOT NULL AND relayed_at IS NULL;
CREATE INDEX report_versions_hl7_due ON report_versions (hl7_next_at) WHERE hl7_state = 'pending';

-- What was received and what it was judged to be can never be rewritten.
CREATE TRIGGER report_versions_received_text_immutable
BEFORE UPDATE OF report_id, version, payload, signature, key_id, verified, verify_error
ON report_versions
BEGIN
    SELECT RAISE(ABORT, 'received report versions are immutable');
END;

-- One row per delivery item (the hub's cursor), with our answer to the hub. A re-sent
-- identical version points at the row already held.
CREATE TABLE report_deliveries (
    cursor        INTEGER PRIMARY KEY NOT NULL,
    version_row   INTEGER REFERENCES report_versions (id),
    report_id     TEXT,
    version       INTEGER,
    status        TEXT NOT NULL CHECK (status IN ('stored', 'rejected')),
    reason        TEXT,
    received_at   INTEGER NOT NULL,
    ack_sent_at   INTEGER,
    ack_attempts  INTEGER NOT NULL DEFAULT 0,
    ack_next_at   INTEGER NOT NULL DEFAULT 0,
    ack_error     TEXT
);

CREATE INDEX report_deliveries_ack_due ON report_deliveries (ack_next_at) WHERE ack_sent_at IS NULL;

-- The delivery feed's position and health (one row).
CREATE TABLE report_state (
    id               INTEGER PRIMARY KEY CHECK (id = 1),
    -- Everything up to this cursor is stored (or kept aside); polls ask for more.
    cursor           INTEGER NOT NULL DEFAULT 0,
    last_error       TEXT,
    last_error_at    INTEGER,
    last_contact_at  INTEGER,
    -- The local page's address, or why it is not listening.
    page             TEXT
);

INSERT INTO report_state (id, cursor) VALUES (1, 0);

-- The hub's verification keys as fetched from /api/signing-keys (when not pinned in the
-- configuration). A key never disappears: old reports must keep verifying.
CREATE TABLE report_keys (
    key_id         TEXT PRIMARY KEY NOT NULL,
    public_key     TEXT NOT NULL,
    first_seen_at  INTEGER NOT NULL
);

CREATE TRIGGER report_keys_never_removed BEFORE DELETE ON report_keys
BEGIN
    SELECT RAISE(ABORT, 'report verification keys are never removed');
END;

CREATE TRIGGER report_keys_never_changed BEFORE UPDATE ON report_keys
BEGIN
    SELECT RAISE(ABORT, 'report verification keys are never changed');
END;
