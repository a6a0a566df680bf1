-- SQL of the SQLite backend. Sections are loaded by forebay.sqlfiles.render_queries, which
-- fills the placeholders once: {columns} (a job's columns, in the order of
-- forebay.backends.rows.COLUMNS), {jobs} (the jobs joined with their payloads), {filter}
-- (the shared filter section), {append_error} (the errors history with one more entry),
-- {linked} (whether a job has links its finish must follow) and {run_columns} (a run's
-- columns, its unfinished jobs counted).
-- Parameters are named (:name). Times are epoch seconds.

-- name: append_error
-- `errors` with the entry of the attempt that just failed appended, keeping the last 10
-- (forebay.job.MAX_ERRORS_KEPT); :now, :error, :error_type and :traceback describe it
(SELECT CASE WHEN json_array_length(e) > 10 THEN json_remove(e, '$[0]') ELSE e END
 FROM (SELECT json_insert(COALESCE(errors, '[]'), '$[#]', json_object(
     'attempt', attempt, 'at', :now, 'type', :error_type, 'message', :error,
     'traceback', :traceback)) AS e))

-- name: create_migrations_table
CREATE TABLE IF NOT EXISTS forebay_migrations (
    version    INTEGER PRIMARY KEY,
    name       TEXT NOT NULL,
    applied_at REAL NOT NULL
)

-- name: applied_migrations
SELECT version FROM forebay_migrations ORDER BY version

-- name: record_migration
INSERT INTO forebay_migrations (version, name, applied_at) VALUES (:version, :name, :now)

-- name: drop_tables
-- every table forebay keeps in the file, with their indexes and triggers (drop_everything)
DROP TABLE IF EXISTS forebay_jobs;
DROP TABLE IF EXISTS forebay_payloads;
DROP TABLE IF EXISTS forebay_schedules;
DROP TABLE IF EXISTS forebay_queues;
DROP TABLE IF EXISTS forebay_runs;
DROP TABLE IF EXISTS forebay_deps;
DROP TABLE IF EXISTS forebay_flow;
DROP TABLE IF EXISTS forebay_workers;
DROP TABLE IF EXISTS forebay_throughput;
DROP TABLE IF EXISTS forebay_totals;
DROP TABLE IF EXISTS forebay_migrations;

-- name: next_job_id
SELECT COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'forebay_jobs'), 0)

-- name: insert_jobs
-- many jobs in one statement: :jobs is a JSON array of [queue, key, priority, run_at, run_id,
-- created_at, updated_at, max_attempts, timeout_s]; a keyed job whose key is taken is skipped
INSERT INTO forebay_jobs (queue, key, priority, run_at, run_id, created_at, updated_at,
                          max_attempts, timeout_s)
SELECT json_extract(j.value, '$[0]'), json_extract(j.value, '$[1]'),
       json_extract(j.value, '$[2]'), json_extract(j.value, '$[3]'),
       json_extract(j.value, '$[4]'), json_extract(j.value, '$[5]'),
       json_extract(j.value, '$[6]'), json_extract(j.value, '$[7]'),
       json_extract(j.value, '$[8]')
FROM json_each(:jobs) AS j
WHERE true
ORDER BY j.key
ON CONFLICT (queue, key) WHERE key IS NOT NULL DO NOTHING

-- name: insert_flow_jobs
-- as insert_jobs, for jobs some of which have a tenant, flow keys or a trace context: each
-- array goes on with [tenant, rate_key, concurrency_key, fair_key, traceparent]
INSERT INTO forebay_jobs (queue, key, priority, run_at, run_id, created_at, updated_at,
                          max_attempts, timeout_s, tenant, rate_key, concurrency_key, fair_key,
                          traceparent)
SELECT json_extract(j.value, '$[0]'), json_extract(j.value, '$[1]'),
       json_extract(j.value, '$[2]'), json_extract(j.value, '$[3]'),
       json_extract(j.value, '$[4]'), json_extract(j.value, '$[5]'),
       json_extract(j.value, '$[6]'), json_extract(j.value, '$[7]'),
       json_extract(j.value, '$[8]'), json_extract(j.value, '$[9]'),
       json_extract(j.value, '$[10]'), json_extract(j.value, '$[11]'),
       json_extract(j.value, '$[12]'), json_extract(j.value, '$[13]')
FROM json_each(:jobs) AS j
WHERE true
ORDER BY j.key
ON CONFLICT (queue, key) WHERE key IS NOT NULL DO NOTHING

-- name: insert_linked_jobs
-- as insert_flow_jobs, for jobs with links: each array goes on with [state, after_ids,
-- after_policy, webhook, parent_id, finished_at, error, error_type]
INSERT INTO forebay_jobs (queue, key, priority, run_at, run_id, created_at, updated_at,
                          max_attempts, timeout_s, tenant, rate_key, concurrency_key, fair_key,
                          traceparent, state, after_ids, after_policy, webhook, parent_id,
                          finished_at, error, error_type)
SELECT json_extract(j.value, '$[0]'), json_extract(j.value, '$[1]'),
       json_extract(j.value, '$[2]'), json_extract(j.value, '$[3]'),
       json_extract(j.value, '$[4]'), json_extract(j.value, '$[5]'),
       json_extract(j.value, '$[6]'), json_extract(j.value, '$[7]'),
       json_extract(j.value, '$[8]'), json_extract(j.value, '$[9]'),
       json_extract(j.value, '$[10]'), json_extract(j.value, '$[11]'),
       json_extract(j.value, '$[12]'), json_extract(j.value, '$[13]'),
       json_extract(j.value, '$[14]'), json_extract(j.value, '$[15]'),
       json_extract(j.value, '$[16]'), json_extract(j.value, '$[17]'),
       json_extract(j.value, '$[18]'), json_extract(j.value, '$[19]'),
       json_extract(j.value, '$[20]'), json_extract(j.value, '$[21]')
FROM json_each(:jobs) AS j
WHERE true
ORDER BY j.key
ON CONFLICT (queue, key) WHERE key IS NOT NULL DO NOTHING

-- name: insert_payloads
-- :payloads is a JSON array of [job id, payload text]
INSERT INTO forebay_payloads (job_id, payload)
SELECT json_extract(p.value, '$[0]'), json_extract(p.value, '$[1]')
FROM json_each(:payloads) AS p

-- name: jobs_after
-- the jobs stored after id :after, as one JSON array of [id, queue, key] in id order
SELECT json_group_array(json_array(id, queue, key))
FROM (SELECT id, queue, key FROM forebay_jobs WHERE id > :after ORDER BY id)

-- name: insert_job_returning
INSERT INTO forebay_jobs (queue, key, priority, run_at, run_id, created_at, updated_at,
                          max_attempts, timeout_s, tenant, rate_key, concurrency_key, fair_key,
                          traceparent)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
RETURNING id

-- name: insert_payload
INSERT INTO forebay_payloads (job_id, payload) VALUES (?, ?)

-- name: job_by_key
SELECT {columns} FROM {jobs} WHERE j.queue = ? AND j.key = ?

-- name: taken_keys
-- which of :keys (a JSON array of [queue, key]) are stored, as (queue, key) rows
-- (forebay_jobs_queue_key)
SELECT j.queue, j.key FROM json_each(:keys) AS k
JOIN forebay_jobs AS j
  ON j.queue = json_extract(k.value, '$[0]') AND j.key = json_extract(k.value, '$[1]')
WHERE j.key IS NOT NULL

-- name: depth
SELECT COUNT(*) FROM (
    SELECT 1 FROM forebay_jobs
    WHERE queue = :queue AND state IN ('waiting', 'queued', 'running')
    LIMIT :cap
)

-- name: lease_pick
-- the ids of the jobs a lease takes, as one JSON array (one row: see _ROWS_PER_OP)
SELECT json_group_array(id) FROM (
    SELECT id FROM forebay_jobs
    WHERE queue = :queue AND state = 'queued' AND run_at <= :now
        -- a paused queue leases nothing, and one with flow limits takes the flow path (one
        -- primary-key lookup)
        AND NOT EXISTS (SELECT 1 FROM forebay_queues
                        WHERE queue = :queue AND (paused = 1 OR limits IS NOT NULL))
    ORDER BY priority DESC, run_at, id
    LIMIT :limit
)

-- name: lease
UPDATE forebay_jobs
SET state = 'running', lease_token = :token, lease_expires_at = :expires, worker_id = :worker,
    attempt = attempt + 1, deliveries = deliveries + 1, updated_at = :now, started_at = :now,
    progress = NULL, progress_message = NULL
WHERE id IN (SELECT value FROM json_each(:ids))

-- name: leased
-- the jobs of one lease, read after its commit, in the promised order
SELECT {columns} FROM {jobs}
WHERE j.id IN (SELECT value FROM json_each(:ids)) AND j.lease_token = :token
ORDER BY j.priority DESC, j.run_at, j.id

-- name: holding
-- which of :ids are still leased with :token, as one JSON array
SELECT json_group_array(id) FROM forebay_jobs
WHERE id IN (SELECT value FROM json_each(:ids)) AND lease_token = :token AND state = 'running'

-- name: holding_linked
-- as holding, and which of those have links a finish must follow (a run, a webhook, waiting
-- children), as a second JSON array: for most jobs one probe of an empty index; then how many
-- are held, and the least and greatest of their queues (one queue, as a lease's jobs are: the
-- finish counts them at once; else see finished_queues)
SELECT json_group_array(id),
       json_group_array(id) FILTER (WHERE {linked}),
       COUNT(*), MIN(queue), MAX(queue)
FROM forebay_jobs
WHERE id IN (SELECT value FROM json_each(:ids)) AND lease_token = :token AND state = 'running'

-- name: linked
-- whether the job in forebay_jobs has links a finish must follow (RETURNING and FILTER use it)
(run_id IS NOT NULL OR webhook IS NOT NULL
 OR EXISTS (SELECT 1 FROM forebay_deps AS d WHERE d.parent_id = forebay_jobs.id))

-- name: extend
-- :ids are held (see holding), as a JSON array
UPDATE forebay_jobs SET lease_expires_at = :expires, updated_at = :now
WHERE id IN (SELECT value FROM json_each(:ids))

-- name: progress
UPDATE forebay_jobs SET progress = ?, progress_message = ?, updated_at = ?
WHERE id = ? AND lease_token = ? AND state = 'running'

-- name: complete
-- :ids are held (see holding), as a JSON array. The last error goes (the history keeps it):
-- a completed job's state is that it completed.
UPDATE forebay_jobs
SET state = 'completed', finished_at = :now, updated_at = :now,
    lease_token = NULL, lease_expires_at = NULL, progress = 100, error = NULL, error_type = NULL
WHERE id IN (SELECT value FROM json_each(:ids))

-- name: complete_result
-- one job that returned a result (as complete, storing it)
UPDATE forebay_jobs
SET state = 'completed', finished_at = ?, updated_at = ?, result = ?,
    lease_token = NULL, lease_expires_at = NULL, progress = 100, error = NULL, error_type = NULL
WHERE id = ? AND lease_token = ? AND state = 'running'
RETURNING {linked}, queue

-- name: retry
UPDATE forebay_jobs
SET state = 'queued', run_at = :run_at, error = :error, error_type = :error_type,
    updated_at = :now, errors = {append_error},
    lease_token = NULL, lease_expires_at = NULL
WHERE id = :id AND lease_token = :token AND state = 'running'

-- name: dead_letter
UPDATE forebay_jobs
SET state = 'dead', error = :error, error_type = :error_type, finished_at = :now,
    updated_at = :now, errors = {append_error},
    lease_token = NULL, lease_expires_at = NULL
WHERE id = :id AND lease_token = :token AND state = 'running'
RETURNING {linked}, queue

-- name: defer
UPDATE forebay_jobs
SET state = 'queued', run_at = ?, progress_message = ?, updated_at = ?,
    attempt = attempt - 1, deliveries = deliveries - 1, defers = defers + 1,
    lease_token = NULL, lease_expires_at = NULL
WHERE id = ? AND lease_token = ? AND state = 'running'

-- name: release
UPDATE forebay_jobs
SET state = 'queued', updated_at = ?,
    attempt = attempt - 1, deliveries = deliveries - 1,
    lease_token = NULL, lease_expires_at = NULL
WHERE id = ? AND lease_token = ? AND state = 'running'

-- name: finished_queues
-- the jobs :ids (a JSON array) per queue, as (queue, count) rows
SELECT queue, COUNT(*) FROM forebay_jobs WHERE id IN (SELECT value FROM json_each(:ids))
GROUP BY queue

-- name: expired_per_queue
-- the running jobs whose lease expired before :now per queue, as (queue, count) rows: what
-- reclaim_expired takes back, read in its operation (forebay_jobs_leases)
SELECT queue, COUNT(*) FROM forebay_jobs WHERE state = 'running' AND lease_expires_at < :now
GROUP BY queue

-- name: reclaim_expired
-- :error and :error_type say that the lease expired; the history gets them too (no traceback)
UPDATE forebay_jobs
SET state = 'queued', attempt = MAX(attempt - 1, 0), updated_at = :now,
    error = :error, error_type = :error_type, errors = {append_error},
    lease_token = NULL, lease_expires_at = NULL
WHERE state = 'running' AND lease_expires_at < :now

-- name: cancel
-- a running job's lease is revoked: its worker's heartbeat and outcome are refused
UPDATE forebay_jobs
SET state = 'cancelled', finished_at = :now, updated_at = :now,
    lease_token = NULL, lease_expires_at = NULL
WHERE id IN (SELECT value FROM json_each(:ids)) AND state IN ('waiting', 'queued', 'running')
RETURNING id, {linked}

-- name: filter
-- shared WHERE clause of listings, replay and purge (appended to their statements)
(:queue IS NULL OR queue = :queue)
AND (:state IS NULL OR state = :state)
AND (:error_type IS NULL OR error_type = :error_type)
AND (:since IS NULL OR updated_at >= :since)
AND (:until IS NULL OR updated_at < :until)
AND (:run_id IS NULL OR run_id = :run_id)
AND (:tenant IS NULL OR tenant = :tenant)
AND (:ids IS NULL OR id IN (SELECT value FROM json_each(:ids)))

-- name: replay
UPDATE forebay_jobs
SET state = 'queued', run_at = :now, updated_at = :now, finished_at = NULL,
    attempt = 0, deliveries = 0, defers = 0, progress = NULL, progress_message = NULL
WHERE state = 'dead' AND {filter}
RETURNING run_id

-- name: count_dead
SELECT COUNT(*) FROM forebay_jobs WHERE state = 'dead' AND {filter}

-- name: purge
DELETE FROM forebay_jobs WHERE state = 'dead' AND {filter}

-- name: prune
-- every queue but those in :others (a JSON array), which keep their finished jobs for their own
-- time (prune_queue)
DELETE FROM forebay_jobs WHERE id IN (
    SELECT id FROM forebay_jobs WHERE state = 'completed' AND finished_at < :completed_before
        AND queue NOT IN (SELECT value FROM json_each(:others))
    UNION ALL
    SELECT id FROM forebay_jobs WHERE state = 'dead' AND finished_at < :dead_before
        AND queue NOT IN (SELECT value FROM json_each(:others))
    UNION ALL
    SELECT id FROM forebay_jobs WHERE state = 'cancelled' AND finished_at < :cancelled_before
        AND queue NOT IN (SELECT value FROM json_each(:others))
    LIMIT :limit
)

-- name: prune_queue
-- one queue's finished jobs past its own retention (forebay_jobs_queue_state)
DELETE FROM forebay_jobs WHERE id IN (
    SELECT id FROM forebay_jobs
    WHERE queue = :queue AND state = 'completed' AND finished_at < :completed_before
    UNION ALL
    SELECT id FROM forebay_jobs
    WHERE queue = :queue AND state = 'dead' AND finished_at < :dead_before
    UNION ALL
    SELECT id FROM forebay_jobs
    WHERE queue = :queue AND state = 'cancelled' AND finished_at < :cancelled_before
    LIMIT :limit
)

-- name: get_job
SELECT {columns} FROM {jobs} WHERE j.id = ?

-- name: list_jobs
SELECT {columns} FROM {jobs}
WHERE (:before_id IS NULL OR j.id < :before_id) AND {filter}
ORDER BY j.id DESC
LIMIT :limit

-- name: list_dead
-- dead jobs, the latest death first; times compared in whole microseconds, rounded as Python
-- rounds a timestamp into a datetime (whole seconds, then the fraction's microseconds): the
-- product finished_at * 1e6 would be a quarter of a microsecond coarse, and round a tie the
-- other way, so a page could start one microsecond off its cursor and skip jobs
SELECT {columns} FROM {jobs}
WHERE j.state = 'dead' AND {filter}
  AND (:before_us IS NULL
       OR (CAST(j.finished_at AS INTEGER) * 1000000 + CAST(round((j.finished_at - CAST(j.finished_at AS INTEGER)) * 1000000) AS INTEGER)) < :before_us
       OR ((CAST(j.finished_at AS INTEGER) * 1000000 + CAST(round((j.finished_at - CAST(j.finished_at AS INTEGER)) * 1000000) AS INTEGER)) = :before_us AND j.id < :before_id))
ORDER BY (CAST(j.finished_at AS INTEGER) * 1000000 + CAST(round((j.finished_at - CAST(j.finished_at AS INTEGER)) * 1000000) AS INTEGER)) DESC, j.id DESC
LIMIT :limit

-- name: counts
SELECT queue, state, COUNT(*) FROM forebay_jobs GROUP BY queue, state

-- name: tenant_counts
-- counts, of one tenant's jobs (forebay_jobs_tenant)
SELECT queue, state, COUNT(*) FROM forebay_jobs
WHERE tenant = :tenant AND tenant IS NOT NULL
GROUP BY queue, state

-- name: stalled
-- running jobs whose lease expired, per queue (of :tenant's jobs, when not NULL)
SELECT queue, COUNT(*) FROM forebay_jobs
WHERE state = 'running' AND lease_expires_at < :now AND (:tenant IS NULL OR tenant = :tenant)
GROUP BY queue

-- name: queued_detail
SELECT queue,
       SUM(run_at > :now),
       SUM(attempt > 0),
       MIN(CASE WHEN run_at <= :now THEN run_at END)
FROM forebay_jobs WHERE state = 'queued' AND (:tenant IS NULL OR tenant = :tenant)
GROUP BY queue

-- name: save_schedule
-- a new schedule, or a known one's new definition (its last_tick stays)
INSERT INTO forebay_schedules
    (name, queue, cron, every_s, timezone, payload, priority, catch_up, created_at, updated_at)
VALUES (:name, :queue, :cron, :every_s, :timezone, :payload, :priority, :catch_up, :now, :now)
ON CONFLICT (name) DO UPDATE SET
    queue = excluded.queue, cron = excluded.cron, every_s = excluded.every_s,
    timezone = excluded.timezone, payload = excluded.payload, priority = excluded.priority,
    catch_up = excluded.catch_up, updated_at = excluded.updated_at

-- name: list_schedules
SELECT name, queue, cron, every_s, timezone, payload, priority, catch_up, last_tick
FROM forebay_schedules ORDER BY name

-- name: delete_schedule
DELETE FROM forebay_schedules WHERE name = ? RETURNING name

-- name: advance_schedule
-- the compare-and-set of a firing: only from the last tick the scheduler read, only forward
UPDATE forebay_schedules SET last_tick = :tick, updated_at = :now
WHERE name = :name AND last_tick IS :after AND (:after IS NULL OR :tick > :after)

-- name: stored_depths
-- the stored max_depth of the queues in :queues (a JSON array) that have one
SELECT queue, max_depth FROM forebay_queues
WHERE queue IN (SELECT value FROM json_each(:queues)) AND max_depth IS NOT NULL

-- name: set_queue
-- :paused and :max_depth are NULL to keep the stored value (:clear_depth = 1 clears max_depth);
-- :limits is stored when :set_limits = 1 (NULL: no limits), else kept
INSERT INTO forebay_queues (queue, paused, max_depth, updated_at, limits)
VALUES (:queue, COALESCE(:paused, 0), CASE WHEN :clear_depth THEN NULL ELSE :max_depth END, :now,
        :limits)
ON CONFLICT (queue) DO UPDATE SET
    paused = COALESCE(:paused, paused),
    max_depth = CASE WHEN :clear_depth THEN NULL ELSE COALESCE(:max_depth, max_depth) END,
    limits = CASE WHEN :set_limits THEN :limits ELSE limits END,
    updated_at = :now
RETURNING queue, paused, max_depth, updated_at, limits

-- name: queue_settings
SELECT queue, paused, max_depth, updated_at, limits FROM forebay_queues ORDER BY queue

-- name: run_now
UPDATE forebay_jobs SET run_at = MIN(run_at, :now), updated_at = :now
WHERE id IN (SELECT value FROM json_each(:ids)) AND state = 'queued'
RETURNING id

-- name: cancel_where
-- the shared filter's :state is 'waiting', 'queued', 'running' or NULL (all three)
UPDATE forebay_jobs
SET state = 'cancelled', finished_at = :now, updated_at = :now,
    lease_token = NULL, lease_expires_at = NULL
WHERE state IN ('waiting', 'queued', 'running') AND {filter}
RETURNING id, {linked}

-- name: count_cancellable
SELECT COUNT(*) FROM forebay_jobs WHERE state IN ('waiting', 'queued', 'running') AND {filter}

-- name: prune_runs
-- completed runs past their retention (their jobs are pruned as any job)
DELETE FROM forebay_runs WHERE id IN (
    SELECT id FROM forebay_runs WHERE state = 'completed' AND completed_at < :runs_before
    LIMIT :limit
)

-- name: finished_links
-- what the finish of the jobs :ids (a JSON array) must follow, as one JSON array (one row:
-- see _ROWS_PER_OP) of [id, state, run_id, whether children wait for it, webhook, and for a
-- job with a webhook: queue, key, attempt, error, error_type, result (JSON text), finished_at
-- (as text: JSON would round it to 15 digits)]
SELECT json_group_array(CASE WHEN webhook IS NULL THEN json_array(id, state, run_id, parent, NULL)
       ELSE json_array(id, state, run_id, parent, webhook, queue, key, attempt, error,
                       error_type, result, printf('%!.17g', finished_at)) END)
FROM (SELECT j.*, EXISTS (SELECT 1 FROM forebay_deps AS d WHERE d.parent_id = j.id) AS parent
      FROM forebay_jobs AS j WHERE j.id IN (SELECT value FROM json_each(:ids)) ORDER BY j.id)

-- name: take_children
-- the waiting children of the parents :ids, whose rows go (each parent finishes once)
DELETE FROM forebay_deps WHERE parent_id IN (SELECT value FROM json_each(:ids))
RETURNING parent_id, child_id

-- name: waiting_child
-- a child still waiting, and how many of its parents are unfinished
SELECT j.after_policy,
       (SELECT COUNT(*) FROM forebay_jobs AS p
        WHERE p.id IN (SELECT value FROM json_each(j.after_ids))
          AND p.state IN ('waiting', 'queued', 'running'))
FROM forebay_jobs AS j WHERE j.id = :id AND j.state = 'waiting'

-- name: release_child
UPDATE forebay_jobs SET state = 'queued', updated_at = :now
WHERE id = :id AND state = 'waiting'
RETURNING queue

-- name: fail_child
-- a waiting child whose parent ended dead or cancelled (after_policy 'completed')
UPDATE forebay_jobs
SET state = 'cancelled', finished_at = :now, updated_at = :now, error = :error,
    error_type = :error_type
WHERE id = :id AND state = 'waiting'

-- name: parents
-- the state of each of the jobs :ids (a JSON array) that exists
SELECT id, state FROM forebay_jobs WHERE id IN (SELECT value FROM json_each(:ids))

-- name: insert_deps
-- :deps is a JSON array of [parent id, child id]
INSERT INTO forebay_deps (parent_id, child_id)
SELECT json_extract(d.value, '$[0]'), json_extract(d.value, '$[1]') FROM json_each(:deps) AS d
WHERE true
ON CONFLICT DO NOTHING

-- name: job_run
-- the running job :id's run (the parent that lets a job join a sealed run)
SELECT run_id FROM forebay_jobs WHERE id = :id AND state = 'running'

-- name: run_state
SELECT state FROM forebay_runs WHERE id = :id

-- name: run_joined
-- :total jobs joined the run (those stored cancelled then finish as any job)
UPDATE forebay_runs SET total = total + :total WHERE id = :id

-- name: run_finished
-- jobs of a run finished; answers whether that was its last
UPDATE forebay_runs
SET completed = completed + :completed, dead = dead + :dead, cancelled = cancelled + :cancelled
WHERE id = :id
RETURNING state, total, completed + dead + cancelled

-- name: run_replayed
-- dead jobs of a run went back to queued
UPDATE forebay_runs SET dead = dead - :n WHERE id = :id

-- name: complete_run
-- a sealed run all of whose jobs finished; what its completion jobs say
UPDATE forebay_runs SET state = 'completed', completed_at = :now
WHERE id = :id AND state = 'sealed'
RETURNING id, name, key, meta, on_complete, webhook, total, completed, dead, cancelled,
          created_at, sealed_at, completed_at, tenant

-- name: insert_run
-- a new open run; nothing when a run has its key
INSERT INTO forebay_runs (id, name, key, meta, on_complete, webhook, tenant, created_at)
VALUES (:id, :name, :key, :meta, :on_complete, :webhook, :tenant, :now)
ON CONFLICT (key) WHERE key IS NOT NULL DO NOTHING

-- name: seal_run
UPDATE forebay_runs SET state = 'sealed', sealed_at = :now WHERE id = :id AND state = 'open'
RETURNING total, completed + dead + cancelled

-- name: get_run
SELECT {run_columns} FROM forebay_runs AS r WHERE r.id = :id

-- name: run_by_key
SELECT {run_columns} FROM forebay_runs AS r WHERE r.key = :key

-- name: list_runs
SELECT {run_columns} FROM forebay_runs AS r
WHERE (:state IS NULL OR r.state = :state) AND (:before_id IS NULL OR r.id < :before_id)
ORDER BY r.id DESC
LIMIT :limit

-- name: list_tenant_runs
-- list_runs narrowed to one tenant's runs (forebay_runs_tenant)
SELECT {run_columns} FROM forebay_runs AS r
WHERE r.tenant = :tenant AND r.tenant IS NOT NULL
  AND (:state IS NULL OR r.state = :state) AND (:before_id IS NULL OR r.id < :before_id)
ORDER BY r.id DESC
LIMIT :limit

-- name: tenant_depth
-- a tenant's unfinished jobs in every queue, counted up to :cap (forebay_jobs_tenant)
SELECT COUNT(*) FROM (
    SELECT 1 FROM forebay_jobs
    WHERE tenant = :tenant AND tenant IS NOT NULL AND state IN ('waiting', 'queued', 'running')
    LIMIT :cap
)

-- name: queue_flow
-- whether a queue is paused, and its flow limits (JSON text; NULL: none)
SELECT paused, limits FROM forebay_queues WHERE queue = :queue

-- name: limited_queues
-- the queues with flow limits, and their limits
SELECT queue, limits FROM forebay_queues WHERE limits IS NOT NULL ORDER BY queue

-- name: flow_buckets
-- a queue's rate buckets still in the future (a past one is the same as none): kind 'rate'
-- (the queue's, key '') or 'key' (a rate key's)
SELECT kind, key, value FROM forebay_flow
WHERE queue = :queue AND kind IN ('rate', 'key') AND value > :now

-- name: flow_queue_bucket
-- a queue's rate bucket, when still in the future
SELECT value FROM forebay_flow WHERE queue = :queue AND kind = 'rate' AND key = '' AND value > :now

-- name: flow_key_buckets
-- the buckets of the rate keys :keys (a JSON array) still in the future
SELECT key, value FROM forebay_flow
WHERE queue = :queue AND kind = 'key' AND key IN (SELECT value FROM json_each(:keys))
  AND value > :now

-- name: fair_markers
-- when the fair keys :keys (a JSON array; '' for no key) were last served
SELECT key, value FROM forebay_flow
WHERE queue = :queue AND kind = 'fair' AND key IN (SELECT value FROM json_each(:keys))

-- name: update_flow
-- one bucket or marker's new value (executemany: (value, queue, kind, key) each)
UPDATE forebay_flow SET value = ?1 WHERE queue = ?2 AND kind = ?3 AND key = ?4

-- name: save_flow
-- as update_flow, writing the rows not there yet
INSERT INTO forebay_flow (value, queue, kind, key) VALUES (?1, ?2, ?3, ?4)
ON CONFLICT (queue, kind, key) DO UPDATE SET value = excluded.value

-- name: prune_flow
-- rate buckets past (the same as none), and fair markers not served since :fair_before
DELETE FROM forebay_flow
WHERE (kind IN ('rate', 'key') AND value < :now) OR (kind = 'fair' AND value < :fair_before)

-- name: running
-- a queue's running jobs (forebay_jobs_queue_state)
SELECT COUNT(*) FROM forebay_jobs WHERE queue = :queue AND state = 'running'

-- name: running_per_key
-- a queue's running jobs per concurrency key (forebay_jobs_running_key)
SELECT concurrency_key, COUNT(*) FROM forebay_jobs
WHERE queue = :queue AND state = 'running' AND concurrency_key IS NOT NULL
GROUP BY concurrency_key

-- name: queued_priorities
-- the distinct priorities of a queue's queued jobs, highest first, by skip-scan
WITH RECURSIVE p(priority) AS (
    SELECT MAX(priority) FROM forebay_jobs WHERE queue = :queue AND state = 'queued'
    UNION ALL
    SELECT (SELECT MAX(priority) FROM forebay_jobs
            WHERE queue = :queue AND state = 'queued' AND priority < p.priority)
    FROM p WHERE p.priority IS NOT NULL
)
SELECT priority FROM p WHERE priority IS NOT NULL

-- name: fair_keys
-- the distinct fair keys of a queue's queued jobs (forebay_jobs_fair), by skip-scan; whether
-- jobs without one are queued comes apart (fair_none)
WITH RECURSIVE k(key) AS (
    SELECT MIN(fair_key) FROM forebay_jobs
    WHERE queue = :queue AND state = 'queued' AND fair_key IS NOT NULL
    UNION ALL
    SELECT (SELECT MIN(fair_key) FROM forebay_jobs
            WHERE queue = :queue AND state = 'queued' AND fair_key > k.key)
    FROM k WHERE k.key IS NOT NULL
)
SELECT key FROM k WHERE key IS NOT NULL

-- name: fair_none
-- whether a queue has queued jobs without a fair key (walks forebay_jobs_due, reading no row)
SELECT EXISTS (SELECT 1 FROM forebay_jobs INDEXED BY forebay_jobs_due
               WHERE queue = :queue AND state = 'queued' AND fair_key IS NULL)

-- name: flow_candidates
-- the best :n due queued jobs of a queue not of the rate keys :no_token nor the concurrency
-- keys :full (JSON arrays), as candidates of forebay.flow.plan
SELECT id, priority, run_at, rate_key, concurrency_key, fair_key FROM forebay_jobs
WHERE queue = :queue AND state = 'queued' AND run_at <= :now
  AND (rate_key IS NULL OR rate_key NOT IN (SELECT value FROM json_each(:no_token)))
  AND (concurrency_key IS NULL OR concurrency_key NOT IN (SELECT value FROM json_each(:full)))
ORDER BY priority DESC, run_at, id
LIMIT :n

-- name: flow_candidates_priority
-- as flow_candidates, of one priority
SELECT id, priority, run_at, rate_key, concurrency_key, fair_key FROM forebay_jobs
WHERE queue = :queue AND state = 'queued' AND priority = :priority AND run_at <= :now
  AND (rate_key IS NULL OR rate_key NOT IN (SELECT value FROM json_each(:no_token)))
  AND (concurrency_key IS NULL OR concurrency_key NOT IN (SELECT value FROM json_each(:full)))
ORDER BY run_at, id
LIMIT :n

-- name: flow_candidates_fair
-- as flow_candidates, of one fair key
SELECT id, priority, run_at, rate_key, concurrency_key, fair_key FROM forebay_jobs
WHERE queue = :queue AND state = 'queued' AND fair_key = :fair_key AND run_at <= :now
  AND (rate_key IS NULL OR rate_key NOT IN (SELECT value FROM json_each(:no_token)))
  AND (concurrency_key IS NULL OR concurrency_key NOT IN (SELECT value FROM json_each(:full)))
ORDER BY priority DESC, run_at, id
LIMIT :n

-- name: flow_candidates_fair_priority
-- as flow_candidates, of one fair key and one priority
SELECT id, priority, run_at, rate_key, concurrency_key, fair_key FROM forebay_jobs
WHERE queue = :queue AND state = 'queued' AND fair_key = :fair_key AND priority = :priority
  AND run_at <= :now
  AND (rate_key IS NULL OR rate_key NOT IN (SELECT value FROM json_each(:no_token)))
  AND (concurrency_key IS NULL OR concurrency_key NOT IN (SELECT value FROM json_each(:full)))
ORDER BY run_at, id
LIMIT :n

-- name: due_queued
-- a queue's due queued jobs (of :tenant's jobs, when not NULL), and those of them of the
-- rate keys :no_token or the concurrency keys :full (JSON arrays): what counts() calls
-- throttled
SELECT COUNT(*),
       COALESCE(SUM(rate_key IN (SELECT value FROM json_each(:no_token))
                    OR concurrency_key IN (SELECT value FROM json_each(:full))), 0)
FROM forebay_jobs
WHERE queue = :queue AND state = 'queued' AND run_at <= :now
  AND (:tenant IS NULL OR tenant = :tenant)

-- name: flow_candidates_unkeyed
-- as flow_candidates, of the jobs without a fair key (forebay_jobs_due: a job of another group
-- is passed over without reading its row)
SELECT id, priority, run_at, rate_key, concurrency_key, fair_key
FROM forebay_jobs INDEXED BY forebay_jobs_due
WHERE queue = :queue AND state = 'queued' AND fair_key IS NULL AND run_at <= :now
  AND (rate_key IS NULL OR rate_key NOT IN (SELECT value FROM json_each(:no_token)))
  AND (concurrency_key IS NULL OR concurrency_key NOT IN (SELECT value FROM json_each(:full)))
ORDER BY priority DESC, run_at, id
LIMIT :n

-- name: flow_candidates_unkeyed_priority
-- as flow_candidates_unkeyed, of one priority
SELECT id, priority, run_at, rate_key, concurrency_key, fair_key
FROM forebay_jobs INDEXED BY forebay_jobs_due
WHERE queue = :queue AND state = 'queued' AND fair_key IS NULL AND priority = :priority
  AND run_at <= :now
  AND (rate_key IS NULL OR rate_key NOT IN (SELECT value FROM json_each(:no_token)))
  AND (concurrency_key IS NULL OR concurrency_key NOT IN (SELECT value FROM json_each(:full)))
ORDER BY run_at, id
LIMIT :n

-- name: count_throughput
-- jobs of a queue that finished in a minute (queue, minute, completed, dead,
-- reclaimed), in the operation that finished them
INSERT INTO forebay_throughput (queue, minute, completed, dead, reclaimed)
VALUES (?1, ?2, ?3, ?4, ?5)
ON CONFLICT (queue, minute) DO UPDATE SET
    completed = completed + excluded.completed, dead = dead + excluded.dead,
    reclaimed = reclaimed + excluded.reclaimed

-- name: count_totals
-- as count_throughput, into the queue's totals (the minute, ?2, is not used)
INSERT INTO forebay_totals (queue, completed, dead, reclaimed) VALUES (?1, ?3, ?4, ?5)
ON CONFLICT (queue) DO UPDATE SET
    completed = completed + excluded.completed, dead = dead + excluded.dead,
    reclaimed = reclaimed + excluded.reclaimed

-- name: throughput
-- the minutes from :since on (of :queue, when not NULL), by queue and minute
SELECT queue, minute, completed, dead, reclaimed FROM forebay_throughput
WHERE minute >= :since AND (:queue IS NULL OR queue = :queue)
ORDER BY queue, minute

-- name: totals
SELECT queue, completed, dead, reclaimed FROM forebay_totals ORDER BY queue

-- name: prune_throughput
DELETE FROM forebay_throughput WHERE minute < :before

-- name: drop_expired_workers
-- the worker records that stopped holding before :before (forebay_workers_expires)
DELETE FROM forebay_workers WHERE expires_at < :before

-- name: save_worker
INSERT INTO forebay_workers (id, info, started_at, expires_at)
VALUES (:id, :info, :started_at, :expires_at)
ON CONFLICT (id) DO UPDATE SET
    info = excluded.info, started_at = excluded.started_at, expires_at = excluded.expires_at

-- name: remove_worker
DELETE FROM forebay_workers WHERE id = :id

-- name: list_workers
-- the records that still hold at :now
SELECT info FROM forebay_workers WHERE expires_at > :now ORDER BY started_at, id
