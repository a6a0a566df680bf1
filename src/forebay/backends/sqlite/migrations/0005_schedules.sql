-- forebay schema: schedules (DESIGN §10). One row per schedule, by name: its definition
-- (queue, cron expression or interval, timezone, payload, priority, catch_up) and last_tick,
-- the newest tick fired (epoch seconds; NULL until a scheduler first sees the schedule).
-- last_tick moves forward only, by compare-and-set, in the transaction that enqueues the
-- tick's job.
CREATE TABLE forebay_schedules (
    name       TEXT    PRIMARY KEY,
    queue      TEXT    NOT NULL,
    cron       TEXT,
    every_s    REAL    CHECK (every_s IS NULL OR every_s >= 1),
    timezone   TEXT    NOT NULL DEFAULT 'UTC',
    payload    TEXT    NOT NULL,
    priority   INTEGER NOT NULL DEFAULT 0,
    catch_up   INTEGER NOT NULL DEFAULT 1 CHECK (catch_up >= 1),
    last_tick  REAL,
    created_at REAL    NOT NULL,
    updated_at REAL    NOT NULL,
    -- a cron expression or an interval, one of them
    CHECK ((cron IS NULL) <> (every_s IS NULL))
);
