-- forebay schema, version 4: stored queue settings (operator controls).
-- One row per queue an operator or an app configured; a queue without a row is not paused and
-- has no depth limit. Leases read `paused` and enqueues read `max_depth` in their own write
-- transaction, so every process on the file obeys the same settings.
CREATE TABLE forebay_queues (
    queue      TEXT    PRIMARY KEY,
    paused     INTEGER NOT NULL DEFAULT 0 CHECK (paused IN (0, 1)),
    max_depth  INTEGER CHECK (max_depth IS NULL OR max_depth >= 1),
    updated_at REAL    NOT NULL
) WITHOUT ROWID;
