-- The Responses API's stored answers (store=true, the API's default): what previous_response_id continues
-- and GET /v1/responses/{id} returns. `context` is the conversation up to and including this answer, as
-- Responses input items (the request's input, then the answer's output items), so continuing never needs
-- more than one row. Bounded in days and bytes (RESPONSES_STORE_DAYS, RESPONSES_STORE_MB).
CREATE TABLE stored_response (
    id         TEXT PRIMARY KEY,
    created_at REAL NOT NULL,
    response   TEXT NOT NULL,
    context    TEXT NOT NULL,
    bytes      INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX stored_response_created ON stored_response (created_at);
