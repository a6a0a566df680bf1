-- forebay schema: what a job is linked to, given at enqueue — the jobs it waits for (a JSON
-- list of ids), when it may run after them, the URL that gets its final state, the job whose
-- handler enqueued it.
ALTER TABLE {schema}.jobs
    ADD COLUMN after_ids text,
    ADD COLUMN after_policy text
        CONSTRAINT jobs_after_policy_known
            CHECK (after_policy IS NULL OR after_policy IN ('completed', 'always')),
    ADD COLUMN webhook text,
    ADD COLUMN parent_id bigint;
