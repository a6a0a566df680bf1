-- forebay schema, version 3: what each attempt did.
-- started_at: when the current (or last) attempt was leased (epoch seconds).
-- result: the handler's return value as JSON text (NULL: it returned nothing).
-- errors: JSON array of the last 10 failed attempts' errors, oldest first, each
--   {"attempt", "at" (epoch seconds), "type", "message", "traceback"}; NULL: none yet.
ALTER TABLE forebay_jobs ADD COLUMN started_at REAL;
ALTER TABLE forebay_jobs ADD COLUMN result TEXT;
ALTER TABLE forebay_jobs ADD COLUMN errors TEXT;
