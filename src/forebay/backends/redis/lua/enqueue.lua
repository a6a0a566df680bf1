-- enqueue: store new jobs, for one or several enqueue calls (group commit), atomically.
--
-- KEYS[1]  prefix
-- ARGV     now, JSON [call, ...] where call = [[[queue, max_depth, incoming], ...],
--          [[queue, payload, key, priority, run_at, run_id(, max_attempts, timeout_s)], ...]]
--          (key, run_at, run_id, max_attempts, timeout_s: false for none; run_at none = now;
--          the job's own limits only when one of them is given)
-- Keys     P:q:Q:settings (HGET max_depth: the stored limit), P:next_id (INCR), P:job:N (HSET), P:jobs (ZADD), P:queues (SADD),
--          P:q:Q:keys (HGET/HSET), P:q:Q:counts (HMGET/HINCRBY), P:q:Q:levels (ZADD),
--          P:q:Q:stream:R (XADD when due and in order) or P:q:Q:waiting:R
--          (ZADD), P:q:Q:wake (XADD MAXLEN 1)
-- A call is checked against the max_depth it names and against each of its queues' stored one.
-- Returns  JSON, per call: ['full', queue, max_depth] (nothing of that call stored), or
--          ['ok', item, ...] where item is the new job's id (a string) or, for a
--          (queue, key) that already exists, that job as [id, fields].

local now = ARGV[1]
local counter = new_counter()
local seen_queue = {}
local index = {}

local function over_depth(queue, cap, incoming)
  local c = redis.call('HMGET', key_counts(queue), 'queued', 'running')
  local pending = counter.deltas[queue] or {}
  local depth = num(c[1]) + num(c[2]) + (pending.queued or 0) + (pending.running or 0)
  return depth + incoming > cap
end

local function store(queue, payload, key, priority, run_at, run_id, max_attempts, timeout_s)
  if key then
    local existing = redis.call('HGET', key_keys(queue), key)
    if existing and redis.call('EXISTS', key_job(existing)) == 1 then
      return job_reply(existing)
    end
  end
  local id = string.format('%d', redis.call('INCR', key_next_id()))
  run_at = run_at or now
  local fields = {'queue', queue, 'payload', payload, 'state', 'queued', 'priority', priority,
                  'run_at', run_at, 'created_at', now, 'updated_at', now}
  if key then
    fields[#fields + 1] = 'key'
    fields[#fields + 1] = key
    redis.call('HSET', key_keys(queue), key, id)
  end
  if run_id then
    fields[#fields + 1] = 'run_id'
    fields[#fields + 1] = run_id
  end
  if max_attempts then
    fields[#fields + 1] = 'max_attempts'
    fields[#fields + 1] = string.format('%d', max_attempts)
  end
  if timeout_s then
    fields[#fields + 1] = 'timeout_s'
    fields[#fields + 1] = string.format('%.17g', timeout_s)
  end
  local entry = place(id, queue, priority, run_at, now)
  if entry then
    fields[#fields + 1] = 'entry'
    fields[#fields + 1] = entry
  end
  redis.call('HSET', key_job(id), unpack(fields))
  index[#index + 1] = id
  index[#index + 1] = id
  counter:add(queue, 'queued', 1)
  if not seen_queue[queue] then
    redis.call('SADD', key_queues(), queue)
    seen_queue[queue] = true
  end
  return id
end

-- The stored max_depth of a queue (false: none), read once per script.
local stored_caps = {}
local function stored_cap(queue)
  local cap = stored_caps[queue]
  if cap == nil then
    cap = tonumber(redis.call('HGET', key_settings(queue), 'max_depth')) or false
    stored_caps[queue] = cap
  end
  return cap
end

-- The first limit this call would break, as an answer; nil when it fits.
local function first_full(call)
  for _, check in ipairs(call[1]) do
    if over_depth(check[1], check[2], check[3]) then return {'full', check[1], check[2]} end
  end
  local incoming, order = {}, {}
  for _, j in ipairs(call[2]) do
    if incoming[j[1]] == nil then order[#order + 1] = j[1] end
    incoming[j[1]] = (incoming[j[1]] or 0) + 1
  end
  if not enqueue_checks_stored_depth then return nil end
  for _, queue in ipairs(order) do
    local cap = stored_cap(queue)
    if cap and over_depth(queue, cap, incoming[queue]) then return {'full', queue, cap} end
  end
  return nil
end

local results = {}
for c, call in ipairs(cjson.decode(ARGV[2])) do
  local full = first_full(call)
  if full then
    results[c] = full
  else
    local items = {'ok'}
    for _, j in ipairs(call[2]) do
      items[#items + 1] = store(j[1], j[2], j[3], string.format('%d', j[4]), j[5], j[6], j[7],
                                    j[8])
    end
    results[c] = items
  end
end

if #index > 0 then bulk('ZADD', key_jobs(), index) end
counter:flush()
return cjson.encode(results)
