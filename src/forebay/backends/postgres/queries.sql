-- SQL of the PostgreSQL backend. Sections are loaded by forebay.sqlfiles.render_queries, which
-- fills the placeholders once: {schema} (the quoted schema name), {channel} (the LISTEN/NOTIFY
-- channel, the schema's name), {columns} (a job's columns, in the order of
-- forebay.backends.rows.COLUMNS) and {filter} (the shared filter section). Parameters are
-- positional ($1, $2, ...).
-- "now" is the database's clock (now(): the transaction's start), so that workers on many hosts
-- agree on lease expiry whatever their own clocks say.
--
-- {relaxed_commit} (a condition that is always true) marks statements whose commit need not
-- wait for the WAL to reach disk (synchronous_commit off for that transaction only): losing
-- them in a server crash is harmless, because they are redone. A lost lease puts its job back
-- to queued, so it runs again (at-least-once); a lost heartbeat, progress note, reclaim or
-- prune is simply done again. Enqueues and outcomes always wait for the disk.

-- name: create_schema
CREATE SCHEMA IF NOT EXISTS {schema}

-- name: create_migrations_table
CREATE TABLE IF NOT EXISTS {schema}.migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)

-- name: migrations_table_exists
SELECT to_regclass('{schema}.migrations') IS NOT NULL

-- name: applied_migrations
SELECT version FROM {schema}.migrations ORDER BY version

-- name: migration_lock
-- one migrator at a time per schema, whichever host it runs on
SELECT pg_advisory_xact_lock(hashtextextended('forebay migrate {schema}', 0))

-- name: record_migration
INSERT INTO {schema}.migrations (version, name) VALUES ($1, $2)

-- name: autovacuum_on
SELECT current_setting('autovacuum')::boolean

-- name: drop_schema
DROP SCHEMA IF EXISTS {schema} CASCADE

-- name: enqueue
-- $1: payloads; $2: the queue of every job, unless $3 gives one per job. $3 to $7 (queues, keys,
-- priorities, run_at, run ids) may be NULL when every job has the default: unnest pads them.
-- Rows get ids in input order (the identity is drawn row by row, in ordinality order), also
-- for rows whose key already exists, so sorting the returned rows by id gives input order.
-- Workers waiting on a queue that now has due jobs are woken at commit.
-- $8, $9 (a job's own max_attempts, timeout_s) and $11 to $15 (tenant, rate_key,
-- concurrency_key, fair_key, traceparent) may be NULL when all NULL.
-- $10: look for a stored max_depth first. When one of the queues has one, nothing is inserted
-- and one row of NULLs answers: the caller then enqueues in a transaction that locks and counts
-- those queues (lock_queues, depths). A queue without a limit costs one primary-key lookup.
WITH capped AS (
    SELECT $10::boolean AND EXISTS (
        SELECT 1 FROM {schema}.queues
        WHERE name = ANY(COALESCE($3::text[], ARRAY[$2::text])) AND max_depth IS NOT NULL
    ) AS yes
), inserted AS (
    INSERT INTO {schema}.jobs (queue, payload, key, priority, run_at, run_id, max_attempts,
                               timeout_s, tenant, rate_key, concurrency_key, fair_key,
                               traceparent)
    SELECT COALESCE(j.queue, $2), j.payload::json, j.key, COALESCE(j.priority, 0),
           COALESCE(j.run_at, now()), j.run_id, j.max_attempts, j.timeout_s, j.tenant,
           j.rate_key, j.concurrency_key, j.fair_key, j.traceparent
    FROM unnest($1::text[], $3::text[], $4::text[], $5::integer[], $6::timestamptz[], $7::text[],
                $8::integer[], $9::double precision[], $11::text[], $12::text[], $13::text[],
                $14::text[], $15::text[])
         WITH ORDINALITY AS j (payload, queue, key, priority, run_at, run_id, max_attempts,
                               timeout_s, tenant, rate_key, concurrency_key, fair_key,
                               traceparent, ord)
    WHERE NOT (SELECT yes FROM capped)
    ORDER BY j.ord
    ON CONFLICT (queue, key) WHERE key IS NOT NULL DO NOTHING
    RETURNING id, queue, key, run_at, created_at
), woken AS (
    SELECT pg_notify('{channel}', due.queue)
    FROM (SELECT DISTINCT queue FROM inserted WHERE run_at <= now()) AS due
)
SELECT id, queue, key, created_at FROM inserted WHERE (SELECT count(*) FROM woken) >= 0
UNION ALL
SELECT NULL, NULL, NULL, NULL FROM capped WHERE yes

-- name: enqueue_plain
-- The same for jobs without keys: no conflict to look for (a cheaper insert).
WITH capped AS (
    SELECT $10::boolean AND EXISTS (
        SELECT 1 FROM {schema}.queues
        WHERE name = ANY(COALESCE($3::text[], ARRAY[$2::text])) AND max_depth IS NOT NULL
    ) AS yes
), inserted AS (
    INSERT INTO {schema}.jobs (queue, payload, key, priority, run_at, run_id, max_attempts,
                               timeout_s, tenant, rate_key, concurrency_key, fair_key,
                               traceparent)
    SELECT COALESCE(j.queue, $2), j.payload::json, j.key, COALESCE(j.priority, 0),
           COALESCE(j.run_at, now()), j.run_id, j.max_attempts, j.timeout_s, j.tenant,
           j.rate_key, j.concurrency_key, j.fair_key, j.traceparent
    FROM unnest($1::text[], $3::text[], $4::text[], $5::integer[], $6::timestamptz[], $7::text[],
                $8::integer[], $9::double precision[], $11::text[], $12::text[], $13::text[],
                $14::text[], $15::text[])
         WITH ORDINALITY AS j (payload, queue, key, priority, run_at, run_id, max_attempts,
                               timeout_s, tenant, rate_key, concurrency_key, fair_key,
                               traceparent, ord)
    WHERE NOT (SELECT yes FROM capped)
    ORDER BY j.ord
    RETURNING id, queue, key, run_at, created_at
), woken AS (
    SELECT pg_notify('{channel}', due.queue)
    FROM (SELECT DISTINCT queue FROM inserted WHERE run_at <= now()) AS due
)
SELECT id, queue, key, created_at FROM inserted WHERE (SELECT count(*) FROM woken) >= 0
UNION ALL
SELECT NULL, NULL, NULL, NULL FROM capped WHERE yes

-- name: jobs_by_key
SELECT {columns} FROM {schema}.jobs
WHERE (queue, key) IN (SELECT * FROM unnest($1::text[], $2::text[]))

-- name: stored_keys
-- which of these (queue, key) pairs are stored (index jobs_queue_key); a fragment of the quota
SELECT queue, key FROM {schema}.jobs
WHERE (queue, key) IN (SELECT * FROM unnest($1::text[], $2::text[]))

-- name: lock_tenants
-- serialises enqueues of a tenant that has a quota (in name order: no deadlocks; taken after
-- lock_queues)
SELECT count(pg_advisory_xact_lock(hashtextextended('forebay tenant {schema} ' || t.name, 0)))
FROM (SELECT DISTINCT unnest($1::text[]) AS name ORDER BY 1) AS t

-- name: tenant_depths
-- a tenant's unfinished jobs in every queue, counted up to its quota (index jobs_tenant)
SELECT t.name, (
    SELECT count(*) FROM (
        SELECT 1 FROM {schema}.jobs
        WHERE tenant = t.name AND state IN ('waiting', 'queued', 'running')
        LIMIT t.cap
    ) AS unfinished
)
FROM unnest($1::text[], $2::integer[]) AS t (name, cap)

-- name: lock_queues
-- serialises enqueues into queues that have a max_depth (in name order: no deadlocks)
SELECT count(pg_advisory_xact_lock(hashtextextended('forebay depth {schema} ' || q.name, 0)))
FROM (SELECT DISTINCT unnest($1::text[]) AS name ORDER BY 1) AS q

-- name: depths
SELECT q.name, (
    SELECT count(*) FROM (
        SELECT 1 FROM {schema}.jobs
        WHERE queue = q.name AND state IN ('waiting', 'queued', 'running')
        LIMIT q.cap
    ) AS unfinished
)
FROM unnest($1::text[], $2::integer[]) AS q (name, cap)

-- name: lease
-- The inner SELECT runs once (an InitPlan): SKIP LOCKED lets concurrent workers take
-- different jobs instead of queueing behind each other's row locks. $6: the time to take as
-- now (NULL: the server's clock).
UPDATE {schema}.jobs
SET state = 'running', lease_token = $3,
    lease_expires_at = COALESCE($6::timestamptz, now()) + make_interval(secs => $4),
    worker_id = $5, attempt = attempt + 1, deliveries = deliveries + 1, updated_at = now(),
    started_at = COALESCE($6::timestamptz, now()), progress = NULL, progress_message = NULL
WHERE id = ANY(ARRAY(
    SELECT id FROM {schema}.jobs
    WHERE queue = $1 AND state = 'queued' AND run_at <= COALESCE($6::timestamptz, now())
        -- a paused queue leases nothing, and one with flow limits takes the flow path (the
        -- caller's, when this finds nothing): one primary-key lookup
        AND NOT EXISTS (SELECT 1 FROM {schema}.queues AS s
                        WHERE s.name = $1 AND (s.paused OR s.limits IS NOT NULL))
    ORDER BY priority DESC, run_at, id
    LIMIT $2
    FOR UPDATE SKIP LOCKED
)) AND {relaxed_commit}
RETURNING {columns}

-- == flow control (forebay.flow): the lease of a queue with stored limits =====================
-- One transaction: flow_queue locks the queue's row (flow leases of one queue, from any worker
-- on any host, take turns, so caps and rates hold), then flow_state, a candidates statement,
-- forebay.flow.plan in the caller, and flow_take. Times are epoch seconds ($2: the lease's now,
-- given or the server's).

-- name: flow_limited
-- whether the queue has flow limits (asked when the plain lease found nothing)
SELECT limits IS NOT NULL FROM {schema}.queues WHERE name = $1

-- name: flow_queue
SELECT paused, limits::text, EXTRACT(EPOCH FROM now())::float8
FROM {schema}.queues WHERE name = $1
FOR UPDATE

-- name: flow_state
-- the queue's live rate buckets and (when $5, fair) its fair markers; its running jobs when
-- $3 (concurrency), and per concurrency key when $4 (index jobs_running_key)
SELECT kind, key, value, NULL::bigint FROM {schema}.flow
WHERE queue = $1 AND ((kind = 'rate' AND value > $2) OR (kind = 'fair' AND $5::boolean))
UNION ALL
SELECT 'running', NULL, NULL, count(*) FROM {schema}.jobs
WHERE $3::boolean AND queue = $1 AND state = 'running'
UNION ALL
SELECT 'running_key', concurrency_key, NULL, count(*) FROM {schema}.jobs
WHERE $4::boolean AND queue = $1 AND state = 'running' AND concurrency_key IS NOT NULL
GROUP BY concurrency_key

-- name: flow_top
-- Candidates without fairness or aging: the best $5 due jobs (index jobs_due), leaving out
-- those of rate keys without a token ($3) and of concurrency keys at their cap ($4).
SELECT id, priority, EXTRACT(EPOCH FROM run_at)::float8, rate_key, concurrency_key, fair_key
FROM {schema}.jobs
WHERE queue = $1 AND state = 'queued' AND run_at <= to_timestamp($2)
    AND (rate_key IS NULL OR rate_key <> ALL($3::text[]))
    AND (concurrency_key IS NULL OR concurrency_key <> ALL($4::text[]))
ORDER BY priority DESC, run_at, id
LIMIT $5

-- name: flow_fair
-- Candidates for fair leasing without aging: the best $5 due jobs of each fair key, and of the
-- jobs without one. The keys are found by skipping through index jobs_queued_fair, one probe
-- per key, so the cost grows with the number of keys, not with the backlog.
WITH RECURSIVE keys (fkey) AS (
    (SELECT fair_key FROM {schema}.jobs
     WHERE queue = $1 AND state = 'queued' AND fair_key IS NOT NULL
     ORDER BY fair_key LIMIT 1)
    UNION ALL
    SELECT (SELECT j.fair_key FROM {schema}.jobs AS j
            WHERE j.queue = $1 AND j.state = 'queued' AND j.fair_key > k.fkey
            ORDER BY j.fair_key LIMIT 1)
    FROM keys AS k WHERE k.fkey IS NOT NULL
)
SELECT c.* FROM keys AS k, LATERAL (
    SELECT id, priority, EXTRACT(EPOCH FROM run_at)::float8, rate_key, concurrency_key, fair_key
    FROM {schema}.jobs
    WHERE queue = $1 AND state = 'queued' AND fair_key = k.fkey
        AND run_at <= to_timestamp($2)
        AND (rate_key IS NULL OR rate_key <> ALL($3::text[]))
        AND (concurrency_key IS NULL OR concurrency_key <> ALL($4::text[]))
    ORDER BY priority DESC, run_at, id
    LIMIT $5
) AS c
UNION ALL
(SELECT id, priority, EXTRACT(EPOCH FROM run_at)::float8, rate_key, concurrency_key, fair_key
 FROM {schema}.jobs
 WHERE queue = $1 AND state = 'queued' AND fair_key IS NULL AND run_at <= to_timestamp($2)
     AND (rate_key IS NULL OR rate_key <> ALL($3::text[]))
     AND (concurrency_key IS NULL OR concurrency_key <> ALL($4::text[]))
 ORDER BY priority DESC, run_at, id
 LIMIT $5)

-- name: flow_ranked
-- Candidates with aging (a lower priority may overtake): the best $5 due jobs of each
-- priority, and with fairness ($6) of each (fair key, priority). Reads the queue's whole due
-- backlog (aging makes every priority a candidate).
SELECT id, priority, run_at, rate_key, concurrency_key, fair_key FROM (
    SELECT id, priority, EXTRACT(EPOCH FROM run_at)::float8 AS run_at, rate_key, concurrency_key, fair_key,
           row_number() OVER (PARTITION BY CASE WHEN $6::boolean THEN fair_key END, priority
                              ORDER BY run_at, id) AS rank
    FROM {schema}.jobs
    WHERE queue = $1 AND state = 'queued' AND run_at <= to_timestamp($2)
        AND (rate_key IS NULL OR rate_key <> ALL($3::text[]))
        AND (concurrency_key IS NULL OR concurrency_key <> ALL($4::text[]))
) AS ranked
WHERE rank <= $5

-- name: flow_take
-- One statement for what a plan writes: the planned jobs ($1) -> running, as lease does, at the
-- lease's now ($5), and the plan's new bucket times and fair markers ($6 kinds, $7 keys, $8
-- values; buckets full again at $5 and not written now are deleted). A job cancelled meanwhile
-- is not taken. `(state = 'queued') IS TRUE` is `state = 'queued'` (state is never NULL) in a
-- form the planner cannot match to index jobs_due's predicate: it would otherwise walk the
-- queue's whole backlog in that index while its statistics think few jobs are queued, instead
-- of looking the ids up by primary key.
WITH taken AS (
    UPDATE {schema}.jobs
    SET state = 'running', lease_token = $2,
        lease_expires_at = to_timestamp($5) + make_interval(secs => $3),
        worker_id = $4, attempt = attempt + 1, deliveries = deliveries + 1, updated_at = now(),
        started_at = to_timestamp($5), progress = NULL, progress_message = NULL
    WHERE id = ANY($1::bigint[]) AND (state = 'queued') IS TRUE AND {relaxed_commit}
    RETURNING {columns}
), gone AS (
    DELETE FROM {schema}.flow
    WHERE queue = $9 AND kind = 'rate' AND value <= $5
        AND key <> ALL(ARRAY(SELECT w.key FROM unnest($6::text[], $7::text[]) AS w (kind, key)
                             WHERE w.kind = 'rate'))
), saved AS (
    INSERT INTO {schema}.flow AS f (queue, kind, key, value)
    SELECT $9, w.kind, w.key, w.value
    FROM unnest($6::text[], $7::text[], $8::double precision[]) AS w (kind, key, value)
    ON CONFLICT (queue, kind, key) DO UPDATE SET value = excluded.value
)
SELECT {columns} FROM taken

-- name: flow_queues
-- the queues with flow limits, for counts
SELECT name, limits::text FROM {schema}.queues WHERE limits IS NOT NULL

-- name: epoch_now
SELECT EXTRACT(EPOCH FROM now())::float8

-- name: throttled
-- the due queued jobs of queue $1 at $2 (of tenant $3) a lease would hold back: all of them
-- when $4, else those of a rate key without a token ($5) or a concurrency key at its cap ($6)
SELECT count(*) FROM {schema}.jobs
WHERE queue = $1 AND state = 'queued' AND run_at <= to_timestamp($2)
    AND ($3::text IS NULL OR tenant = $3)
    AND ($4::boolean OR rate_key = ANY($5::text[]) OR concurrency_key = ANY($6::text[]))

-- name: extend
UPDATE {schema}.jobs AS j
SET lease_expires_at = now() + make_interval(secs => $3), updated_at = now()
FROM unnest($1::bigint[], $2::text[]) AS l (job_id, token)
WHERE j.id = l.job_id AND j.lease_token = l.token  -- a token means running (see settle)
    AND {relaxed_commit}
RETURNING j.id

-- name: progress
UPDATE {schema}.jobs SET progress = $3, progress_message = $4, updated_at = now()
WHERE id = $1 AND lease_token = $2 AND state = 'running' AND {relaxed_commit}
RETURNING id

-- name: settle
-- Every way out of running, for many jobs of many callers in one statement. Per job:
--   complete: -> completed                 retry:   -> queued at `at`, attempt stays spent
--   dead:     -> dead                      defer:   -> queued at `at`, attempt and delivery
--   release:  -> queued, attempt and delivery given back         given back, defers + 1
-- Only the holder of the current lease token may settle; the ids returned are the ones settled.
-- Only running jobs have a token (CHECK jobs_lease_iff_running), so the token match is the
-- state check too. Saying `state = 'running'` here would tempt the planner into walking the
-- jobs_leases index once per settled job while its statistics think few jobs run.
-- A retry or dead letter appends its error (with the traceback) to the errors history, keeping
-- the last 10 (forebay.job.MAX_ERRORS_KEPT); a completion stores its result and clears the last
-- error (the history keeps it).
-- $3 (outcomes) may be NULL when every job has outcome $7; $4 to $6, $8 (tracebacks) and $9
-- (results) may be NULL when all NULL.
-- $10 false: a job that would finish and has a run, a webhook or waiting children is left
-- running (so not returned): the caller settles it again with $10 true in a transaction that
-- also does what its finish entails (finished_links and on). Jobs without links pay nothing.
-- Running jobs are never waiting parents of new children without has_children set first
-- (mark_parents), which this statement's row lock sees.
-- Jobs it finished (completed, dead) are announced on the finish channel at commit, in one
-- notification for the whole statement: their ids, comma-separated, or `*` (every waiter
-- re-reads) when more than 300 would not fit in a notification's 8000 bytes. So does cancel.
-- Jobs it finished are counted (counted, summed: see the fleet section) in the same statement.
WITH s AS (
    SELECT job_id, token, COALESCE(outcome, $7) AS outcome, at, message, kind, traceback, result
    FROM unnest($1::bigint[], $2::text[], $3::text[], $4::timestamptz[], $5::text[], $6::text[],
                $8::text[], $9::text[])
         AS s (job_id, token, outcome, at, message, kind, traceback, result)
), settled AS (
    UPDATE {schema}.jobs AS j
    SET state = CASE s.outcome
            WHEN 'complete' THEN 'completed' WHEN 'dead' THEN 'dead' ELSE 'queued' END,
        run_at = CASE WHEN s.outcome IN ('retry', 'defer') THEN s.at ELSE j.run_at END,
        error = CASE WHEN s.outcome IN ('retry', 'dead') THEN s.message
            WHEN s.outcome = 'complete' THEN NULL ELSE j.error END,
        error_type = CASE WHEN s.outcome IN ('retry', 'dead') THEN s.kind
            WHEN s.outcome = 'complete' THEN NULL ELSE j.error_type END,
        errors = CASE WHEN s.outcome IN ('retry', 'dead') THEN (
            SELECT CASE WHEN jsonb_array_length(e) > 10 THEN e - 0 ELSE e END
            FROM (SELECT COALESCE(j.errors, '[]'::jsonb) || jsonb_build_array(jsonb_build_object(
                'attempt', j.attempt, 'at', EXTRACT(EPOCH FROM now()), 'type', s.kind,
                'message', s.message, 'traceback', s.traceback)) AS e) AS appended
            ) ELSE j.errors END,
        result = CASE WHEN s.outcome = 'complete' THEN s.result::json ELSE j.result END,
        progress = CASE WHEN s.outcome = 'complete' THEN 100 ELSE j.progress END,
        progress_message = CASE
            WHEN s.outcome = 'defer' THEN s.message ELSE j.progress_message END,
        attempt = CASE
            WHEN s.outcome IN ('defer', 'release') THEN j.attempt - 1 ELSE j.attempt END,
        deliveries = CASE
            WHEN s.outcome IN ('defer', 'release') THEN j.deliveries - 1 ELSE j.deliveries END,
        defers = CASE WHEN s.outcome = 'defer' THEN j.defers + 1 ELSE j.defers END,
        finished_at = CASE WHEN s.outcome IN ('complete', 'dead') THEN now() END,
        updated_at = now(), lease_token = NULL, lease_expires_at = NULL
    FROM s
    WHERE j.id = s.job_id AND j.lease_token = s.token
        AND ($10::boolean OR s.outcome NOT IN ('complete', 'dead')
             OR (j.run_id IS NULL AND j.webhook IS NULL AND NOT j.has_children))
    RETURNING j.id, j.queue, j.state, j.run_at
), woken AS (
    SELECT pg_notify('{channel}', due.queue)
    FROM (SELECT DISTINCT queue FROM settled WHERE state = 'queued' AND run_at <= now()) AS due
), finished AS (
    SELECT pg_notify('{finish_channel}',
                     CASE WHEN count(*) <= 300 THEN string_agg(id::text, ',') ELSE '*' END)
    FROM settled WHERE state IN ('completed', 'dead') HAVING count(*) > 0
), counted AS (
    INSERT INTO {schema}.throughput AS t (queue, minute, slot, completed, dead)
    SELECT queue, to_timestamp(floor(EXTRACT(EPOCH FROM now()) / 60) * 60), {counter_slot},
           count(*) FILTER (WHERE state = 'completed'), count(*) FILTER (WHERE state = 'dead')
    FROM settled WHERE state IN ('completed', 'dead')
    GROUP BY queue ORDER BY queue
    ON CONFLICT (queue, minute, slot) DO UPDATE
    SET completed = t.completed + excluded.completed, dead = t.dead + excluded.dead
), summed AS (
    INSERT INTO {schema}.totals AS t (queue, slot, completed, dead)
    SELECT queue, {counter_slot},
           count(*) FILTER (WHERE state = 'completed'), count(*) FILTER (WHERE state = 'dead')
    FROM settled WHERE state IN ('completed', 'dead')
    GROUP BY queue ORDER BY queue
    ON CONFLICT (queue, slot) DO UPDATE
    SET completed = t.completed + excluded.completed, dead = t.dead + excluded.dead
)
SELECT id FROM settled
WHERE (SELECT count(*) FROM woken) >= 0 AND (SELECT count(*) FROM finished) >= 0

-- name: reclaim_expired
-- No notification: the reclaiming worker wakes its own lanes, others find the jobs by polling
-- (as on every backend), and the worker that lost the lease does not race to take it back.
-- The leases taken back are counted in the minute of the reclaim's now ($1, or the server's),
-- in the same statement (see the fleet section).
WITH reclaimed AS (
    UPDATE {schema}.jobs
    SET state = 'queued', attempt = GREATEST(attempt - 1, 0), updated_at = now(),
        error = 'lease expired: the worker stopped heartbeating (crashed or was killed)',
        error_type = 'LeaseExpired',
        errors = (
            SELECT CASE WHEN jsonb_array_length(e) > 10 THEN e - 0 ELSE e END
            FROM (SELECT COALESCE(errors, '[]'::jsonb) || jsonb_build_array(jsonb_build_object(
                'attempt', attempt, 'at', EXTRACT(EPOCH FROM now()), 'type', 'LeaseExpired',
                'message', 'lease expired: the worker stopped heartbeating (crashed or was killed)',
                'traceback', NULL)) AS e) AS appended
        ),
        lease_token = NULL, lease_expires_at = NULL
    WHERE id = ANY(ARRAY(
        SELECT id FROM {schema}.jobs
        WHERE state = 'running' AND lease_expires_at < COALESCE($1::timestamptz, now())
        FOR UPDATE SKIP LOCKED
    )) AND {relaxed_commit}
    RETURNING queue
), counted AS (
    INSERT INTO {schema}.throughput AS t (queue, minute, slot, reclaimed)
    SELECT queue,
           to_timestamp(floor(EXTRACT(EPOCH FROM COALESCE($1::timestamptz, now())) / 60) * 60),
           {counter_slot}, count(*)
    FROM reclaimed GROUP BY queue ORDER BY queue
    ON CONFLICT (queue, minute, slot) DO UPDATE SET reclaimed = t.reclaimed + excluded.reclaimed
), summed AS (
    INSERT INTO {schema}.totals AS t (queue, slot, reclaimed)
    SELECT queue, {counter_slot}, count(*) FROM reclaimed GROUP BY queue ORDER BY queue
    ON CONFLICT (queue, slot) DO UPDATE SET reclaimed = t.reclaimed + excluded.reclaimed
)
SELECT count(*) FROM reclaimed

-- name: cancel
-- a running job's lease is revoked: its worker's heartbeat and outcome are refused. The jobs
-- are locked in id order (an InitPlan), as a finish locks a parent before its children.
WITH cancelled AS (
    UPDATE {schema}.jobs
    SET state = 'cancelled', finished_at = now(), updated_at = now(),
        lease_token = NULL, lease_expires_at = NULL
    WHERE id = ANY(ARRAY(
        SELECT id FROM {schema}.jobs
        WHERE id = ANY($1::bigint[]) AND state IN ('waiting', 'queued', 'running')
        ORDER BY id FOR NO KEY UPDATE
    )) AND state IN ('waiting', 'queued', 'running')
    RETURNING id, (run_id IS NOT NULL OR webhook IS NOT NULL OR has_children) AS linked
), finished AS (
    SELECT pg_notify('{finish_channel}',
                     CASE WHEN count(*) <= 300 THEN string_agg(id::text, ',') ELSE '*' END)
    FROM cancelled HAVING count(*) > 0
)
SELECT id, linked FROM cancelled WHERE (SELECT count(*) FROM finished) >= 0

-- name: job_by_key
-- uses the unique index jobs_queue_key
SELECT {columns} FROM {schema}.jobs WHERE queue = $1 AND key = $2

-- name: filter
-- shared WHERE clause of listings, replay and purge: always parameters $1 to $8
($1::text IS NULL OR queue = $1)
AND ($2::text IS NULL OR state = $2)
AND ($3::text IS NULL OR error_type = $3)
AND ($4::timestamptz IS NULL OR updated_at >= $4)
AND ($5::timestamptz IS NULL OR updated_at < $5)
AND ($6::text IS NULL OR run_id = $6)
AND ($7::bigint[] IS NULL OR id = ANY($7))
AND ($8::text IS NULL OR tenant = $8)

-- name: replay
-- a replayed job of a run is queued in it again: the caller takes it off the run's dead count
WITH replayed AS (
    UPDATE {schema}.jobs
    SET state = 'queued', run_at = now(), updated_at = now(), finished_at = NULL,
        attempt = 0, deliveries = 0, defers = 0, progress = NULL, progress_message = NULL
    WHERE state = 'dead' AND {filter}
    RETURNING queue, run_id
), woken AS (
    SELECT pg_notify('{channel}', due.queue) FROM (SELECT DISTINCT queue FROM replayed) AS due
)
-- how many per run (a NULL run: the jobs without one); the caller moves the runs' counts
SELECT run_id, count(*) FROM replayed WHERE (SELECT count(*) FROM woken) >= 0 GROUP BY run_id

-- name: count_dead
SELECT count(*) FROM {schema}.jobs WHERE state = 'dead' AND {filter}

-- name: purge
WITH purged AS (
    DELETE FROM {schema}.jobs WHERE state = 'dead' AND {filter} RETURNING 1
)
SELECT count(*) FROM purged

-- name: prune
-- At most $4 rows per call, so each transaction (and the dead tuples it leaves for autovacuum)
-- stays small. SKIP LOCKED: pruners in several workers take different rows. $5: the queues
-- that keep their finished jobs for their own time (pruned by prune_queue).
WITH completed AS (
    SELECT id FROM {schema}.jobs WHERE state = 'completed' AND finished_at < $1
        AND queue <> ALL($5::text[])
    LIMIT $4 FOR UPDATE SKIP LOCKED
), dead AS (
    SELECT id FROM {schema}.jobs WHERE state = 'dead' AND finished_at < $2
        AND queue <> ALL($5::text[])
    LIMIT $4 FOR UPDATE SKIP LOCKED
), cancelled AS (
    SELECT id FROM {schema}.jobs WHERE state = 'cancelled' AND finished_at < $3
        AND queue <> ALL($5::text[])
    LIMIT $4 FOR UPDATE SKIP LOCKED
), doomed AS (
    SELECT id FROM completed UNION ALL SELECT id FROM dead UNION ALL SELECT id FROM cancelled
    LIMIT $4
), pruned AS (
    DELETE FROM {schema}.jobs WHERE id IN (SELECT id FROM doomed) AND {relaxed_commit}
    RETURNING 1
)
SELECT count(*) FROM pruned

-- name: prune_queue
-- The same for the one queue $5, past its own retention (index jobs_queue_finished).
WITH completed AS (
    SELECT id FROM {schema}.jobs WHERE queue = $5 AND state = 'completed' AND finished_at < $1
    LIMIT $4 FOR UPDATE SKIP LOCKED
), dead AS (
    SELECT id FROM {schema}.jobs WHERE queue = $5 AND state = 'dead' AND finished_at < $2
    LIMIT $4 FOR UPDATE SKIP LOCKED
), cancelled AS (
    SELECT id FROM {schema}.jobs WHERE queue = $5 AND state = 'cancelled' AND finished_at < $3
    LIMIT $4 FOR UPDATE SKIP LOCKED
), doomed AS (
    SELECT id FROM completed UNION ALL SELECT id FROM dead UNION ALL SELECT id FROM cancelled
    LIMIT $4
), pruned AS (
    DELETE FROM {schema}.jobs WHERE id IN (SELECT id FROM doomed) AND {relaxed_commit}
    RETURNING 1
)
SELECT count(*) FROM pruned

-- name: get_job
SELECT {columns} FROM {schema}.jobs WHERE id = $1

-- name: list_jobs
SELECT {columns} FROM {schema}.jobs
WHERE ($9::bigint IS NULL OR id < $9) AND {filter}
ORDER BY id DESC
LIMIT $10

-- name: list_dead
-- dead jobs, the latest death first (ties: larger id first), after the cursor ($9, $10)
SELECT {columns} FROM {schema}.jobs
WHERE state = 'dead' AND {filter}
  AND ($9::timestamptz IS NULL OR (finished_at, id) < ($9::timestamptz, $10::bigint))
ORDER BY finished_at DESC, id DESC
LIMIT $11

-- name: stalled
-- running jobs whose lease expired, per queue (of tenant $2)
SELECT queue, count(*) FROM {schema}.jobs
WHERE state = 'running' AND lease_expires_at < COALESCE($1::timestamptz, now())
    AND ($2::text IS NULL OR tenant = $2)
GROUP BY queue

-- name: counts
-- per queue and state; the queued rows also say how many are scheduled or retrying, and how
-- long the oldest due one has waited (seconds); $2: only that tenant's jobs. The last column
-- is the time counted at (epoch seconds; flow limits are worked out at it).
SELECT j.queue, j.state, count(*),
       count(*) FILTER (WHERE j.run_at > n.now),
       count(*) FILTER (WHERE j.attempt > 0),
       EXTRACT(EPOCH FROM n.now - min(j.run_at) FILTER (WHERE j.run_at <= n.now))::float8
FROM {schema}.jobs AS j, (SELECT COALESCE($1::timestamptz, now()) AS now) AS n
WHERE $2::text IS NULL OR j.tenant = $2
GROUP BY j.queue, j.state, n.now

-- name: save_schedules
-- new schedules, or known ones' new definitions (their last_tick stays); arrays by column
INSERT INTO {schema}.schedules
    (name, queue, cron, every_s, timezone, payload, priority, catch_up)
SELECT s.name, s.queue, s.cron, s.every_s, s.timezone, s.payload::json, s.priority, s.catch_up
FROM unnest($1::text[], $2::text[], $3::text[], $4::double precision[], $5::text[], $6::text[],
            $7::integer[], $8::integer[])
     AS s (name, queue, cron, every_s, timezone, payload, priority, catch_up)
ON CONFLICT (name) DO UPDATE SET
    queue = excluded.queue, cron = excluded.cron, every_s = excluded.every_s,
    timezone = excluded.timezone, payload = excluded.payload, priority = excluded.priority,
    catch_up = excluded.catch_up, updated_at = now()

-- name: list_schedules
SELECT name, queue, cron, every_s, timezone, payload::text, priority, catch_up, last_tick
FROM {schema}.schedules ORDER BY name

-- name: delete_schedules
DELETE FROM {schema}.schedules WHERE name = ANY($1::text[]) RETURNING name

-- name: advance_schedule
-- the compare-and-set of a firing ($1 name, $2 the last tick read, $3 the new one): only from
-- the last tick the scheduler read, only forward; the row stays locked until the tick's jobs
-- are in
UPDATE {schema}.schedules SET last_tick = $3, updated_at = now()
WHERE name = $1 AND last_tick IS NOT DISTINCT FROM $2 AND ($2 IS NULL OR $3 > $2)
RETURNING name

-- name: stored_depths
SELECT name, max_depth FROM {schema}.queues
WHERE name = ANY($1::text[]) AND max_depth IS NOT NULL

-- name: set_queue
-- $2 paused and $3 max_depth are NULL to keep the stored value ($4 true clears max_depth);
-- $6 true stores the flow limits $5 (NULL: none), else they stay. Resuming, or new limits,
-- wake the workers waiting on the queue (every save of a queue not paused does).
WITH saved AS (
    INSERT INTO {schema}.queues AS s (name, paused, max_depth, limits)
    VALUES ($1, COALESCE($2::boolean, false), CASE WHEN $4::boolean THEN NULL ELSE $3::integer END,
            $5::jsonb)
    ON CONFLICT (name) DO UPDATE SET
        paused = COALESCE($2::boolean, s.paused),
        max_depth = CASE WHEN $4::boolean THEN NULL ELSE COALESCE($3::integer, s.max_depth) END,
        limits = CASE WHEN $6::boolean THEN $5::jsonb ELSE s.limits END,
        updated_at = now()
    RETURNING name, paused, max_depth, updated_at, limits::text
), woken AS (
    SELECT pg_notify('{channel}', name) FROM saved WHERE NOT paused
)
SELECT * FROM saved WHERE (SELECT count(*) FROM woken) >= 0

-- name: queue_settings
SELECT name, paused, max_depth, updated_at, limits::text FROM {schema}.queues ORDER BY name

-- name: run_now
WITH moved AS (
    UPDATE {schema}.jobs SET run_at = LEAST(run_at, now()), updated_at = now()
    WHERE id = ANY($1::bigint[]) AND state = 'queued'
    RETURNING id, queue
), woken AS (
    SELECT pg_notify('{channel}', q.queue) FROM (SELECT DISTINCT queue FROM moved) AS q
)
SELECT id FROM moved WHERE (SELECT count(*) FROM woken) >= 0

-- name: cancel_where
-- the shared filter's state ($2) is 'waiting', 'queued', 'running' or NULL (all three); the
-- jobs are locked in id order, as cancel locks them
WITH cancelled AS (
    UPDATE {schema}.jobs
    SET state = 'cancelled', finished_at = now(), updated_at = now(),
        lease_token = NULL, lease_expires_at = NULL
    WHERE id = ANY(ARRAY(
        SELECT id FROM {schema}.jobs
        WHERE state IN ('waiting', 'queued', 'running') AND {filter}
        ORDER BY id FOR NO KEY UPDATE
    )) AND state IN ('waiting', 'queued', 'running')
    RETURNING id, (run_id IS NOT NULL OR webhook IS NOT NULL OR has_children) AS linked
), finished AS (
    SELECT pg_notify('{finish_channel}',
                     CASE WHEN count(*) <= 300 THEN string_agg(id::text, ',') ELSE '*' END)
    FROM cancelled HAVING count(*) > 0
)
SELECT count(*), array_agg(id) FILTER (WHERE linked) FROM cancelled
WHERE (SELECT count(*) FROM finished) >= 0

-- name: count_cancellable
SELECT count(*) FROM {schema}.jobs WHERE state IN ('waiting', 'queued', 'running') AND {filter}

-- == links: runs, dependencies, job webhooks (DESIGN §10; see forebay.runs) ==================
-- A statement below runs inside the transaction of an enqueue or a finish that has links; the
-- plain statements above never touch them. Lock order: jobs (parents before children: lower
-- ids first), then runs by id.

-- name: enqueue_linked
-- Jobs with a run, parents or a webhook (and any others in the same batch), every column given
-- per job: state ('queued', 'waiting', or 'cancelled' when a parent already failed, with its
-- error), and their links. Same answer as enqueue (plus the stored state), in input order.
WITH inserted AS (
    INSERT INTO {schema}.jobs (queue, payload, key, priority, run_at, run_id, max_attempts,
                               timeout_s, state, finished_at, error, error_type, after_ids,
                               after_policy, webhook, parent_id, tenant, rate_key,
                               concurrency_key, fair_key, traceparent)
    SELECT j.queue, j.payload::json, j.key, j.priority, COALESCE(j.run_at, now()), j.run_id,
           j.max_attempts, j.timeout_s, j.state,
           CASE WHEN j.state = 'cancelled' THEN now() END, j.error, j.error_type, j.after_ids,
           j.after_policy, j.webhook, j.parent_id, j.tenant, j.rate_key, j.concurrency_key,
           j.fair_key, j.traceparent
    FROM unnest($1::text[], $2::text[], $3::text[], $4::integer[], $5::timestamptz[],
                $6::text[], $7::integer[], $8::double precision[], $9::text[], $10::text[],
                $11::text[], $12::text[], $13::text[], $14::text[], $15::bigint[],
                $16::text[], $17::text[], $18::text[], $19::text[], $20::text[])
         WITH ORDINALITY AS j (payload, queue, key, priority, run_at, run_id, max_attempts,
                               timeout_s, state, error, error_type, after_ids, after_policy,
                               webhook, parent_id, tenant, rate_key, concurrency_key, fair_key,
                               traceparent, ord)
    ORDER BY j.ord
    ON CONFLICT (queue, key) WHERE key IS NOT NULL DO NOTHING
    RETURNING id, queue, key, run_at, created_at, state
), woken AS (
    SELECT pg_notify('{channel}', due.queue)
    FROM (SELECT DISTINCT queue FROM inserted WHERE state = 'queued' AND run_at <= now()) AS due
)
SELECT id, queue, key, created_at, state FROM inserted WHERE (SELECT count(*) FROM woken) >= 0

-- name: lock_parents
-- the parents named by new jobs, locked in id order: a parent's finish and a new child's
-- enqueue see each other whichever commits first
SELECT id, state FROM {schema}.jobs WHERE id = ANY($1::bigint[]) ORDER BY id FOR NO KEY UPDATE

-- name: mark_parents
-- unfinished parents get waiting children: their finishes take the linked path from now on
UPDATE {schema}.jobs SET has_children = true WHERE id = ANY($1::bigint[]) AND NOT has_children

-- name: add_dependencies
INSERT INTO {schema}.dependencies (parent_id, child_id)
SELECT * FROM unnest($1::bigint[], $2::bigint[]) ON CONFLICT DO NOTHING

-- name: running_in_run
-- the jobs ($1) that are running in their run ($2): those may add jobs to a sealed run
SELECT j.id, j.run_id FROM {schema}.jobs AS j
JOIN unnest($1::bigint[], $2::text[]) AS p (id, run_id) ON j.id = p.id AND j.run_id = p.run_id
WHERE j.state = 'running'

-- name: finished_links
-- the jobs just finished ($1) that have a run, a webhook or children: what they link to
SELECT id, state, run_id, webhook IS NOT NULL, has_children FROM {schema}.jobs
WHERE id = ANY($1::bigint[]) AND (run_id IS NOT NULL OR webhook IS NOT NULL OR has_children)

-- name: get_jobs
SELECT {columns} FROM {schema}.jobs WHERE id = ANY($1::bigint[]) ORDER BY id

-- name: take_children
-- the finished parents' edges are spent: deleting them finds the children
DELETE FROM {schema}.dependencies WHERE parent_id = ANY($1::bigint[]) RETURNING child_id

-- name: lock_waiting
-- those children still waiting, locked in id order (a concurrent finish of another parent of
-- one waits here, then sees this transaction's outcome)
SELECT id, after_ids, after_policy FROM {schema}.jobs
WHERE id = ANY($1::bigint[]) AND state = 'waiting'
ORDER BY id FOR NO KEY UPDATE

-- name: job_states
SELECT id, state FROM {schema}.jobs WHERE id = ANY($1::bigint[])

-- name: release_waiting
-- waiting children whose parents are done -> queued, keeping their run_at
WITH released AS (
    UPDATE {schema}.jobs SET state = 'queued', updated_at = now()
    WHERE id = ANY($1::bigint[]) AND state = 'waiting'
    RETURNING queue, run_at
), woken AS (
    SELECT pg_notify('{channel}', due.queue)
    FROM (SELECT DISTINCT queue FROM released WHERE run_at <= now()) AS due
)
SELECT count(*) FROM released WHERE (SELECT count(*) FROM woken) >= 0

-- name: fail_waiting
-- waiting children of a failed parent -> cancelled, with the parent's failure ($2, one each;
-- $3 the error type, DependencyFailed)
WITH failed AS (
    UPDATE {schema}.jobs AS j
    SET state = 'cancelled', finished_at = now(), updated_at = now(),
        error = f.error, error_type = $3
    FROM unnest($1::bigint[], $2::text[]) AS f (id, error)
    WHERE j.id = f.id AND j.state = 'waiting'
    RETURNING j.id
), finished AS (
    SELECT pg_notify('{finish_channel}',
                     CASE WHEN count(*) <= 300 THEN string_agg(id::text, ',') ELSE '*' END)
    FROM failed HAVING count(*) > 0
)
SELECT id FROM failed WHERE (SELECT count(*) FROM finished) >= 0

-- name: lock_runs
SELECT id, state FROM {schema}.runs WHERE id = ANY($1::text[]) ORDER BY id FOR UPDATE

-- name: count_runs
-- add to the runs' counts, locking them in id order first (the CTE's rows are produced, and
-- so locked, sorted, and the update touches only rows it produced); a sealed run whose jobs
-- all finished completes. The last column is the state before: sealed before and completed
-- now is this transaction's completion, decided under the row lock, so there is one.
WITH locked AS (
    SELECT id, state FROM {schema}.runs WHERE id = ANY($1::text[]) ORDER BY id FOR UPDATE
)
UPDATE {schema}.runs AS r
SET total = r.total + d.total, completed = r.completed + d.completed, dead = r.dead + d.dead,
    cancelled = r.cancelled + d.cancelled,
    state = CASE WHEN r.state = 'sealed' AND r.completed + d.completed + r.dead + d.dead
                      + r.cancelled + d.cancelled = r.total + d.total
                 THEN 'completed' ELSE r.state END,
    completed_at = CASE WHEN r.state = 'sealed' AND r.completed + d.completed + r.dead + d.dead
                             + r.cancelled + d.cancelled = r.total + d.total
                        THEN now() ELSE r.completed_at END
FROM unnest($1::text[], $2::integer[], $3::integer[], $4::integer[], $5::integer[])
     AS d (id, total, completed, dead, cancelled), locked AS l
WHERE r.id = d.id AND l.id = d.id
RETURNING r.id, r.name, r.key, r.meta, r.on_complete, r.webhook, r.state, r.total, r.completed,
          r.dead, r.cancelled, r.created_at, r.sealed_at, r.completed_at, r.tenant, l.state

-- name: seal_run
-- open -> sealed; completed at once when its jobs all finished (also none); the row is locked
UPDATE {schema}.runs AS r
SET state = CASE WHEN completed + dead + cancelled = total THEN 'completed' ELSE 'sealed' END,
    sealed_at = now(),
    completed_at = CASE WHEN completed + dead + cancelled = total THEN now() END
WHERE id = $1 AND state = 'open'
RETURNING r.id, r.name, r.key, r.meta, r.on_complete, r.webhook, r.state, r.total, r.completed,
          r.dead, r.cancelled, r.created_at, r.sealed_at, r.completed_at, r.tenant

-- name: start_run
INSERT INTO {schema}.runs (id, name, key, meta, on_complete, webhook, tenant)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT DO NOTHING  -- its key is taken, or it is a repeat of this very insert (its id)
RETURNING id

-- name: run_by_key
SELECT id FROM {schema}.runs WHERE key = $1

-- name: run_counted
-- a run and its unfinished jobs counted (index jobs_run_state), in one snapshot; a fragment
SELECT r.id, r.name, r.key, r.meta, r.state, r.on_complete, r.webhook, r.total,
       c.waiting, c.queued, c.running, r.completed, r.dead, r.cancelled,
       r.created_at, r.sealed_at, r.completed_at, r.tenant
FROM {schema}.runs AS r, LATERAL (
    SELECT count(*) FILTER (WHERE j.state = 'waiting') AS waiting,
           count(*) FILTER (WHERE j.state = 'queued') AS queued,
           count(*) FILTER (WHERE j.state = 'running') AS running
    FROM {schema}.jobs AS j
    WHERE j.run_id = r.id AND j.state IN ('waiting', 'queued', 'running')
) AS c

-- name: get_run
SELECT * FROM {run_counted} AS r WHERE r.id = $1

-- name: list_runs
SELECT * FROM {run_counted} AS r
WHERE ($1::text IS NULL OR r.state = $1) AND ($2::text IS NULL OR r.id < $2)
    AND ($4::text IS NULL OR r.tenant = $4)
ORDER BY r.id DESC
LIMIT $3

-- name: prune_runs
-- completed runs past their retention ($1), at most $2
WITH pruned AS (
    DELETE FROM {schema}.runs WHERE id IN (
        SELECT id FROM {schema}.runs WHERE state = 'completed' AND completed_at < $1
        LIMIT $2 FOR UPDATE SKIP LOCKED
    ) AND {relaxed_commit}
    RETURNING 1
)
SELECT count(*) FROM pruned

-- == the fleet (forebay.fleet): worker records and finished-job counts =======================
-- Finished jobs are counted by the statement that finishes them (settle: completed and dead;
-- reclaim_expired: reclaimed), as data-modifying CTEs over the rows it changed, so a refused
-- settle counts nothing and a count is lost only with its finish. Each adds to its queue's row
-- of the current minute (throughput) and to its queue's totals. Those rows are hot: every
-- finish of a queue, from any worker, updates them and holds their lock until it commits. So
-- each counter is spread over a few rows, one per slot, and a statement writes the slot of its
-- connection's server process (counter_slot): the finishes of different connections seldom
-- wait for each other's commits, and reads sum the slots. The rows are written in queue
-- order, throughput before totals, by every statement: no deadlocks among counters, and
-- counters are always locked after the jobs they count.

-- name: counter_slot
-- 16 rows per counter: 16 connections committing single finishes of one queue at once
-- committed about a third as fast on one row as each on a row of its own, and as fast as that
-- on 16 slots (about two thirds on 8); reads sum at most 16 rows per queue and minute.
pg_backend_pid() % 16

-- name: save_worker
-- insert or replace a worker's record; records expired a while ago ($5: how long, so that a
-- worker whose clock lags the server's is not deleted while it lives) are deleted, skipping
-- those another save is deleting or writing (no waits, no deadlocks)
WITH gone AS (
    DELETE FROM {schema}.workers WHERE id = ANY(ARRAY(
        SELECT id FROM {schema}.workers
        WHERE expires_at < now() - make_interval(secs => $5) AND id <> $1
        FOR UPDATE SKIP LOCKED
    ))
)
INSERT INTO {schema}.workers AS w (id, info, started_at, expires_at)
VALUES ($1, $2::jsonb, $3, $4)
ON CONFLICT (id) DO UPDATE
SET info = excluded.info, started_at = excluded.started_at, expires_at = excluded.expires_at

-- name: remove_worker
DELETE FROM {schema}.workers WHERE id = $1

-- name: list_workers
-- the records that hold at $1 (NULL: the server's now)
SELECT info::text FROM {schema}.workers
WHERE expires_at > COALESCE($1::timestamptz, now())
ORDER BY started_at, id

-- name: throughput
-- per queue ($2: only that one) and minute, from minute $1 on, the slots summed
SELECT queue, minute, sum(completed)::bigint, sum(dead)::bigint, sum(reclaimed)::bigint
FROM {schema}.throughput
WHERE minute >= $1 AND ($2::text IS NULL OR queue = $2)
GROUP BY queue, minute
ORDER BY queue, minute

-- name: totals
SELECT queue, sum(completed)::bigint, sum(dead)::bigint, sum(reclaimed)::bigint
FROM {schema}.totals
GROUP BY queue
ORDER BY queue

-- name: prune_throughput
-- the minutes that start before $1, at most $2 rows
WITH pruned AS (
    DELETE FROM {schema}.throughput WHERE (queue, minute, slot) IN (
        SELECT queue, minute, slot FROM {schema}.throughput WHERE minute < $1
        LIMIT $2 FOR UPDATE SKIP LOCKED
    ) AND {relaxed_commit}
    RETURNING 1
)
SELECT count(*) FROM pruned
