-- counts: per queue, the state counters, how many queued jobs are scheduled for later, the
-- run_at of the oldest due job, and how many due jobs the flow limits hold back.
--
-- KEYS[1]  prefix
-- ARGV     now, tenant ('' for every job)
-- Keys     P:queues (SMEMBERS), P:q:Q:counts (HGETALL), P:q:Q:levels; per level
--          P:q:Q:waiting:R (ZCOUNT run_at > now; first member) and P:q:Q:stream:R (first
--          entry not yet delivered: XINFO GROUPS + XRANGE); P:q:Q:lanes and each lane
--          (ZCOUNT, first member); P:q:Q:settings (HGET limits), P:q:Q:buckets,
--          P:q:Q:running_keys; with a tenant, P:tenant:T (HGETALL) and the tenant field of
--          the due jobs held back in lanes (at most LANE_SCAN per queue)
-- Returns  {{queue, {field, value, ...}, scheduled, oldest due run_at or '', throttled}, ...}
--          With a tenant, the fields are the tenant's counts in that queue, and scheduled
--          and oldest are not narrowed (0 and '').
--
-- throttled (forebay.flow): every due queued job while the queue's rate has no token or its
-- running jobs are at its cap; else the due jobs of the lanes whose rate key has no token or
-- whose concurrency key is at its cap. 0 without limits.

local now = ARGV[1]
local now_n = tonumber(now)
local tenant = ARGV[2] ~= '' and ARGV[2] or nil
local LANE_SCAN = 10000

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

local function lane_detail(queue, lane)
  local zkey = key_lane(queue, lane)
  local scheduled = redis.call('ZCOUNT', zkey, '(' .. now, '+inf')
  local first = redis.call('ZRANGE', zkey, 0, 0, 'WITHSCORES')
  if first[2] and tonumber(first[2]) <= now_n then return scheduled, first[2] end
  return scheduled, nil
end

-- The tenant's due jobs in a lane (a bounded scan: the tenant is not part of the lane).
local function tenant_due(zkey)
  local n = 0
  for _, member in ipairs(redis.call('ZRANGEBYSCORE', zkey, '-inf', now, 'LIMIT', 0, LANE_SCAN)) do
    if redis.call('HGET', key_job(unzid(member)), 'tenant') == tenant then n = n + 1 end
  end
  return n
end

-- The tenant's jobs due later in a waiting set or a lane (bounded as tenant_due).
local function tenant_later(zkey)
  local n = 0
  for _, member in ipairs(redis.call('ZRANGEBYSCORE', zkey, '(' .. now, '+inf', 'LIMIT', 0,
                                     LANE_SCAN)) do
    if redis.call('HGET', key_job(unzid(member)), 'tenant') == tenant then n = n + 1 end
  end
  return n
end

-- The tenant's counts per queue, as {queue = {field, value, ...}}.
local tenant_counts = {}
if tenant then
  local flat = redis.call('HGETALL', key_tenant(tenant))
  for i = 1, #flat, 2 do
    local queue, field = string.match(flat[i], '^(.*) (%a+)$')
    tenant_counts[queue] = tenant_counts[queue] or {}
    table.insert(tenant_counts[queue], field)
    table.insert(tenant_counts[queue], flat[i + 1])
  end
end

local out = {}
for _, queue in ipairs(redis.call('SMEMBERS', key_queues())) do
  local scheduled, oldest = 0, nil
  for _, priority in ipairs(redis.call('ZRANGE', key_levels(queue), 0, -1)) do
    local n, at = level_detail(queue, priority)
    scheduled = scheduled + n
    if at and (oldest == nil or tonumber(at) < tonumber(oldest)) then oldest = at end
  end
  local lanes = redis.call('SMEMBERS', key_lanes(queue))
  for _, lane in ipairs(lanes) do
    local n, at = lane_detail(queue, lane)
    scheduled = scheduled + n
    if at and (oldest == nil or tonumber(at) < tonumber(oldest)) then oldest = at end
  end
  local counts = redis.call('HGETALL', key_counts(queue))
  local throttled = 0
  local mine_later = 0  -- the tenant's scheduled jobs of the queue
  if tenant and tenant_counts[queue] then
    for _, priority in ipairs(redis.call('ZRANGE', key_levels(queue), 0, -1)) do
      mine_later = mine_later + tenant_later(key_waiting(queue, priority))
    end
    for _, lane in ipairs(lanes) do mine_later = mine_later + tenant_later(key_lane(queue, lane)) end
  end
  local limits = flow_limits(redis.call('HGET', key_settings(queue), 'limits'))
  if limits then
    local state = flow_reader(queue, now_n)
    local room = flow_budget(queue, limits, state, 1, now_n)
    if room <= 0 then
      if tenant then
        local mine = tenant_counts[queue] or {}
        for i = 1, #mine, 2 do
          if mine[i] == 'queued' then throttled = num(mine[i + 1]) - mine_later end
        end
      else
        for i = 1, #counts, 2 do
          if counts[i] == 'queued' then throttled = num(counts[i + 1]) - scheduled end
        end
      end
    else
      for _, lane in ipairs(lanes) do
        local _, _, rate_key, concurrency_key = lane_parts(lane)
        if lane_blocked(limits, state, rate_key, concurrency_key, now_n) then
          if tenant then
            throttled = throttled + tenant_due(key_lane(queue, lane))
          else
            throttled = throttled + redis.call('ZCOUNT', key_lane(queue, lane), '-inf', now)
          end
        end
      end
    end
  end
  if tenant then
    out[#out + 1] = {queue, tenant_counts[queue] or {}, mine_later, '', throttled}
  else
    out[#out + 1] = {queue, counts, scheduled, oldest or '', throttled}
  end
end
return out
