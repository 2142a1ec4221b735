-- One row per client request, and what each client IP used per quota day.

CREATE TABLE request_log (
    id                INTEGER PRIMARY KEY,
    ts                REAL    NOT NULL,  -- epoch seconds when the request arrived
    model             TEXT,
    key_fp            TEXT,              -- the key that answered (or the last one tried)
    attempts          INTEGER NOT NULL DEFAULT 0,
    status            INTEGER NOT NULL,
    latency_ms        REAL    NOT NULL,
    prompt_tokens     INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    client_ip         TEXT,
    stream            INTEGER NOT NULL DEFAULT 0,
    error             TEXT               -- what the client was told, keys masked
);
-- "the last N" reads the rowid backwards; "per minute over the last hour" and pruning range over ts.
CREATE INDEX request_log_ts ON request_log (ts);

CREATE TABLE client_usage (
    day      TEXT    NOT NULL,
    ip       TEXT    NOT NULL,
    requests INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (day, ip)
) WITHOUT ROWID;
