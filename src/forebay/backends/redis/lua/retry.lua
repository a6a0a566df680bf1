-- retry: running -> queued at run_at (the attempt stays spent), for jobs whose token matches.
--
-- KEYS[1]  prefix
-- ARGV     now, JSON [[id, lease_token, run_at, error, error_type, traceback or false], ...]
--          (the error is appended to the errors history)
-- Keys     P:job:N (HMGET/HSET/HDEL), P:leases (ZREM), P:q:Q:stream:R (XACK + XDEL of the
--          job's entry), P:q:Q:waiting:R or its lane (ZADD at run_at) or the stream (XADD, when due and
--          in order), P:q:Q:levels, P:q:Q:wake, P:q:Q:counts (HINCRBY), P:run:I
--          (HINCRBY, for a job of a run), P:q:Q:running_keys, P:tenant:T
-- Returns  the ids refused (not running under that token).

local now = ARGV[1]
local counter, dropper = new_counter(), new_dropper()

local refused = settle(function(id, job, row)
  redis.call('HSET', key_job(id), 'state', 'queued', 'run_at', row[3], 'error', row[4],
             'error_type', row[5], 'updated_at', now)
  append_error(id, job.attempt, now, row[5], row[4], row[6])
  put_back(id, job, row[3], now, dropper)
  counter:add(job.queue, 'running', -1, job.tenant)
  counter:add(job.queue, 'queued', 1, job.tenant)
  if job.attempt > 0 then counter:add(job.queue, 'retrying', 1, job.tenant) end
end)

dropper:flush()
counter:flush()
return refused
