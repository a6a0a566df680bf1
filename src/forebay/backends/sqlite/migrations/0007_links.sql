-- forebay schema: what a job is linked to, given at enqueue — the jobs it waits for (a JSON
-- list of ids), when it may run after them, the URL that gets its final state, the job whose
-- handler enqueued it.
ALTER TABLE forebay_jobs ADD COLUMN after_ids TEXT;
ALTER TABLE forebay_jobs ADD COLUMN after_policy TEXT
    CHECK (after_policy IS NULL OR after_policy IN ('completed', 'always'));
ALTER TABLE forebay_jobs ADD COLUMN webhook TEXT;
ALTER TABLE forebay_jobs ADD COLUMN parent_id INTEGER;
