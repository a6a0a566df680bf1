-- reclaim: running jobs whose lease expired -> queued, giving back the attempt (not the
-- delivery: crashes are counted apart from errors).
--
-- The deadline is the job's own (P:leases, moved by every heartbeat), never the stream's idle
-- time: a long job that heartbeats is not delivered twice, a crashed worker's job comes back
-- once its lease is over. Idle workers are not woken: every worker's reclaimer runs this each
-- second, and the jobs are found by their next poll (within a second), not in a wake-up storm.
--
-- KEYS[1]  prefix
-- ARGV     now, max (jobs handled per call; the caller repeats while max were found)
-- Keys     P:leases (ZRANGEBYSCORE deadline < now, ZREM), P:job:N (HMGET/HSET/HDEL),
--          P:q:Q:stream:R (XACK + XDEL of the job's entry), P:q:Q:waiting:R (ZADD at its
--          unchanged run_at: it keeps its place; a job with flow keys: its lane), P:q:Q:levels,
--          P:q:Q:wake, P:q:Q:running_keys, P:tenant:T,
--          P:q:Q:counts (HINCRBY), P:run:I (HINCRBY, for a job of a run),
--          P:minute:M + P:totals (HINCRBY "<queue> reclaimed", M the minute of now),
--          P:minutes (ZADD M)
-- Returns  {expired leases found, jobs requeued}

local now, max = ARGV[1], tonumber(ARGV[2])
local counter, dropper, tally = new_counter(), new_dropper(), new_tally()
local expired = redis.call('ZRANGEBYSCORE', key_leases(), '-inf', '(' .. now, 'LIMIT', 0, max)
local requeued = 0
for _, id in ipairs(expired) do
  local k = key_job(id)
  local f = redis.call('HMGET', k, 'state', 'queue', 'priority', 'entry', 'attempt', 'run_at',
                       'run_id', 'tenant', 'fair_key', 'rate_key', 'concurrency_key')
  if f[1] == 'running' then
    local attempt = math.max(num(f[5]) - 1, 0)
    redis.call('HSET', k, 'state', 'queued', 'attempt', attempt, 'updated_at', now,
               'error', 'lease expired: the worker stopped heartbeating (crashed or was killed)',
               'error_type', 'LeaseExpired')
    append_error(id, f[5], now, 'LeaseExpired',
                 'lease expired: the worker stopped heartbeating (crashed or was killed)', false)
    put_back(id, {queue = f[2], priority = f[3], entry = f[4], run_id = f[7], fair_key = f[9],
                  rate_key = f[10], concurrency_key = f[11]}, f[6], now, dropper, true)
    counter:add(f[2], 'running', -1, f[8])
    counter:add(f[2], 'queued', 1, f[8])
    if attempt > 0 then counter:add(f[2], 'retrying', 1, f[8]) end
    tally:add(f[2], 'reclaimed')
    requeued = requeued + 1
  end
end
if #expired > 0 then bulk('ZREM', key_leases(), expired) end
dropper:flush()
counter:flush()
tally:flush(now)
return {#expired, requeued}
