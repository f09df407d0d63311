-- Settings an administrator changes at run time (reading deadlines), one JSON value per
-- key, shared by every hub on the database (PostgreSQL).
CREATE TABLE settings (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    updated_by TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);
