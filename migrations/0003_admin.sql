-- The dashboard: keys added there, settings changed there, sign-in sessions, the audit trail,
-- and requests per day kept longer than the request log itself.

-- Keys added on the dashboard. They must survive restarts to be useful, so the key itself is
-- stored here (the database file is created with mode 0600). Keys from GEMINI_API_KEYS are never
-- written anywhere.
CREATE TABLE stored_key (
    key_fp   TEXT PRIMARY KEY,
    secret   TEXT NOT NULL,
    added_at REAL NOT NULL
) WITHOUT ROWID;

-- Keys removed on the dashboard, by fingerprint only: a removed GEMINI_API_KEYS entry stays out
-- after a restart until it is added again.
CREATE TABLE removed_key (
    key_fp     TEXT PRIMARY KEY,
    removed_at REAL NOT NULL
) WITHOUT ROWID;

-- Live settings changed on the dashboard; they win over the environment until reset there.
-- env_value is what the environment (or the default) said when the change was made, so the page
-- can say when the environment has changed since (an old saved value never masks it silently).
CREATE TABLE setting_override (
    name       TEXT PRIMARY KEY,
    value      TEXT NOT NULL,
    env_value  TEXT NOT NULL,
    env_source TEXT NOT NULL,
    changed_at REAL NOT NULL
) WITHOUT ROWID;

-- Dashboard sign-ins. Only a hash of the session token is stored.
CREATE TABLE admin_session (
    token_hash TEXT PRIMARY KEY,
    csrf       TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    client_ip  TEXT
) WITHOUT ROWID;

-- Every action taken through the dashboard or the admin API.
CREATE TABLE audit (
    id        INTEGER PRIMARY KEY,
    ts        REAL NOT NULL,
    client_ip TEXT,
    via       TEXT NOT NULL,   -- session or bearer
    action    TEXT NOT NULL,
    target    TEXT,            -- a key's fingerprint or masked form, a setting's name
    detail    TEXT
);

-- Client requests per day (in TZ) by outcome, written with the request log rows but kept for
-- 400 days, so the 30-day chart outlives REQUEST_LOG_DAYS.
CREATE TABLE request_daily (
    day     TEXT    NOT NULL,
    outcome TEXT    NOT NULL,  -- ok, limited (429), client (other 4xx), error (5xx)
    count   INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (day, outcome)
) WITHOUT ROWID;

-- Small values Keyloom keeps for itself (the random part of the session signing secret).
CREATE TABLE meta (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;

-- Days already in the request log, counted in UTC (the TZ of older rows is not known here).
INSERT INTO request_daily (day, outcome, count)
SELECT date(ts, 'unixepoch'),
       CASE WHEN status < 400 THEN 'ok' WHEN status = 429 THEN 'limited'
            WHEN status < 500 THEN 'client' ELSE 'error' END,
       COUNT(*)
FROM request_log GROUP BY 1, 2;
