-- forebay schema: the fleet (forebay.fleet) — the worker processes registered in the store, and
-- the jobs every queue finished, per minute and in total; and a job's trace context.

-- the W3C traceparent of the trace a job's enqueue was part of (NULL: none)
ALTER TABLE forebay_jobs ADD COLUMN traceparent TEXT;

-- one row per registered worker: `info` is forebay.fleet.WorkerInfo.to_json() as JSON text;
-- the record holds until `expires_at` (its last heartbeat + its ttl)
CREATE TABLE forebay_workers (
    id         TEXT PRIMARY KEY,
    info       TEXT NOT NULL,
    started_at REAL NOT NULL,
    expires_at REAL NOT NULL
) WITHOUT ROWID;
-- listing the live records, deleting the expired ones
CREATE INDEX forebay_workers_expires ON forebay_workers (expires_at);

-- jobs finished per queue and minute (`minute`: the epoch second it starts at), counted in the
-- transaction that finishes them; minutes past a day are pruned
CREATE TABLE forebay_throughput (
    queue     TEXT    NOT NULL,
    minute    INTEGER NOT NULL,
    completed INTEGER NOT NULL DEFAULT 0,
    dead      INTEGER NOT NULL DEFAULT 0,
    reclaimed INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (queue, minute)
) WITHOUT ROWID;

-- the same counts per queue since the store was created, never pruned
CREATE TABLE forebay_totals (
    queue     TEXT    PRIMARY KEY,
    completed INTEGER NOT NULL DEFAULT 0,
    dead      INTEGER NOT NULL DEFAULT 0,
    reclaimed INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
