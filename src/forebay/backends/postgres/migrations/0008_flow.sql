-- forebay schema: flow control (docs/flow-control.md) — a job's tenant and its flow keys,
-- worked out at enqueue and read by the lease.
ALTER TABLE {schema}.jobs
    ADD COLUMN tenant text,
    ADD COLUMN rate_key text,
    ADD COLUMN concurrency_key text,
    ADD COLUMN fair_key text;
