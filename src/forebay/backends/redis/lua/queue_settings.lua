-- queue_settings: every queue with stored settings.
--
-- KEYS[1]  prefix
-- Keys     P:configured (SMEMBERS), P:q:Q:settings (HMGET)
-- Returns  {{queue, paused (1/0), max_depth or false, updated_at, limits JSON or false}, ...}

local out = {}
for _, queue in ipairs(redis.call('SMEMBERS', key_configured())) do
  local f = redis.call('HMGET', key_settings(queue), 'paused', 'max_depth', 'updated_at',
                       'limits')
  out[#out + 1] = {queue, f[1] == '1' and 1 or 0, f[2] or false, f[3] or '0', f[4] or false}
end
return out
