-- save_worker: store (or replace) a worker's record, and delete the records that expired before
-- `before` (now less a grace: see forebay.fleet.RECORD_GRACE_S), so workers killed without a
-- goodbye do not pile up.
--
-- KEYS[1]  prefix
-- ARGV     before, worker id, expires_at (its last_seen + ttl_s), its record (JSON text)
-- Keys     P:workers (HSET, HDEL), P:worker_deadlines (ZADD, ZRANGEBYSCORE score < before, ZREM)
-- Returns  how many expired records were deleted (at most 100 per call: the next save goes on).

local before, id, expires_at, record = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local workers, deadlines = key_workers(), key_worker_deadlines()
redis.call('HSET', workers, id, record)
redis.call('ZADD', deadlines, expires_at, id)
local expired = redis.call('ZRANGEBYSCORE', deadlines, '-inf', '(' .. before, 'LIMIT', 0, 100)
if #expired > 0 then
  redis.call('HDEL', workers, unpack(expired))
  redis.call('ZREM', deadlines, unpack(expired))
end
return #expired
