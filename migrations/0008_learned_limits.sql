-- What Google told Keyloom about each key (server/pool/learned.py): the limits its 429 bodies named
-- (QuotaFailure.violations[].quotaId and quotaValue) per key and model, and the Google Cloud project its
-- errors named. Keys of one project share its quotas. Keys are named by their fingerprint only.

CREATE TABLE key_learned_limit (
    key_fp            TEXT NOT NULL,
    model             TEXT NOT NULL,
    per_day           INTEGER,          -- requests per quota day (GenerateRequestsPerDay…)
    per_minute        INTEGER,          -- requests per minute (GenerateRequestsPerMinute…)
    tokens_per_minute INTEGER,          -- input tokens per minute (…InputTokens…PerMinute…): shown only
    learned_at        REAL NOT NULL,    -- epoch seconds; forgotten a week later (learned again at a refusal)
    PRIMARY KEY (key_fp, model)
) WITHOUT ROWID;

CREATE TABLE key_project (
    key_fp  TEXT PRIMARY KEY,
    project TEXT NOT NULL               -- the project number Google's messages named
) WITHOUT ROWID;
