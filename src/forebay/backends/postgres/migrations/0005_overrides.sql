-- forebay schema: a job's own limits, given at enqueue (NULL: its queue's), and pruning by
-- queue (each queue may keep its finished jobs for its own time).
ALTER TABLE {schema}.jobs
    ADD COLUMN max_attempts integer
        CONSTRAINT jobs_max_attempts_positive CHECK (max_attempts IS NULL OR max_attempts >= 1),
    ADD COLUMN timeout_s double precision
        CONSTRAINT jobs_timeout_positive CHECK (timeout_s IS NULL OR timeout_s > 0);

-- pruning one queue's finished jobs by age
CREATE INDEX jobs_queue_finished ON {schema}.jobs (queue, state, finished_at)
    WHERE finished_at IS NOT NULL;
