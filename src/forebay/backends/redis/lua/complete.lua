-- complete: running -> completed, for jobs whose lease_token still matches.
--
-- KEYS[1]  prefix
-- ARGV     now, JSON [[id, lease_token] or [id, lease_token, result JSON text], ...]
--          (the last error goes: the errors history keeps it)
-- Keys     P:job:N (HMGET/HSET/HDEL), P:leases (ZREM), P:done:completed + P:q:Q:done:completed
--          (ZADD),
--          P:q:Q:stream:R (XACK + XDEL of the job's entry), P:q:Q:counts (HINCRBY),
--          and what a finish does (common.lua: runs, webhooks, children),
--          P:minute:M + P:totals (HINCRBY "<queue> completed"), P:minutes (ZADD M),
--          P:finished (PUBLISH of the ids completed)
-- Returns  the ids refused (not running under that token).

local now = ARGV[1]
local counter, dropper, done, tally = new_counter(), new_dropper(), new_done(), new_tally()

local refused = settle(function(id, job, row)
  local k = key_job(id)
  if row[3] then
    redis.call('HSET', k, 'state', 'completed', 'finished_at', now, 'updated_at', now,
               'progress', '100', 'result', row[3])
  else
    redis.call('HSET', k, 'state', 'completed', 'finished_at', now, 'updated_at', now,
               'progress', '100')
  end
  if job.failed then redis.call('HDEL', k, 'error', 'error_type') end
  finish(id, job, 'completed', now, counter, dropper, done)
  tally:add(job.queue, 'completed')
end)

tally:flush(now)
done:flush('completed')
announce_finished(done.all)
dropper:flush()
counter:flush()
return refused
