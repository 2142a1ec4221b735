-- Per key, per model, per quota day counters, and the state of each key.
-- A key is named only by its fingerprint (truncated SHA-256): keys themselves are never stored here.

CREATE TABLE key_usage (
    day               TEXT    NOT NULL,  -- quota day, YYYY-MM-DD in QUOTA_RESET_TZ
    key_fp            TEXT    NOT NULL,
    model             TEXT    NOT NULL,
    requests          INTEGER NOT NULL DEFAULT 0,  -- every request that reached Google
    successes         INTEGER NOT NULL DEFAULT 0,
    failures          INTEGER NOT NULL DEFAULT 0,
    prompt_tokens     INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (day, key_fp, model)
) WITHOUT ROWID;

CREATE TABLE key_failures (
    day    TEXT    NOT NULL,
    key_fp TEXT    NOT NULL,
    model  TEXT    NOT NULL,
    kind   TEXT    NOT NULL,  -- InvalidKey, QuotaExceeded, Overloaded, EmptyReply, …
    count  INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (day, key_fp, model, kind)
) WITHOUT ROWID;

CREATE TABLE key_state (
    key_fp           TEXT PRIMARY KEY,
    disabled_reason  TEXT,               -- set: out of rotation (invalid, suspended, leaked)
    disabled_at      REAL,
    backoff_until    REAL,               -- after 5xx/timeouts: not before this time (epoch seconds)
    backoff_failures INTEGER NOT NULL DEFAULT 0,
    last_error       TEXT,
    last_error_at    REAL
) WITHOUT ROWID;

CREATE TABLE key_model_state (
    key_fp         TEXT NOT NULL,
    model          TEXT NOT NULL,
    cooldown_until REAL,                 -- per-minute quota: not before this time (epoch seconds)
    exhausted_day  TEXT,                 -- per-day quota: not again on this quota day
    reason         TEXT,
    PRIMARY KEY (key_fp, model)
) WITHOUT ROWID;
