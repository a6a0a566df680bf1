-- replay: dead -> queued now, with attempt, deliveries and defers reset.
--
-- KEYS[1]  prefix
-- ARGV     now, JSON [id, ...] (chosen by the caller's filter; only dead ones are replayed)
-- Keys     P:job:N (HMGET/HSET/HDEL), P:done:dead (ZREM), P:q:Q:stream:R (XADD)
--          or P:q:Q:waiting:R or its lane (ZADD), P:tenant:T, P:q:Q:levels, P:q:Q:wake, P:q:Q:counts (HINCRBY), P:run:I (HINCRBY, for
--          a job of a run; a completed run stays completed)
-- Returns  how many jobs were replayed.

local now = ARGV[1]
local counter, replayed = new_counter(), {}
for _, id in ipairs(cjson.decode(ARGV[2])) do
  local k = key_job(id)
  local f = redis.call('HMGET', k, 'state', 'queue', 'priority', 'run_id', 'tenant', 'fair_key',
                       'rate_key', 'concurrency_key')
  if f[1] == 'dead' then
    redis.call('HSET', k, 'state', 'queued', 'run_at', now, 'updated_at', now, 'attempt', 0,
               'deliveries', 0, 'defers', 0)
    redis.call('HDEL', k, 'finished_at', 'progress', 'progress_message')
    local entry = place(id, f[2], f[3], now, now, false, lane_of(f[3], f[6], f[7], f[8]))
    if entry then redis.call('HSET', k, 'entry', entry) end
    counter:add(f[2], 'dead', -1, f[5])
    counter:add(f[2], 'queued', 1, f[5])
    run_move(f[4], 'dead', 'queued')  -- a completed run stays completed
    replayed[#replayed + 1] = id
  end
end
if #replayed > 0 then bulk('ZREM', key_done('dead'), replayed) end
counter:flush()
return #replayed
