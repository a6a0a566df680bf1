-- forebay schema, version 2: what each attempt did.
-- started_at: when the current (or last) attempt was leased.
-- result: the handler's return value (NULL: it returned nothing), kept as the JSON it returned.
-- errors: the last 10 failed attempts' errors, oldest first, each
--   {"attempt", "at" (epoch seconds), "type", "message", "traceback"}; NULL: none yet.
ALTER TABLE {schema}.jobs ADD COLUMN started_at timestamptz;
ALTER TABLE {schema}.jobs ADD COLUMN result json;
ALTER TABLE {schema}.jobs ADD COLUMN errors jsonb;
