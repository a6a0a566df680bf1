-- forebay schema, version 1: the jobs table, in its own PostgreSQL schema.
-- The schema name (configuration, a validated identifier) is written in when this is loaded.
-- Times are timestamptz. States and their invariants are CHECK constraints.
CREATE TABLE {schema}.jobs (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    queue            text        NOT NULL,
    state            text        NOT NULL DEFAULT 'queued',
    payload          json        NOT NULL,
    key              text,
    priority         integer     NOT NULL DEFAULT 0,
    run_at           timestamptz NOT NULL DEFAULT now(),
    attempt          integer     NOT NULL DEFAULT 0,
    deliveries       integer     NOT NULL DEFAULT 0,
    defers           integer     NOT NULL DEFAULT 0,
    lease_token      text,
    lease_expires_at timestamptz,
    worker_id        text,
    progress         double precision,
    progress_message text,
    error            text,
    error_type       text,
    run_id           text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    finished_at      timestamptz,
    CONSTRAINT jobs_state_known
        CHECK (state IN ('queued', 'running', 'completed', 'dead', 'cancelled')),
    CONSTRAINT jobs_counters_not_negative
        CHECK (attempt >= 0 AND deliveries >= 0 AND defers >= 0),
    CONSTRAINT jobs_progress_percent
        CHECK (progress IS NULL OR (progress >= 0 AND progress <= 100)),
    -- a running job always has a lease; no other state has one
    CONSTRAINT jobs_lease_iff_running
        CHECK ((state = 'running') = (lease_token IS NOT NULL AND lease_expires_at IS NOT NULL)),
    -- finished_at is set exactly for the terminal states
    CONSTRAINT jobs_finished_iff_terminal
        CHECK ((state IN ('completed', 'dead', 'cancelled')) = (finished_at IS NOT NULL))
) WITH (
    -- a queue table is small and churns: vacuum it after 1 % of its rows changed, not 20 %
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_vacuum_insert_scale_factor = 0.01,
    autovacuum_analyze_scale_factor = 0.02
);

-- idempotency keys: one job per (queue, key) until it is pruned
CREATE UNIQUE INDEX jobs_queue_key ON {schema}.jobs (queue, key) WHERE key IS NOT NULL;
-- leasing: walks only queued jobs, in the promised order, so its cost does not grow with history
CREATE INDEX jobs_due ON {schema}.jobs (queue, priority DESC, run_at, id) WHERE state = 'queued';
-- reclaiming expired leases (and the running part of a queue's depth)
CREATE INDEX jobs_leases ON {schema}.jobs (lease_expires_at) WHERE state = 'running';
-- pruning finished jobs in bounded batches; replay and purge of dead jobs
CREATE INDEX jobs_finished ON {schema}.jobs (state, finished_at) WHERE finished_at IS NOT NULL;
