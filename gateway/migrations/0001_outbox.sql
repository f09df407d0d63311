-- The gateway's durable outbox. All times are Unix epoch milliseconds (UTC).

-- One row per study that has received at least one instance. Completion ("the study
-- is complete, tell the hub") is tracked here.
CREATE TABLE studies (
    study_uid          TEXT PRIMARY KEY NOT NULL,
    -- 1 = STAT as soon as any instance of the study is STAT, else 0 (routine).
    priority           INTEGER NOT NULL DEFAULT 0,
    first_received_at  INTEGER NOT NULL,
    last_received_at   INTEGER NOT NULL,
    -- Associations that stored into this study and have not closed yet. Reset to 0 at
    -- start-up: no association survives a restart.
    open_associations  INTEGER NOT NULL DEFAULT 0,
    -- Set when the hub acknowledged the completion notice; cleared by a later instance.
    notified_at        INTEGER,
    notify_attempts    INTEGER NOT NULL DEFAULT 0,
    next_notify_at     INTEGER NOT NULL DEFAULT 0,
    last_notify_error  TEXT
);

CREATE INDEX studies_awaiting_notice ON studies (last_received_at) WHERE notified_at IS NULL;

-- One row per received instance version. The same SOP Instance UID can have several
-- rows: a re-send with different bytes is a new version that the hub judges.
CREATE TABLE items (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    sop_instance_uid    TEXT NOT NULL,
    sop_class_uid       TEXT NOT NULL,
    study_uid           TEXT NOT NULL REFERENCES studies (study_uid),
    series_uid          TEXT NOT NULL,
    transfer_syntax_uid TEXT NOT NULL,
    calling_ae          TEXT NOT NULL,
    called_ae           TEXT NOT NULL,
    -- Spool file, relative to the data directory; points into quarantine/ once rejected.
    path                TEXT NOT NULL,
    -- Size of the whole Part 10 file; the data set starts at dataset_offset.
    size                INTEGER NOT NULL,
    dataset_offset      INTEGER NOT NULL,
    -- Hex SHA-256 of the data set bytes exactly as received (not of our file meta
    -- group, which names the calling AE): the identity used for idempotency.
    sha256              TEXT NOT NULL,
    priority            INTEGER NOT NULL DEFAULT 0,
    state               TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'rejected')),
    -- 0 while the spool file's fsync may not have completed: such rows are verified
    -- against the file at start-up and never used to deduplicate a re-send.
    file_synced         INTEGER NOT NULL DEFAULT 0,
    -- 1 after the hub refused a multi-instance request as a whole: send this one alone.
    solo                INTEGER NOT NULL DEFAULT 0,
    attempts            INTEGER NOT NULL DEFAULT 0,
    next_attempt_at     INTEGER NOT NULL,
    last_error          TEXT,
    last_error_at       INTEGER,
    received_at         INTEGER NOT NULL,
    delivered_at        INTEGER
);

CREATE INDEX items_due ON items (priority DESC, received_at, id) WHERE state = 'pending';
CREATE INDEX items_by_sop ON items (sop_instance_uid, state);
CREATE INDEX items_by_study ON items (study_uid, state);

-- What an operator must look at: instances refused on receipt (unparsable, UID
-- mismatch) and instances the hub rejected permanently.
CREATE TABLE quarantine (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    item_id           INTEGER REFERENCES items (id),
    sop_instance_uid  TEXT,
    study_uid         TEXT,
    calling_ae        TEXT,
    -- The kept file, relative to the data directory (NULL if there was none).
    path              TEXT,
    source            TEXT NOT NULL CHECK (source IN ('receive', 'hub')),
    reason            TEXT NOT NULL,
    created_at        INTEGER NOT NULL
);
