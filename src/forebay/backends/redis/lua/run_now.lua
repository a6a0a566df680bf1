-- run_now: queued jobs due later (scheduled, in retry backoff) -> due now.
--
-- KEYS[1]  prefix
-- ARGV     now, JSON [id, ...]
-- Keys     P:job:N (HMGET/HSET), P:q:Q:waiting:R (ZADD XX: the new score) or P:q:Q:lane:L and P:q:Q:heads:R, P:q:Q:wake (XADD:
--          idle workers poll again)
-- Returns  the ids that are queued (and now due).

local now = ARGV[1]
local out = {}
for _, id in ipairs(cjson.decode(ARGV[2])) do
  local k = key_job(id)
  local f = redis.call('HMGET', k, 'state', 'queue', 'priority', 'run_at', 'entry', 'fair_key',
                       'rate_key', 'concurrency_key')
  if f[1] == 'queued' then
    if not f[5] and tonumber(f[4]) > tonumber(now) then
      -- in the waiting set (or its lane): due now, ordered by its new run_at
      local lane = lane_of(f[3], f[6], f[7], f[8])
      if lane then
        lane_put(f[2], lane, now, zid(id))
      else
        redis.call('ZADD', key_waiting(f[2], f[3]), 'XX', now, zid(id))
      end
      redis.call('HSET', k, 'run_at', now, 'updated_at', now)
      wake(f[2])
    end
    out[#out + 1] = id
  end
end
return out
