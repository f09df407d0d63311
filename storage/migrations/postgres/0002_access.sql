-- Sites, accounts, sessions, gateway keys and the audit trail (PostgreSQL).
-- Times are milliseconds since the Unix epoch (UTC).

CREATE TABLE sites (
    id TEXT PRIMARY KEY NOT NULL,
    name TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('county', 'township')),
    created_at BIGINT NOT NULL
);

CREATE TABLE users (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    username TEXT NOT NULL UNIQUE,
    display_name TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('admin', 'technician', 'reader', 'clinician')),
    -- Comma-separated: radiology, cardiology, laboratory (readers only).
    specialties TEXT NOT NULL DEFAULT '',
    grade TEXT CHECK (grade IN ('junior', 'senior')),
    failed_logins BIGINT NOT NULL DEFAULT 0,
    locked_until BIGINT,
    disabled_at BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE user_sites (
    user_id BIGINT NOT NULL REFERENCES users (id),
    site_id TEXT NOT NULL REFERENCES sites (id),
    PRIMARY KEY (user_id, site_id)
);

-- Only the SHA-256 of a session token is stored: a copy of the table logs nobody in.
CREATE TABLE sessions (
    token_hash TEXT PRIMARY KEY NOT NULL,
    user_id BIGINT NOT NULL REFERENCES users (id),
    kind TEXT NOT NULL CHECK (kind IN ('cookie', 'bearer')),
    client_addr TEXT,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    revoked_at BIGINT
);
CREATE INDEX sessions_user ON sessions (user_id);

CREATE TABLE gateway_keys (
    id TEXT PRIMARY KEY NOT NULL,
    site_id TEXT NOT NULL REFERENCES sites (id),
    key_hash TEXT NOT NULL,
    label TEXT NOT NULL DEFAULT '',
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    last_used_at BIGINT,
    revoked_at BIGINT
);
CREATE INDEX gateway_keys_site ON gateway_keys (site_id);

-- Append-only, hash-chained: each event holds the hash of the one before it.
CREATE TABLE audit_events (
    seq BIGINT PRIMARY KEY NOT NULL,
    at BIGINT NOT NULL,
    event_id TEXT NOT NULL,
    event_name TEXT NOT NULL,
    action TEXT NOT NULL,
    outcome BIGINT NOT NULL,
    actor TEXT NOT NULL,
    role TEXT NOT NULL,
    site TEXT,
    client_addr TEXT,
    patient_id TEXT,
    study_uid TEXT,
    exam_id BIGINT,
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
    id BIGINT PRIMARY KEY NOT NULL CHECK (id = 1),
    seq BIGINT NOT NULL,
    hash TEXT NOT NULL
);
INSERT INTO audit_head (id, seq, hash)
VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');

-- What kind of reading an exam needs decides which readers see it.
ALTER TABLE exams ADD COLUMN kind TEXT NOT NULL DEFAULT 'imaging';
CREATE INDEX exams_kind ON exams (kind, site);

-- Append-only in the database too; the hash chain still catches whoever drops these.
CREATE FUNCTION audit_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit events are append-only';
END;
$$;
CREATE TRIGGER audit_events_no_change BEFORE UPDATE OR DELETE ON audit_events
FOR EACH ROW EXECUTE FUNCTION audit_events_append_only();
CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events
FOR EACH STATEMENT EXECUTE FUNCTION audit_events_append_only();
