-- workers: the records of the workers whose record still holds at now, read at one instant.
--
-- KEYS[1]  prefix
-- ARGV     now
-- Keys     P:worker_deadlines (ZRANGEBYSCORE score > now), P:workers (HMGET)
-- Returns  their records (JSON texts), in no particular order.

local ids = redis.call('ZRANGEBYSCORE', key_worker_deadlines(), '(' .. ARGV[1], '+inf')
local records = {}
for i = 1, #ids, 1000 do
  local stored = redis.call('HMGET', key_workers(), unpack(ids, i, math.min(i + 999, #ids)))
  for _, record in ipairs(stored) do
    if record then records[#records + 1] = record end
  end
end
return records
