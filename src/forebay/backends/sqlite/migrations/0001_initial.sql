-- forebay schema, version 1: the jobs table.
-- Times are epoch seconds (REAL, UTC). States and their invariants are CHECK constraints.
CREATE TABLE forebay_jobs (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    queue            TEXT    NOT NULL,
    state            TEXT    NOT NULL DEFAULT 'queued'
                     CHECK (state IN ('queued', 'running', 'completed', 'dead', 'cancelled')),
    payload          TEXT    NOT NULL,
    key              TEXT,
    priority         INTEGER NOT NULL DEFAULT 0,
    run_at           REAL    NOT NULL,
    attempt          INTEGER NOT NULL DEFAULT 0 CHECK (attempt >= 0),
    deliveries       INTEGER NOT NULL DEFAULT 0 CHECK (deliveries >= 0),
    defers           INTEGER NOT NULL DEFAULT 0 CHECK (defers >= 0),
    lease_token      TEXT,
    lease_expires_at REAL,
    worker_id        TEXT,
    progress         REAL CHECK (progress IS NULL OR (progress >= 0 AND progress <= 100)),
    progress_message TEXT,
    error            TEXT,
    error_type       TEXT,
    run_id           TEXT,
    created_at       REAL    NOT NULL,
    updated_at       REAL    NOT NULL,
    finished_at      REAL,
    -- a running job always has a lease; no other state has one
    CHECK ((state = 'running') = (lease_token IS NOT NULL AND lease_expires_at IS NOT NULL)),
    -- finished_at is set exactly for the terminal states
    CHECK ((state IN ('completed', 'dead', 'cancelled')) = (finished_at IS NOT NULL))
);

-- idempotency keys: one job per (queue, key) until it is pruned
CREATE UNIQUE INDEX forebay_jobs_queue_key ON forebay_jobs (queue, key) WHERE key IS NOT NULL;
-- leasing: walks only queued jobs, in the promised order, so its cost does not grow with history
CREATE INDEX forebay_jobs_due ON forebay_jobs (queue, priority DESC, run_at, id) WHERE state = 'queued';
-- reclaiming expired leases
CREATE INDEX forebay_jobs_leases ON forebay_jobs (lease_expires_at) WHERE state = 'running';
-- pruning finished jobs
CREATE INDEX forebay_jobs_finished ON forebay_jobs (state, finished_at) WHERE finished_at IS NOT NULL;
-- counts per queue and state
CREATE INDEX forebay_jobs_queue_state ON forebay_jobs (queue, state);
