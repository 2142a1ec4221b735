-- Client keys: the owner's friends and apps, each with its own share of the pool (server/client_keys.py).
-- Keys made on the dashboard are stored only as their SHA-256; keys declared in CLIENT_KEYS are never stored.
CREATE TABLE client_key (
    id             TEXT PRIMARY KEY,
    name           TEXT NOT NULL,
    key_hash       TEXT NOT NULL UNIQUE,
    prefix         TEXT NOT NULL,
    daily_requests INTEGER,
    daily_tokens   INTEGER,
    rpm            INTEGER,
    models         TEXT NOT NULL DEFAULT '[]',
    expires        TEXT,
    enabled        INTEGER NOT NULL DEFAULT 1,
    created_at     REAL NOT NULL
) WITHOUT ROWID;

-- Requests and tokens per quota day, client key and model (written by the periodic flush).
CREATE TABLE client_key_usage (
    day      TEXT NOT NULL,
    key_id   TEXT NOT NULL,
    model    TEXT NOT NULL,
    requests INTEGER NOT NULL DEFAULT 0,
    tokens   INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (day, key_id, model)
) WITHOUT ROWID;

-- Which client key made each request (its name; NULL: the owner's PASSWORD or a page session).
ALTER TABLE request_log ADD COLUMN client TEXT;
