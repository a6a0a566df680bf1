-- prune_runs: delete completed runs past their retention (open and sealed runs are never
-- pruned). Their jobs keep the run's id, and are pruned by their own retention.
--
-- KEYS[1]  prefix
-- ARGV     completed_before, limit
-- Keys     P:runs:completed (ZRANGEBYSCORE completed_at < cut-off, ZREM), P:run:I (HGET/DEL),
--          P:run_keys (HGET/HDEL), P:runs (ZREM)
-- Returns  how many runs were deleted.

local ids = redis.call('ZRANGEBYSCORE', key_runs_completed(), '-inf', '(' .. ARGV[1], 'LIMIT', 0,
                       tonumber(ARGV[2]))
for _, id in ipairs(ids) do
  local k = key_run(id)
  local key = redis.call('HGET', k, 'key')
  if key and redis.call('HGET', key_run_keys(), key) == id then
    redis.call('HDEL', key_run_keys(), key)
  end
  redis.call('DEL', k)
end
if #ids > 0 then
  bulk('ZREM', key_runs(), ids)
  bulk('ZREM', key_runs_completed(), ids)
end
return #ids
