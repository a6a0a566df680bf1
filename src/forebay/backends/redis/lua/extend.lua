-- extend: push the lease expiry of running jobs whose lease_token matches (heartbeat).
--
-- KEYS[1]  prefix
-- ARGV     now, lease_expires_at, JSON [[id, lease_token], ...]
-- Keys     P:job:N (HMGET/HSET), P:leases (ZADD: the new deadline)
-- Returns  the ids refused (not running under that token).

local now, expires = ARGV[1], ARGV[2]
local refused, leases = {}, {}
for _, row in ipairs(cjson.decode(ARGV[3])) do
  local id = row[1]
  local f = redis.call('HMGET', key_job(id), 'state', 'lease_token')
  if f[1] == 'running' and f[2] == row[2] then
    redis.call('HSET', key_job(id), 'lease_expires_at', expires, 'updated_at', now)
    leases[#leases + 1] = expires
    leases[#leases + 1] = id
  else
    refused[#refused + 1] = id
  end
end
if #leases > 0 then bulk('ZADD', key_leases(), leases) end
return refused
