-- prune_minutes: delete the finished-job counts of the minutes that start before a cut-off
-- (the totals stay: they are kept for ever).
--
-- KEYS[1]  prefix
-- ARGV     before (epoch seconds), max (minutes handled per call; the caller repeats while max
--          were found)
-- Keys     P:minutes (ZRANGEBYSCORE score < before, ZREM), P:minute:M (DEL)
-- Returns  how many minutes were deleted.

local minutes = key_minutes()
local old = redis.call('ZRANGEBYSCORE', minutes, '-inf', '(' .. ARGV[1], 'LIMIT', 0,
                       tonumber(ARGV[2]))
for _, minute in ipairs(old) do redis.call('DEL', key_minute(minute)) end
if #old > 0 then bulk('ZREM', minutes, old) end
return #old
