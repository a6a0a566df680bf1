-- dead_letter: running -> dead, for jobs whose lease_token still matches.
--
-- KEYS[1]  prefix
-- ARGV     now, JSON [[id, lease_token, error, error_type, traceback or false], ...]
--          (the error is appended to the errors history)
-- Keys     P:job:N (HMGET/HSET/HDEL), P:leases (ZREM), P:done:dead + P:q:Q:done:dead (ZADD),
--          P:q:Q:stream:R (XACK + XDEL of the job's entry), P:q:Q:counts (HINCRBY),
--          and what a finish does (common.lua: runs, webhooks, children),
--          P:minute:M + P:totals (HINCRBY "<queue> dead"), P:minutes (ZADD M),
--          P:finished (PUBLISH of the ids dead-lettered)
-- Returns  the ids refused (not running under that token).

local now = ARGV[1]
local counter, dropper, done, tally = new_counter(), new_dropper(), new_done(), new_tally()

local refused = settle(function(id, job, row)
  redis.call('HSET', key_job(id), 'state', 'dead', 'error', row[3], 'error_type', row[4],
             'finished_at', now, 'updated_at', now)
  append_error(id, job.attempt, now, row[4], row[3], row[5])
  finish(id, job, 'dead', now, counter, dropper, done)
  tally:add(job.queue, 'dead')
end)

tally:flush(now)
done:flush('dead')
announce_finished(done.all)
dropper:flush()
counter:flush()
return refused
