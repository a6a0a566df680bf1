-- tidy: forget priority levels with nothing left (an empty stream, an empty waiting set, no
-- lane), so leasing does not walk levels no longer used. The default level 0 is kept: idle workers
-- always watch it. A stream created again later wakes them (see ensure_stream).
--
-- Rate buckets whose tat is past are the same as none: they are deleted too (a rate key
-- seen once does not stay forever).
--
-- KEYS[1]  prefix
-- ARGV     now
-- Keys     P:queues (SMEMBERS), P:q:Q:levels (ZRANGE/ZREM), P:q:Q:stream:R (XLEN/DEL),
--          P:q:Q:waiting:R + P:q:Q:heads:R (ZCARD), P:q:Q:buckets (HGETALL/HDEL)
-- Returns  how many levels were dropped.

local now = tonumber(ARGV[1])
local dropped = 0
for _, queue in ipairs(redis.call('SMEMBERS', key_queues())) do
  local buckets = key_buckets(queue)
  local flat = redis.call('HGETALL', buckets)
  local stale = {}
  for i = 1, #flat, 2 do
    if tonumber(flat[i + 1]) < now then stale[#stale + 1] = flat[i] end
  end
  if #stale > 0 then bulk('HDEL', buckets, stale) end
  local levels = key_levels(queue)
  for _, priority in ipairs(redis.call('ZRANGE', levels, 0, -1)) do
    local stream = key_stream(queue, priority)
    if priority ~= '0' and redis.call('ZCARD', key_waiting(queue, priority)) == 0
        and redis.call('ZCARD', key_heads(queue, priority)) == 0
        and redis.call('XLEN', stream) == 0 then
      redis.call('DEL', stream)
      redis.call('ZREM', levels, priority)
      dropped = dropped + 1
    end
  end
end
return dropped
