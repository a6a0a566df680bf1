-- progress: record progress on a running job whose lease_token matches.
--
-- KEYS[1]  prefix
-- ARGV     now, id, lease_token, pct, JSON message (a string, or false for none)
-- Keys     P:job:N (HMGET/HSET/HDEL)
-- Returns  1 if recorded, 0 if the lease is not held.

local now, id, token, pct, message = ARGV[1], ARGV[2], ARGV[3], ARGV[4], cjson.decode(ARGV[5])
local k = key_job(id)
local f = redis.call('HMGET', k, 'state', 'lease_token')
if f[1] ~= 'running' or f[2] ~= token then return 0 end
redis.call('HSET', k, 'progress', pct, 'updated_at', now)
if message then
  redis.call('HSET', k, 'progress_message', message)
else
  redis.call('HDEL', k, 'progress_message')
end
return 1
