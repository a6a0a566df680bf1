-- lease: queued -> running for up to LIMIT due jobs of one queue, best first.
--
-- KEYS[1]  prefix
-- ARGV     queue, limit, worker_id, lease_token, now, lease_expires_at
-- Keys     P:q:Q:settings (HGET paused: nothing is leased), P:q:Q:levels (ZREVRANGE: priorities high to low); per level P:q:Q:waiting:R (due
--          members: ZRANGEBYSCORE, ZREM) and P:q:Q:stream:R (XINFO GROUPS + XRANGE to peek
--          at the entries' run_at, XREADGROUP '>' as consumer leased to take);
--          P:job:N (HGETALL/HSET/HDEL), P:leases (ZADD), P:q:Q:counts (HINCRBY), P:run:I
--          (HINCRBY, for a job of a run)
-- Returns  JSON [[id, fields], ...]: the leased jobs.
--
-- Order: higher priority first; within a priority, earlier run_at, then lower id. A stream's
-- undelivered entries are already in that order, and so is the waiting set: the two are
-- merged. When nothing waits in the set (the usual case) a level is a plain XREADGROUP.

local queue, limit, worker, token = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4]
local now, expires = ARGV[5], ARGV[6]
local counter, stale = new_counter(), new_dropper()
local out, leases = {}, {}

-- queued -> running; entry is the job's stream entry, or nil when it came from a waiting set.
local function take(id, priority, entry)
  local k = key_job(id)
  local f = job_fields(id)
  if f.state ~= 'queued' then
    stale:add(queue, priority, entry)  -- defensive: transitions remove what they leave
    return
  end
  local attempt, deliveries = num(f.attempt), num(f.deliveries)
  if attempt > 0 then counter:add(queue, 'retrying', -1) end
  if f.run_id then run_move(f.run_id, 'queued', 'running') end
  redis.call('HSET', k, 'state', 'running', 'lease_token', token, 'lease_expires_at', expires,
             'worker_id', worker, 'updated_at', now, 'started_at', now, 'attempt', attempt + 1,
             'deliveries', deliveries + 1)
  if f.progress or f.progress_message then
    redis.call('HDEL', k, 'progress', 'progress_message')
    f.progress, f.progress_message = nil, nil
  end
  f.state, f.lease_token, f.lease_expires_at, f.worker_id, f.updated_at = 'running', token,
    expires, worker, now
  f.started_at = now
  f.attempt, f.deliveries = attempt + 1, deliveries + 1
  leases[#leases + 1] = expires
  leases[#leases + 1] = id
  out[#out + 1] = {id, f}
end

local function read(stream, priority, count)
  local reply = redis.call('XREADGROUP', 'GROUP', GROUP, LEASED, 'COUNT', count,
                           'STREAMS', stream, '>')
  if not reply then return end
  for _, entry in ipairs(reply[1][2]) do
    local fields = entry[2]
    if fields then take(fields[2], priority, entry[1]) else stale:add(queue, priority, entry[1]) end
  end
end

-- How many of the first `need` jobs by (run_at, id) come from the stream's heads, and which
-- members of the waiting set: a two-way merge of two sorted runs.
local function merge(heads, due, need)
  local from_stream, picked = 0, {}
  local i, j = 1, 1
  local head_at, head_id
  while from_stream + #picked < need do
    local head, member = heads[i], due[2 * j - 1]
    if head == nil and member == nil then break end
    local take_member = head == nil
    if member ~= nil and head ~= nil then
      if head_at == nil then head_id, head_at = tonumber(head[2][2]), tonumber(head[2][4]) end
      local at = tonumber(due[2 * j])
      take_member = at < head_at or (at == head_at and tonumber(member) < head_id)
    end
    if take_member then
      picked[#picked + 1] = member
      j = j + 1
    else
      from_stream = from_stream + 1
      i = i + 1
      head_at = nil
    end
  end
  return from_stream, picked
end

local function lease_level(priority, need)
  local stream = key_stream(queue, priority)
  local has_stream = redis.call('EXISTS', stream) == 1
  local zkey = key_waiting(queue, priority)
  local due = redis.call('ZRANGEBYSCORE', zkey, '-inf', now, 'WITHSCORES', 'LIMIT', 0, need)
  if #due == 0 then
    if has_stream then read(stream, priority, need) end
    return
  end
  local heads = {}
  if has_stream then
    heads = redis.call('XRANGE', stream, '(' .. last_delivered(stream), '+', 'COUNT', need)
  end
  local from_stream, picked = merge(heads, due, need)
  if #picked > 0 then
    bulk('ZREM', zkey, picked)
    for _, member in ipairs(picked) do take(unzid(member), priority, nil) end
  end
  if from_stream > 0 then read(stream, priority, from_stream) end
end

-- A paused queue leases nothing (operator controls).
if redis.call('HGET', key_settings(queue), 'paused') == '1' then return '[]' end

for _, priority in ipairs(redis.call('ZREVRANGE', key_levels(queue), 0, -1)) do
  if #out >= limit then break end
  lease_level(priority, limit - #out)
end

if #leases > 0 then
  bulk('ZADD', key_leases(), leases)
  counter:add(queue, 'queued', -#out)
  counter:add(queue, 'running', #out)
end
counter:flush()
stale:flush()
return json_array(out)
