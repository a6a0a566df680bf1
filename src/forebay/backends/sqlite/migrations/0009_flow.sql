-- forebay schema: flow control (docs/flow-control.md) — a job's tenant and its flow keys,
-- worked out at enqueue and read by the lease.
ALTER TABLE forebay_jobs ADD COLUMN tenant TEXT;
ALTER TABLE forebay_jobs ADD COLUMN rate_key TEXT;
ALTER TABLE forebay_jobs ADD COLUMN concurrency_key TEXT;
ALTER TABLE forebay_jobs ADD COLUMN fair_key TEXT;
