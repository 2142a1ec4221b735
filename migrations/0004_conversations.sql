-- The chat playground: saved conversations, and sign-in sessions of the page (signed in with PASSWORD).

-- One row per conversation. The messages (with their images, reasoning and usage) and the parameters are
-- JSON documents: the page always reads and writes a conversation whole. search_text holds the titles'
-- and messages' text for search.
CREATE TABLE conversation (
    id          TEXT PRIMARY KEY,
    title       TEXT NOT NULL,
    model       TEXT,
    params      TEXT NOT NULL DEFAULT '{}',
    messages    TEXT NOT NULL DEFAULT '[]',
    search_text TEXT NOT NULL DEFAULT '',
    created_at  REAL NOT NULL,
    updated_at  REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX conversation_updated ON conversation (updated_at);

CREATE TABLE chat_session (
    token_hash TEXT PRIMARY KEY,
    csrf       TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    client_ip  TEXT
) WITHOUT ROWID;
