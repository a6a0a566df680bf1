-- forebay schema, version 3: stored queue settings (operator controls).
-- One row per queue an operator or an app configured; a queue without a row is not paused and
-- has no depth limit. Leases read `paused` and enqueues read `max_depth` in their own
-- statement or transaction, so every process on every host obeys the same settings.
CREATE TABLE {schema}.queues (
    name       text        PRIMARY KEY,
    paused     boolean     NOT NULL DEFAULT false,
    max_depth  integer     CHECK (max_depth IS NULL OR max_depth >= 1),
    updated_at timestamptz NOT NULL DEFAULT now()
);
