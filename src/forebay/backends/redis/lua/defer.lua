-- defer: running -> queued at run_at, giving back the attempt and the delivery (defers + 1).
--
-- KEYS[1]  prefix
-- ARGV     now, JSON [[id, lease_token, run_at, reason], ...]
-- Keys     P:job:N (HMGET/HSET/HDEL), P:leases (ZREM), P:q:Q:stream:R (XACK + XDEL of the
--          job's entry), P:q:Q:waiting:R or its lane (ZADD at run_at) or the stream (XADD, when due and
--          in order), P:q:Q:levels, P:q:Q:wake, P:q:Q:counts (HINCRBY), P:run:I
--          (HINCRBY, for a job of a run), P:q:Q:running_keys, P:tenant:T
-- Returns  the ids refused (not running under that token).

local now = ARGV[1]
local counter, dropper = new_counter(), new_dropper()

local refused = settle(function(id, job, row)
  redis.call('HSET', key_job(id), 'state', 'queued', 'run_at', row[3],
             'progress_message', row[4], 'updated_at', now, 'attempt', job.attempt - 1,
             'deliveries', job.deliveries - 1, 'defers', job.defers + 1)
  put_back(id, job, row[3], now, dropper)
  counter:add(job.queue, 'running', -1, job.tenant)
  counter:add(job.queue, 'queued', 1, job.tenant)
  if job.attempt - 1 > 0 then counter:add(job.queue, 'retrying', 1, job.tenant) end
end)

dropper:flush()
counter:flush()
return refused
