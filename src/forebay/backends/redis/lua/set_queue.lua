-- set_queue: store one queue's settings (operator controls).
--
-- KEYS[1]  prefix
-- ARGV     queue, now, paused ('1', '0', or '' to keep), max_depth (a number, 'none' to
--          clear, or '' to keep)
-- Keys     P:q:Q:settings (HSET/HDEL), P:configured (SADD), P:q:Q:wake (XADD when resumed:
--          idle workers poll again)
-- Returns  the queue's settings: {paused, max_depth or false, updated_at}

local queue, now, paused, depth = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local k = key_settings(queue)
if paused == '1' then
  redis.call('HSET', k, 'paused', '1')
elseif paused == '0' then
  redis.call('HDEL', k, 'paused')
  wake(queue)
end
if depth == 'none' then
  redis.call('HDEL', k, 'max_depth')
elseif depth ~= '' then
  redis.call('HSET', k, 'max_depth', depth)
end
redis.call('HSET', k, 'updated_at', now)
redis.call('SADD', key_configured(), queue)
local f = redis.call('HMGET', k, 'paused', 'max_depth', 'updated_at')
return {f[1] == '1' and 1 or 0, f[2] or false, f[3]}
