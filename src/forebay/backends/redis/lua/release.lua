-- release: running -> queued now, giving back the attempt and the delivery (graceful shutdown).
--
-- KEYS[1]  prefix
-- ARGV     now, JSON [[id, lease_token], ...]
-- Keys     P:job:N (HMGET/HSET/HDEL), P:leases (ZREM), P:q:Q:stream:R (XACK + XDEL of the
--          job's entry), P:q:Q:waiting:R or its lane (ZADD at its unchanged run_at: it keeps its place),
--          P:q:Q:levels, P:q:Q:wake, P:q:Q:counts (HINCRBY), P:run:I
--          (HINCRBY, for a job of a run), P:q:Q:running_keys, P:tenant:T
-- Returns  the ids refused (not running under that token).

local now = ARGV[1]
local counter, dropper = new_counter(), new_dropper()

local refused = settle(function(id, job)
  local k = key_job(id)
  redis.call('HSET', k, 'state', 'queued', 'updated_at', now, 'attempt', job.attempt - 1,
             'deliveries', job.deliveries - 1)
  put_back(id, job, redis.call('HGET', k, 'run_at'), now, dropper)
  counter:add(job.queue, 'running', -1, job.tenant)
  counter:add(job.queue, 'queued', 1, job.tenant)
  if job.attempt - 1 > 0 then counter:add(job.queue, 'retrying', 1, job.tenant) end
end)

dropper:flush()
counter:flush()
return refused
