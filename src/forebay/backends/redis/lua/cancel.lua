-- cancel: waiting, queued or running -> cancelled. A running job's lease is revoked: its worker's
-- heartbeat and outcome are refused (no lease_token any more).
--
-- KEYS[1]  prefix
-- ARGV     now, JSON [id, ...]
-- Keys     P:job:N (HMGET/HSET/HDEL), P:q:Q:waiting:R or P:q:Q:lane:L (ZREM), P:q:Q:stream:R (XACK + XDEL
--          of the job's entry), P:leases (ZREM), P:done:cancelled + P:q:Q:done:cancelled (ZADD),
--          P:q:Q:counts (HINCRBY), P:finished (PUBLISH of the ids cancelled), P:waiting_jobs
--          (ZREM), P:q:Q:running_keys, P:tenant:T, and what a finish does (common.lua: runs, webhooks, children)
-- Returns  the ids cancelled.

local now = ARGV[1]
local counter, dropper, done, out, ended = new_counter(), new_dropper(), new_done(), {}, {}
local waiting = {}
for _, id in ipairs(cjson.decode(ARGV[2])) do
  local k = key_job(id)
  local f = redis.call('HMGET', k, 'state', 'queue', 'priority', 'entry', 'attempt', 'run_id',
                       'webhook', 'children', 'tenant', 'fair_key', 'rate_key',
                       'concurrency_key')
  if f[1] == 'queued' or f[1] == 'running' or f[1] == 'waiting' then
    redis.call('HSET', k, 'state', 'cancelled', 'finished_at', now, 'updated_at', now)
    redis.call('HDEL', k, 'entry', 'lease_token', 'lease_expires_at')
    if f[1] == 'waiting' then
      redis.call('HDEL', k, 'parents_left')
      waiting[#waiting + 1] = id
    elseif f[1] == 'queued' and lane_of(f[3], f[10], f[11], f[12]) then
      leave_lane(f[2], lane_of(f[3], f[10], f[11], f[12]), {zid(id)})
    else
      redis.call('ZREM', key_waiting(f[2], f[3]), zid(id))
      dropper:add(f[2], f[3], f[4])
    end
    done:add(f[2], now, id)
    counter:add(f[2], f[1], -1, f[9])
    counter:add(f[2], 'cancelled', 1, f[9])
    if f[1] == 'running' then
      ended[#ended + 1] = id
      leave_running(f[2], f[12])
      freed_slot(f[2])
    elseif f[1] == 'queued' and num(f[5]) > 0 then
      counter:add(f[2], 'retrying', -1, f[9])
    end
    out[#out + 1] = id
    if f[6] or f[7] or f[8] then
      after_finish(id, f[1], 'cancelled', now, {run_id = f[6], webhook = f[7], children = f[8]})
    end
  end
end
done:flush('cancelled')
if #ended > 0 then bulk('ZREM', key_leases(), ended) end
if #waiting > 0 then bulk('ZREM', key_waiting_jobs(), waiting) end
announce_finished(done.all)
dropper:flush()
counter:flush()
return out
