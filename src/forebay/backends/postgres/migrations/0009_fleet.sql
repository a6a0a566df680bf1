-- forebay schema: the fleet (forebay.fleet) — the worker processes registered in the store, the
-- jobs every queue finished per minute and since the store was created, and the W3C trace
-- context a job was enqueued in.
--
-- On a big jobs table: the ADD COLUMN is a catalogue change only (no default, no rewrite).
ALTER TABLE {schema}.jobs ADD COLUMN traceparent text;

-- One row per worker process (id: its worker_id), replaced on every heartbeat; info is
-- forebay.fleet.WorkerInfo.to_json(). A row holds until expires_at (its last_seen + ttl_s, by
-- the worker's clock): listings leave out the rows past it, and saves delete them.
CREATE TABLE {schema}.workers (
    id         text        PRIMARY KEY,
    info       jsonb       NOT NULL,
    started_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL
);
CREATE INDEX workers_expires ON {schema}.workers (expires_at);

-- Jobs finished per queue and minute (the minute's start), counted by the statement that
-- finishes them. A counter is spread over a few rows (slot: the server process of the
-- connection that counts, see counter_slot in queries.sql), summed when read: every finish of
-- a queue updates its current minute's row and holds that row's lock until it commits (the
-- disk write), so with one row per queue and minute the finishes of a whole fleet would commit
-- one at a time. Minutes are deleted by prune (throughput_before).
CREATE TABLE {schema}.throughput (
    queue     text        NOT NULL,
    minute    timestamptz NOT NULL,
    slot      smallint    NOT NULL,
    completed bigint      NOT NULL DEFAULT 0,
    dead      bigint      NOT NULL DEFAULT 0,
    reclaimed bigint      NOT NULL DEFAULT 0,
    PRIMARY KEY (queue, minute, slot)
);
-- reading every queue since a minute; pruning old minutes
CREATE INDEX throughput_minute ON {schema}.throughput (minute);

-- The same counts since the store was created, never deleted (spread over slots likewise).
CREATE TABLE {schema}.totals (
    queue     text     NOT NULL,
    slot      smallint NOT NULL,
    completed bigint   NOT NULL DEFAULT 0,
    dead      bigint   NOT NULL DEFAULT 0,
    reclaimed bigint   NOT NULL DEFAULT 0,
    PRIMARY KEY (queue, slot)
);
