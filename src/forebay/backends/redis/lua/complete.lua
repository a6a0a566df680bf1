-- complete: running -> completed, for jobs whose lease_token still matches.
--
-- KEYS[1]  prefix
-- ARGV     now, JSON [[id, lease_token], ...]
-- Keys     P:job:N (HMGET/HSET/HDEL), P:leases (ZREM), P:done:completed + P:q:Q:done:completed (ZADD),
--          P:q:Q:stream:R (XACK + XDEL of the job's entry), P:q:Q:counts (HINCRBY)
-- Returns  the ids refused (not running under that token).

local now = ARGV[1]
local counter, dropper, done = new_counter(), new_dropper(), new_done()

local refused = settle(function(id, job)
  redis.call('HSET', key_job(id), 'state', 'completed', 'finished_at', now, 'updated_at', now,
             'progress', '100')
  finish(id, job, 'completed', now, counter, dropper, done)
end)

done:flush('completed')
dropper:flush()
counter:flush()
return refused
