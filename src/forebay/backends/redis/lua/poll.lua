-- poll: is a job due on these queues? If not, what to block on until one may be.
--
-- KEYS[1]  prefix
-- ARGV     now, then queue names
-- Keys     P:q:Q:settings (HMGET paused, limits), P:q:Q:levels, P:q:Q:lanes and each lane
--          (first member), the flow state (P:q:Q:buckets, P:q:Q:running_keys, counts); per level P:q:Q:waiting:R (first member) and P:q:Q:stream:R
--          (entries not yet delivered: XINFO GROUPS + XRANGE); P:q:Q:wake (last entry)
-- Returns  {1} when a job is due now; else {0, earliest scheduled run_at or '', stream, id,
--          stream, id, ...}: an XREAD BLOCK from those ids returns as soon as an entry is
--          appended to one of the streams or the wake stream moves.
--
-- Flow limits: a queue whose rate has no token or whose running jobs are at its cap has
-- nothing due (its rate's next token counts as the earliest time; only its wake stream is
-- watched, and a worker polls again within a second); nor has a lane whose key is blocked.

local now = ARGV[1]
local now_n = tonumber(now)
local watch, earliest = {}, nil

for a = 2, #ARGV do
  local queue = ARGV[a]
  -- a paused queue has nothing due: only its wake stream is watched (resuming moves it)
  local settings = redis.call('HMGET', key_settings(queue), 'paused', 'limits')
  local limits, state, open = flow_limits(settings[2]), nil, settings[1] ~= '1'
  if open and limits then
    state = flow_reader(queue, now_n)
    local room, wait = flow_budget(queue, limits, state, 1, now_n)
    if room <= 0 then
      open = false
      if wait and (earliest == nil or wait < tonumber(earliest)) then earliest = time_text(wait) end
    end
  end
  if open then
    for _, lane in ipairs(redis.call('SMEMBERS', key_lanes(queue))) do
      local first = redis.call('ZRANGE', key_lane(queue, lane), 0, 0, 'WITHSCORES')
      if first[2] then
        local at = tonumber(first[2])
        local blocked, free_at = nil, nil
        if limits then
          local _, _, rate_key, concurrency_key = lane_parts(lane)
          blocked, free_at = lane_blocked(limits, state, rate_key, concurrency_key, now_n)
        end
        if blocked == 'rate' then at = math.max(at, free_at) end
        if blocked ~= 'cap' then
          if at <= now_n then return {1} end
          if earliest == nil or at < tonumber(earliest) then earliest = time_text(at) end
        end
      end
    end
    local levels = redis.call('ZRANGE', key_levels(queue), 0, -1)
    levels[#levels + 1] = '0'  -- the default level is always watched, even before it exists
    local watched = {}
    for _, priority in ipairs(levels) do
      local stream = key_stream(queue, priority)
      if not watched[stream] then
        watched[stream] = true
        local first = redis.call('ZRANGE', key_waiting(queue, priority), 0, 0, 'WITHSCORES')
        if first[2] then
          if tonumber(first[2]) <= now_n then return {1} end
          if earliest == nil or tonumber(first[2]) < tonumber(earliest) then
            earliest = first[2]
          end
        end
        local from = '0-0'
        if redis.call('EXISTS', stream) == 1 then
          from = last_delivered(stream)
          if #redis.call('XRANGE', stream, '(' .. from, '+', 'COUNT', 1) > 0 then return {1} end
        end
        watch[#watch + 1] = stream
        watch[#watch + 1] = from
      end
    end
  end
  local last = redis.call('XREVRANGE', key_wake(queue), '+', '-', 'COUNT', 1)
  watch[#watch + 1] = key_wake(queue)
  watch[#watch + 1] = last[1] and last[1][1] or '0-0'
end
return {0, earliest or '', unpack(watch)}
