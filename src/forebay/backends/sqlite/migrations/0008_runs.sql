-- forebay schema: runs (DESIGN §10), the links between jobs, and the `waiting` state.
--
-- forebay_runs: one row per run. `total` and the finished counts (completed, dead, cancelled)
-- move in the transaction of every enqueue and finish of its jobs; its unfinished jobs
-- (waiting, queued, running) are counted at read through forebay_jobs_run_state, so leasing,
-- retrying and releasing a job of a run write nothing more than any job.
CREATE TABLE forebay_runs (
    id           TEXT    PRIMARY KEY,
    name         TEXT,
    key          TEXT,
    meta         TEXT    NOT NULL DEFAULT '{}',
    state        TEXT    NOT NULL DEFAULT 'open'
                 CHECK (state IN ('open', 'sealed', 'completed')),
    on_complete  TEXT,
    webhook      TEXT,
    total        INTEGER NOT NULL DEFAULT 0 CHECK (total >= 0),
    completed    INTEGER NOT NULL DEFAULT 0 CHECK (completed >= 0),
    dead         INTEGER NOT NULL DEFAULT 0 CHECK (dead >= 0),
    cancelled    INTEGER NOT NULL DEFAULT 0 CHECK (cancelled >= 0),
    created_at   REAL    NOT NULL,
    sealed_at    REAL,
    completed_at REAL,
    -- sealed_at is set once the run is sealed, completed_at exactly when it completed
    CHECK ((state = 'open') = (sealed_at IS NULL)),
    CHECK ((state = 'completed') = (completed_at IS NOT NULL))
) WITHOUT ROWID;

-- start_run's idempotency key
CREATE UNIQUE INDEX forebay_runs_key ON forebay_runs (key) WHERE key IS NOT NULL;
-- listing by state, newest first (ids are time-ordered)
CREATE INDEX forebay_runs_state ON forebay_runs (state, id);
-- pruning completed runs by age
CREATE INDEX forebay_runs_completed ON forebay_runs (completed_at) WHERE state = 'completed';

-- forebay_deps: which waiting jobs wait for which parent. A row is written for each parent
-- still unfinished when its child is stored, and taken away when that parent finishes (in the
-- transaction that releases or cancels the child).
CREATE TABLE forebay_deps (
    parent_id INTEGER NOT NULL,
    child_id  INTEGER NOT NULL,
    PRIMARY KEY (parent_id, child_id)
) WITHOUT ROWID;

-- The jobs table, rebuilt: SQLite cannot change a CHECK in place, and `waiting` is a new state.
-- Same columns in the same order, same constraints, indexes and trigger; ids carry on where
-- they were (the AUTOINCREMENT counter is copied over).
CREATE TABLE forebay_jobs_new (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    queue            TEXT    NOT NULL,
    state            TEXT    NOT NULL DEFAULT 'queued'
                     CHECK (state IN ('waiting', 'queued', 'running', 'completed', 'dead',
                                      'cancelled')),
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
    started_at       REAL,
    result           TEXT,
    errors           TEXT,
    max_attempts     INTEGER CHECK (max_attempts IS NULL OR max_attempts >= 1),
    timeout_s        REAL CHECK (timeout_s IS NULL OR timeout_s > 0),
    after_ids        TEXT,
    after_policy     TEXT CHECK (after_policy IS NULL OR after_policy IN ('completed', 'always')),
    webhook          TEXT,
    parent_id        INTEGER,
    -- a running job always has a lease; no other state has one
    CHECK ((state = 'running') = (lease_token IS NOT NULL AND lease_expires_at IS NOT NULL)),
    -- finished_at is set exactly for the terminal states
    CHECK ((state IN ('completed', 'dead', 'cancelled')) = (finished_at IS NOT NULL))
);

INSERT INTO forebay_jobs_new (
    id, queue, state, key, priority, run_at, attempt, deliveries, defers, lease_token,
    lease_expires_at, worker_id, progress, progress_message, error, error_type, run_id,
    created_at, updated_at, finished_at, started_at, result, errors, max_attempts, timeout_s,
    after_ids, after_policy, webhook, parent_id)
SELECT
    id, queue, state, key, priority, run_at, attempt, deliveries, defers, lease_token,
    lease_expires_at, worker_id, progress, progress_message, error, error_type, run_id,
    created_at, updated_at, finished_at, started_at, result, errors, max_attempts, timeout_s,
    after_ids, after_policy, webhook, parent_id
FROM forebay_jobs;

-- the counter: the next id is never one a pruned job had
DELETE FROM sqlite_sequence WHERE name = 'forebay_jobs_new';
INSERT INTO sqlite_sequence (name, seq)
SELECT 'forebay_jobs_new', seq FROM sqlite_sequence WHERE name = 'forebay_jobs';

DROP TABLE forebay_jobs;
ALTER TABLE forebay_jobs_new RENAME TO forebay_jobs;

-- idempotency keys: one job per (queue, key) until it is pruned
CREATE UNIQUE INDEX forebay_jobs_queue_key ON forebay_jobs (queue, key) WHERE key IS NOT NULL;
-- leasing: walks only queued jobs, in the promised order, so its cost does not grow with history
CREATE INDEX forebay_jobs_due ON forebay_jobs (queue, priority DESC, run_at, id) WHERE state = 'queued';
-- reclaiming expired leases
CREATE INDEX forebay_jobs_leases ON forebay_jobs (lease_expires_at) WHERE state = 'running';
-- pruning finished jobs
CREATE INDEX forebay_jobs_finished ON forebay_jobs (state, finished_at) WHERE finished_at IS NOT NULL;
-- counts per queue and state, and pruning one queue's finished jobs by age
CREATE INDEX forebay_jobs_queue_state ON forebay_jobs (queue, state, finished_at);
-- a run's unfinished jobs, counted at read; jobs without a run, and finished jobs (counted on
-- the run's row), are not in it
CREATE INDEX forebay_jobs_run_state ON forebay_jobs (run_id, state)
    WHERE run_id IS NOT NULL AND state IN ('waiting', 'queued', 'running');

-- a payload goes with its job (pruning, purging)
CREATE TRIGGER forebay_jobs_delete_payload AFTER DELETE ON forebay_jobs
BEGIN
    DELETE FROM forebay_payloads WHERE job_id = old.id;
END;
