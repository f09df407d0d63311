-- Sites, accounts, sessions, gateway keys and the audit trail (SQLite).
-- Times are milliseconds since the Unix epoch (UTC).

CREATE TABLE sites (
    id TEXT PRIMARY KEY NOT NULL,
    name TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('county', 'township')),
    created_at INTEGER NOT NULL
);

CREATE TABLE users (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    username TEXT NOT NULL UNIQUE,
    display_name TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('admin', 'technician', 'reader', 'clinician')),
    -- Comma-separated: radiology, cardiology, laboratory (readers only).
    specialties TEXT NOT NULL DEFAULT '',
    grade TEXT CHECK (grade IN ('junior', 'senior')),
    failed_logins INTEGER NOT NULL DEFAULT 0,
    locked_until INTEGER,
    disabled_at INTEGER,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);

CREATE TABLE user_sites (
    user_id INTEGER NOT NULL REFERENCES users (id),
    site_id TEXT NOT NULL REFERENCES sites (id),
    PRIMARY KEY (user_id, site_id)
);

-- Only the SHA-256 of a session token is stored: a copy of the table logs nobody in.
CREATE TABLE sessions (
    token_hash TEXT PRIMARY KEY NOT NULL,
    user_id INTEGER NOT NULL REFERENCES users (id),
    kind TEXT NOT NULL CHECK (kind IN ('cookie', 'bearer')),
    client_addr TEXT,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    revoked_at INTEGER
);
CREATE INDEX sessions_user ON sessions (user_id);

CREATE TABLE gateway_keys (
    id TEXT PRIMARY KEY NOT NULL,
    site_id TEXT NOT NULL REFERENCES sites (id),
    key_hash TEXT NOT NULL,
    label TEXT NOT NULL DEFAULT '',
    created_by TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    last_used_at INTEGER,
    revoked_at INTEGER
);
CREATE INDEX gateway_keys_site ON gateway_keys (site_id);

-- Append-only, hash-chained: each event holds the hash of the one before it.
CREATE TABLE audit_events (
    seq INTEGER PRIMARY KEY NOT NULL,
    at INTEGER NOT NULL,
    event_id TEXT NOT NULL,
    event_name TEXT NOT NULL,
    action TEXT NOT NULL,
    outcome INTEGER NOT NULL,
    actor TEXT NOT NULL,
    role TEXT NOT NULL,
    site TEXT,
    client_addr TEXT,
    patient_id TEXT,
    study_uid TEXT,
    exam_id INTEGER,
    detail TEXT,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE INDEX audit_events_at ON audit_events (at);
CREATE INDEX audit_events_patient ON audit_events (patient_id, at);
CREATE INDEX audit_events_study ON audit_events (study_uid, at);
CREATE INDEX audit_events_exam ON audit_events (exam_id, at);
CREATE INDEX audit_events_actor ON audit_events (actor, at);

-- The chain's head: its one row is updated first in every appending transaction, which
-- makes appenders take turns (a row lock on PostgreSQL, the write lock on SQLite).
CREATE TABLE audit_head (
    id INTEGER PRIMARY KEY NOT NULL CHECK (id = 1),
    seq INTEGER NOT NULL,
    hash TEXT NOT NULL
);
INSERT INTO audit_head (id, seq, hash)
VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');

-- What kind of reading an exam needs decides which readers see it.
ALTER TABLE exams ADD COLUMN kind TEXT NOT NULL DEFAULT 'imaging';
CREATE INDEX exams_kind ON exams (kind, site);

-- Append-only in the database too; the hash chain still catches whoever drops these.
CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
BEGIN SELECT RAISE(ABORT, 'audit events are append-only'); END;
CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
BEGIN SELECT RAISE(ABORT, 'audit events are append-only'); END;
