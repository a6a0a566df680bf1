-- forebay schema: flow control (docs/flow-control.md) — a job's tenant and its flow keys,
-- worked out at enqueue and read by the lease.
ALTER TABLE forebay_jobs ADD COLUMN tenant TEXT;
ALTER TABLE forebay_jobs ADD COLUMN rate_key TEXT;
ALTER TABLE forebay_jobs ADD COLUMN concurrency_key TEXT;
ALTER TABLE forebay_jobs ADD COLUMN fair_key TEXT;

-- a queue's stored flow limits: forebay.flow.FlowLimits.to_dict() as JSON; NULL: none (the
-- lease takes its plain path)
ALTER TABLE forebay_queues ADD COLUMN limits TEXT;

-- whose run this is
ALTER TABLE forebay_runs ADD COLUMN tenant TEXT;

-- The state a flow-limited lease reads and writes, one float per row:
-- * kind 'rate', key '': the queue's rate bucket (GCRA theoretical arrival time);
-- * kind 'key', key K: rate key K's bucket;
-- * kind 'fair', key K: when fair key K was last served ('' stands for jobs without a key:
--   flow keys are never empty).
-- A bucket whose time is past is the same as no bucket (pruning deletes such rows).
CREATE TABLE forebay_flow (
    queue TEXT NOT NULL,
    kind  TEXT NOT NULL CHECK (kind IN ('rate', 'key', 'fair')),
    key   TEXT NOT NULL,
    value REAL NOT NULL,
    PRIMARY KEY (queue, kind, key)
) WITHOUT ROWID;

-- running jobs per concurrency key (jobs without one are not in it: the plain path pays nothing)
CREATE INDEX forebay_jobs_running_key ON forebay_jobs (queue, concurrency_key)
    WHERE state = 'running' AND concurrency_key IS NOT NULL;
-- fair leasing: queued jobs per fair key (no key: a group of its own), best first; the lease
-- walks the keys by skip-scan
CREATE INDEX forebay_jobs_fair ON forebay_jobs (queue, fair_key, priority DESC, run_at, id)
    WHERE state = 'queued';
-- a tenant's jobs: its quota (unfinished jobs), its counts and listings
CREATE INDEX forebay_jobs_tenant ON forebay_jobs (tenant, state, queue)
    WHERE tenant IS NOT NULL;
-- a tenant's runs, newest first
CREATE INDEX forebay_runs_tenant ON forebay_runs (tenant, id) WHERE tenant IS NOT NULL;
