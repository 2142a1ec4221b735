-- What the owner says about each key on the dashboard: a note, a few tags, and whether it was taken out of
-- rotation by hand. By fingerprint only, like every other key table: no key is stored here.
-- The hand-disabling itself lives in key_state (disabled_reason, disabled_at) like any other; this row
-- remembers that it was by hand: disabled_by_hand_at equals key_state.disabled_at while it lasts, so a key
-- re-enabled and later disabled by Google is not taken for a hand-disabled one.
CREATE TABLE key_note (
    key_fp             TEXT PRIMARY KEY,
    note               TEXT NOT NULL DEFAULT '',    -- free text, keys in it masked before it is written
    tags               TEXT NOT NULL DEFAULT '[]',  -- JSON array of short labels
    disabled_by_hand_at REAL,                       -- the disabled_at of the last disabling by hand
    updated_at         REAL NOT NULL
) WITHOUT ROWID;
