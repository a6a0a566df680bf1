-- tidy: forget priority levels with nothing left (an empty stream, an empty waiting set), so
-- leasing does not walk levels no longer used. The default level 0 is kept: idle workers
-- always watch it. A stream created again later wakes them (see ensure_stream).
--
-- KEYS[1]  prefix
-- ARGV     (none)
-- Keys     P:queues (SMEMBERS), P:q:Q:levels (ZRANGE/ZREM), P:q:Q:stream:R (XLEN/DEL),
--          P:q:Q:waiting:R (ZCARD)
-- Returns  how many levels were dropped.

local dropped = 0
for _, queue in ipairs(redis.call('SMEMBERS', key_queues())) do
  local levels = key_levels(queue)
  for _, priority in ipairs(redis.call('ZRANGE', levels, 0, -1)) do
    local stream = key_stream(queue, priority)
    if priority ~= '0' and redis.call('ZCARD', key_waiting(queue, priority)) == 0
        and redis.call('XLEN', stream) == 0 then
      redis.call('DEL', stream)
      redis.call('ZREM', levels, priority)
      dropped = dropped + 1
    end
  end
end
return dropped
