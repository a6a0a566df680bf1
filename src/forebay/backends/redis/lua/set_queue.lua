-- set_queue: store one queue's settings (operator controls, flow limits).
--
-- KEYS[1]  prefix
-- ARGV     queue, now, paused ('1', '0', or '' to keep), max_depth (a number, 'none' to
--          clear, or '' to keep), limits (FlowLimits.to_dict() as JSON, 'none' to clear, or
--          '' to keep)
-- Keys     P:q:Q:settings (HSET/HDEL), P:configured (SADD), P:q:Q:wake (XADD when resumed
--          or given limits: idle workers poll again)
-- Returns  the queue's settings: {paused, max_depth or false, updated_at, limits or false}

local queue, now, paused, depth, limits = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
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
if limits == 'none' then
  if redis.call('HDEL', k, 'limits') == 1 then wake(queue) end
elseif limits ~= '' then
  if redis.call('HGET', k, 'limits') ~= limits then
    redis.call('HSET', k, 'limits', limits)
    wake(queue)
  end
end
redis.call('HSET', k, 'updated_at', now)
redis.call('SADD', key_configured(), queue)
local f = redis.call('HMGET', k, 'paused', 'max_depth', 'updated_at', 'limits')
return {f[1] == '1' and 1 or 0, f[2] or false, f[3], f[4] or false}
