-- forebay schema: flow control (docs/flow-control.md) — a job's tenant and its flow keys,
-- worked out at enqueue and read by the lease; a queue's stored limits; the rate buckets and
-- fair-turn markers the leases of a limited queue keep.
--
-- On a big jobs table: the ADD COLUMNs are catalogue changes only (no default, no rewrite);
-- the CREATE INDEXes below read the table once under a lock that holds back writes, but each
-- index is partial and holds only the rows that carry a key or a tenant, none of which exist
-- yet. (A DBA who prefers CREATE INDEX CONCURRENTLY can run `forebay migrate --sql` and edit.)
ALTER TABLE {schema}.jobs
    ADD COLUMN tenant text,
    ADD COLUMN rate_key text,
    ADD COLUMN concurrency_key text,
    ADD COLUMN fair_key text;

-- NULL: no limits (a lease takes the plain path); else forebay.flow.FlowLimits.to_dict()
ALTER TABLE {schema}.queues ADD COLUMN limits jsonb;

ALTER TABLE {schema}.runs ADD COLUMN tenant text;

-- One row per rate bucket (kind 'rate': key '' is the queue's own bucket, else a rate_key;
-- value: the bucket's GCRA theoretical arrival time, epoch seconds) and per fair key served
-- (kind 'fair': key '' stands for the jobs without a fair key, since keys are never empty;
-- value: when it was last served). A bucket whose time has passed is full, as if absent, and
-- the lease that finds it deletes it. Written only by leases holding the queue's row lock.
CREATE TABLE {schema}.flow (
    queue text             NOT NULL,
    kind  text             NOT NULL,
    key   text             NOT NULL,
    value double precision NOT NULL,
    PRIMARY KEY (queue, kind, key),
    CONSTRAINT flow_kind_known CHECK (kind IN ('rate', 'fair'))
);

-- running jobs per concurrency key (jobs without one are not in it and pay nothing)
CREATE INDEX jobs_running_key ON {schema}.jobs (queue, concurrency_key)
    WHERE state = 'running' AND concurrency_key IS NOT NULL;
-- fair leasing: each fair key's queued jobs in the promised order
CREATE INDEX jobs_queued_fair ON {schema}.jobs (queue, fair_key, priority DESC, run_at, id)
    WHERE state = 'queued' AND fair_key IS NOT NULL;
-- a tenant's unfinished jobs (its quota), and listings narrowed to a tenant
CREATE INDEX jobs_tenant ON {schema}.jobs (tenant, state) WHERE tenant IS NOT NULL;
