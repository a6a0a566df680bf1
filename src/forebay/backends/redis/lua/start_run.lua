-- start_run: store an open run with no jobs, or find the stored run of its key.
--
-- KEYS[1]  prefix
-- ARGV     now, JSON [id, name, key, meta JSON text, on_complete, webhook, tenant] (false
--          for none)
-- Keys     P:run_keys (HGET/HSET), P:run:I (HSET/HGETALL), P:runs (ZADD)
-- Returns  {1 (stored) or 0 (found by its key), id, {field, value, ...}}

local now = ARGV[1]
local run = cjson.decode(ARGV[2])
local id, key = run[1], run[3]
if key then
  local existing = redis.call('HGET', key_run_keys(), key)
  if existing and redis.call('EXISTS', key_run(existing)) == 1 then
    return {0, existing, redis.call('HGETALL', key_run(existing))}
  end
end
local fields = {'state', 'open', 'meta', run[4], 'created_at', now, 'total', 0, 'waiting', 0,
                'queued', 0, 'running', 0, 'completed', 0, 'dead', 0, 'cancelled', 0}
local optional = {name = run[2], key = key, on_complete = run[5], webhook = run[6],
                  tenant = run[7]}
for name, value in pairs(optional) do
  if value then
    fields[#fields + 1] = name
    fields[#fields + 1] = value
  end
end
redis.call('HSET', key_run(id), unpack(fields))
redis.call('ZADD', key_runs(), 0, id)
if key then redis.call('HSET', key_run_keys(), key, id) end
return {1, id, redis.call('HGETALL', key_run(id))}
