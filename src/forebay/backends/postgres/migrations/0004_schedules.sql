-- forebay schema: schedules (DESIGN §10). One row per schedule, by name: its definition
-- (queue, cron expression or interval, timezone, payload, priority, catch_up) and last_tick,
-- the newest tick fired (NULL until a scheduler first sees the schedule). last_tick moves
-- forward only, by compare-and-set, in the transaction that enqueues the tick's job.
CREATE TABLE {schema}.schedules (
    name       text             PRIMARY KEY,
    queue      text             NOT NULL,
    cron       text,
    every_s    double precision CHECK (every_s IS NULL OR every_s >= 1),
    timezone   text             NOT NULL DEFAULT 'UTC',
    payload    json             NOT NULL,
    priority   integer          NOT NULL DEFAULT 0,
    catch_up   integer          NOT NULL DEFAULT 1 CHECK (catch_up >= 1),
    last_tick  timestamptz,
    created_at timestamptz      NOT NULL DEFAULT now(),
    updated_at timestamptz      NOT NULL DEFAULT now(),
    -- a cron expression or an interval, one of them
    CONSTRAINT schedules_one_timing CHECK ((cron IS NULL) <> (every_s IS NULL))
);
