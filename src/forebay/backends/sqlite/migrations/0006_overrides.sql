-- forebay schema: a job's own limits, given at enqueue (NULL: its queue's), and pruning by
-- queue (each queue may keep its finished jobs for its own time).
ALTER TABLE forebay_jobs ADD COLUMN max_attempts INTEGER
    CHECK (max_attempts IS NULL OR max_attempts >= 1);
ALTER TABLE forebay_jobs ADD COLUMN timeout_s REAL
    CHECK (timeout_s IS NULL OR timeout_s > 0);

-- counts per queue and state, and pruning one queue's finished jobs by age
DROP INDEX forebay_jobs_queue_state;
CREATE INDEX forebay_jobs_queue_state ON forebay_jobs (queue, state, finished_at);
