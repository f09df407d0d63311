-- Laboratory results received over MLLP (HL7 v2, docs/lab.md) and forwarded to the hub
-- by POST /ingest/hl7. All times are Unix epoch milliseconds (UTC).

-- One row per accepted message. The message is acknowledged AA only after its row (with
-- the bytes) is committed: the row is the durable copy.
CREATE TABLE lab_messages (
    id                   INTEGER PRIMARY KEY AUTOINCREMENT,
    -- MSH-10. With this gateway's site it identifies the message (the hub deduplicates
    -- on site + MSH-10 too): identical bytes again are the same message, other bytes
    -- under a known MSH-10 are refused.
    control_id           TEXT NOT NULL UNIQUE,
    -- Hex SHA-256 of the bytes as received.
    sha256               TEXT NOT NULL,
    -- The bytes exactly as received inside the MLLP frame. Emptied once delivered (the
    -- hub has them) or rejected by the hub (the quarantine file keeps them).
    body                 BLOB NOT NULL,
    size                 INTEGER NOT NULL,
    -- From the message, for the operator: MSH-9, MSH-3, MSH-4, PID-3, counts.
    message_type         TEXT NOT NULL,
    sending_application  TEXT,
    sending_facility     TEXT,
    patient_id           TEXT,
    orders               INTEGER NOT NULL,
    observations         INTEGER NOT NULL,
    -- 1 when an order is STAT or a result is flagged critical (HH, LL, AA).
    urgent               INTEGER NOT NULL DEFAULT 0,
    -- The sender's address (ip:port).
    peer                 TEXT,
    state                TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'rejected')),
    attempts             INTEGER NOT NULL DEFAULT 0,
    next_attempt_at      INTEGER NOT NULL,
    last_error           TEXT,
    last_error_at        INTEGER,
    received_at          INTEGER NOT NULL,
    delivered_at         INTEGER,
    -- What the hub said: "stored" or "duplicate".
    hub_status           TEXT
);

-- Forwarded strictly in the order received (a corrected result must not overtake the
-- one it corrects): the forwarder takes the oldest pending row.
CREATE INDEX lab_messages_pending ON lab_messages (id) WHERE state = 'pending';

-- Quarantine rows now also hold HL7 messages: refused on receipt (malformed,
-- unsupported, a reused MSH-10) or rejected by the hub.
ALTER TABLE quarantine ADD COLUMN kind TEXT NOT NULL DEFAULT 'dicom' CHECK (kind IN ('dicom', 'hl7'));
ALTER TABLE quarantine ADD COLUMN control_id TEXT;
-- Hex SHA-256 of the kept bytes: a sender repeating a refused message is not
-- quarantined again and again.
ALTER TABLE quarantine ADD COLUMN sha256 TEXT;
CREATE INDEX quarantine_by_sha256 ON quarantine (sha256) WHERE sha256 IS NOT NULL;

-- The MLLP listener's address, or why it is not listening (one row).
CREATE TABLE lab_state (
    id        INTEGER PRIMARY KEY CHECK (id = 1),
    listener  TEXT
);

INSERT INTO lab_state (id) VALUES (1);
