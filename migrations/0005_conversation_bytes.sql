-- The bytes each saved conversation takes, so the playground's total (MAX_CONVERSATIONS_MB) is known
-- without reading every conversation.
ALTER TABLE conversation ADD COLUMN bytes INTEGER NOT NULL DEFAULT 0;
UPDATE conversation SET bytes = length(CAST(title AS BLOB)) + length(CAST(params AS BLOB))
    + length(CAST(messages AS BLOB)) + length(CAST(search_text AS BLOB));
