-- counts: per queue, the state counters, how many queued jobs are scheduled for later, and
-- the run_at of the oldest due job.
--
-- KEYS[1]  prefix
-- ARGV     now
-- Keys     P:queues (SMEMBERS), P:q:Q:counts (HGETALL), P:q:Q:levels; per level
--          P:q:Q:waiting:R (ZCOUNT run_at > now; first member) and P:q:Q:stream:R (first
--          entry not yet delivered: XINFO GROUPS + XRANGE)
-- Returns  {{queue, {field, value, ...}, scheduled, oldest due run_at or ''}, ...}

local now = ARGV[1]
local now_n = tonumber(now)

local function level_detail(queue, priority)
  local zkey = key_waiting(queue, priority)
  local scheduled = redis.call('ZCOUNT', zkey, '(' .. now, '+inf')
  local oldest = nil
  local first = redis.call('ZRANGE', zkey, 0, 0, 'WITHSCORES')
  if first[2] and tonumber(first[2]) <= now_n then oldest = first[2] end
  local stream = key_stream(queue, priority)
  if redis.call('EXISTS', stream) == 1 then
    local head = redis.call('XRANGE', stream, '(' .. last_delivered(stream), '+', 'COUNT', 1)
    if head[1] and head[1][2] then
      local at = head[1][2][4]
      if tonumber(at) <= now_n and (oldest == nil or tonumber(at) < tonumber(oldest)) then
        oldest = at
      end
    end
  end
  return scheduled, oldest
end

local out = {}
for _, queue in ipairs(redis.call('SMEMBERS', key_queues())) do
  local scheduled, oldest = 0, nil
  for _, priority in ipairs(redis.call('ZRANGE', key_levels(queue), 0, -1)) do
    local n, at = level_detail(queue, priority)
    scheduled = scheduled + n
    if at and (oldest == nil or tonumber(at) < tonumber(oldest)) then oldest = at end
  end
  out[#out + 1] = {queue, redis.call('HGETALL', key_counts(queue)), scheduled, oldest or ''}
end
return out
