-- enqueue: store new jobs, for one or several enqueue calls (group commit), atomically.
--
-- KEYS[1]  prefix
-- ARGV     now, JSON [call, ...] where call = [[[queue, max_depth, incoming], ...],
--          [[queue, payload, key, priority, run_at, run_id, flow(, max_attempts, timeout_s(,
--          after, after_policy, webhook, parent_id))], ...], has links, {tenant: quota}]
--          (flow: [tenant, rate_key, concurrency_key, fair_key, traceparent] or false when
--          none is given;
--          tenant quota '*': every tenant without its own;
--          key, run_at, run_id, max_attempts, timeout_s, after, after_policy, webhook,
--          parent_id: false for none; run_at none = now; after: the parents' ids as strings,
--          sorted; the job's own limits only when one of them or a link is given, the links
--          only when one is given)
-- Keys     P:q:Q:settings (HGET max_depth: the stored limit), P:next_id (INCR), P:job:N (HSET), P:jobs (ZADD), P:queues (SADD),
--          P:q:Q:keys (HGET/HSET), P:q:Q:counts (HMGET/HINCRBY), P:q:Q:levels (ZADD),
--          P:q:Q:stream:R (XADD when due and in order) or P:q:Q:waiting:R
--          (ZADD), P:q:Q:wake (XADD MAXLEN 1); with links: P:run:I (HGET state, HINCRBY),
--          the parents' P:job:N (HGET state, HSET children), P:children:N (SADD),
--          P:waiting_jobs (ZADD), and what a finish does (common.lua) for a job stored
--          cancelled because a parent already failed; P:tenant:T (HGETALL: its unfinished
--          jobs; HINCRBY; with a quota, P:q:Q:keys + P:job:N (HGET, EXISTS) of its keyed
--          jobs: a stored key is not incoming), P:q:Q:lane:L + P:q:Q:lanes for a job with
--          flow keys
-- A call is checked against its runs and parents, the max_depth it names and each of its
-- queues' stored one.
-- Returns  JSON, per call, nothing of that call stored when refused: ['full', queue,
--          max_depth], ['tenant_full', tenant, quota], ['unknown_run', run_id], ['sealed', run_id, state],
--          ['unknown_parent', [id, ...]]; else ['ok', item, ...] where item is the new job's
--          id (a string) when it was stored queued, [id, fields, true] when it was stored
--          waiting or cancelled, or, for a (queue, key) that already exists, that job as
--          [id, fields].

local now = ARGV[1]
local counter = new_counter()
local index = {}
local finished_now = {}

local function over_depth(queue, cap, incoming)
  local c = redis.call('HMGET', key_counts(queue), 'queued', 'running', 'waiting')
  local pending = counter.deltas[queue] or {}
  local depth = num(c[1]) + num(c[2]) + num(c[3]) + (pending.queued or 0)
    + (pending.running or 0) + (pending.waiting or 0)
  return depth + incoming > cap
end

local UNFINISHED = {waiting = true, queued = true, running = true}

-- Where a job with parents starts: 'waiting' (and the parents it waits for), 'queued', or
-- 'cancelled' (and the parent that failed, and how) when one ended dead or cancelled and the
-- policy is 'completed'.
local function start_state(after, policy)
  local unfinished = {}
  for _, parent in ipairs(after) do
    local state = redis.call('HGET', key_job(parent), 'state')
    if UNFINISHED[state] then
      unfinished[#unfinished + 1] = parent
    elseif policy ~= 'always' and (state == 'dead' or state == 'cancelled') then
      return 'cancelled', parent, state
    end
  end
  if #unfinished > 0 then return 'waiting', unfinished end
  return 'queued'
end

local function append(fields, name, value)
  fields[#fields + 1] = name
  fields[#fields + 1] = value
end

-- The links' fields of a job (j: its row), and the state it starts in.
local function link_fields(fields, j)
  local after, policy = j[10], j[11]
  if j[12] then append(fields, 'webhook', j[12]) end
  if j[13] then append(fields, 'parent_id', j[13]) end
  if not after or #after == 0 then return 'queued' end
  append(fields, 'after_ids', '[' .. table.concat(after, ',') .. ']')
  if policy == 'always' then append(fields, 'after_policy', policy) end
  local state, detail, parent_state = start_state(after, policy)
  if state == 'waiting' then
    append(fields, 'parents_left', tostring(#detail))
  elseif state == 'cancelled' then
    append(fields, 'finished_at', now)
    append(fields, 'error', 'parent job ' .. detail .. ' ended ' .. parent_state)
    append(fields, 'error_type', DEPENDENCY_FAILED)
  end
  return state, detail
end

-- A job stored waiting: its parents know it.
local function wait_for(id, parents)
  for _, parent in ipairs(parents) do
    redis.call('SADD', key_children(parent), id)
    redis.call('HSET', key_job(parent), 'children', '1')
  end
  redis.call('ZADD', key_waiting_jobs(), id, id)
end

local function store(j)
  local queue, key, run_id = j[1], j[3], j[6]
  if key then
    local existing = redis.call('HGET', key_keys(queue), key)
    if existing and redis.call('EXISTS', key_job(existing)) == 1 then
      return job_reply(existing)
    end
  end
  local priority = string.format('%d', j[4])
  local run_at = j[5] or now
  local fields = {'queue', queue, 'payload', j[2], 'state', 'queued', 'priority', priority,
                  'run_at', run_at, 'created_at', now, 'updated_at', now}
  if key then append(fields, 'key', key) end
  if run_id then append(fields, 'run_id', run_id) end
  local flow, tenant, lane = j[7], false, false
  if flow then
    tenant = flow[1]
    if flow[1] then append(fields, 'tenant', flow[1]) end
    if flow[2] then append(fields, 'rate_key', flow[2]) end
    if flow[3] then append(fields, 'concurrency_key', flow[3]) end
    if flow[4] then append(fields, 'fair_key', flow[4]) end
    if flow[5] then append(fields, 'traceparent', flow[5]) end
    lane = lane_of(priority, flow[4], flow[2], flow[3])
  end
  if j[8] then append(fields, 'max_attempts', string.format('%d', j[8])) end
  if j[9] then append(fields, 'timeout_s', string.format('%.17g', j[9])) end
  local state, parents = 'queued', nil
  if #j > 9 then
    state, parents = link_fields(fields, j)
    fields[6] = state
  end
  local id = insert_job(queue, priority, run_at, state, fields, now, index, lane)
  if key then redis.call('HSET', key_keys(queue), key, id) end
  counter:add(queue, state, 1, tenant)
  if run_id then
    local k = key_run(run_id)
    redis.call('HINCRBY', k, 'total', 1)
    redis.call('HINCRBY', k, state, 1)
  end
  if state == 'queued' then return id end
  if state == 'waiting' then
    wait_for(id, parents)
  else
    redis.call('ZADD', key_done('cancelled'), now, id)
    redis.call('ZADD', key_queue_done(queue, 'cancelled'), now, id)
    finished_now[#finished_now + 1] = id
    after_finish(id, nil, 'cancelled', now, {run_id = run_id, webhook = j[12]})
  end
  return {id, job_fields(id), true}
end

-- Whether job j may join its run: the run exists and is open, or j's parent_id is a running
-- job of that run. An answer refusing the call, or nil.
local function run_refusal(j)
  local run_id = j[6]
  local state = redis.call('HGET', key_run(run_id), 'state')
  if not state then return {'unknown_run', run_id} end
  if state == 'open' then return nil end
  local parent = j[13]
  if parent then
    local f = redis.call('HMGET', key_job(parent), 'state', 'run_id')
    if f[1] == 'running' and f[2] == run_id then return nil end
  end
  return {'sealed', run_id, state}
end

-- The first run or parent this call names that refuses it, as an answer; nil when none.
local function link_refusal(call)
  local missing, seen = {}, {}
  for _, j in ipairs(call[2]) do
    if j[6] then
      local refused = run_refusal(j)
      if refused then return refused end
    end
    for _, parent in ipairs(j[10] or {}) do
      if not seen[parent] and redis.call('EXISTS', key_job(parent)) == 0 then
        missing[#missing + 1] = tonumber(parent)
      end
      seen[parent] = true
    end
  end
  if #missing > 0 then return {'unknown_parent', missing} end
  return nil
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

-- A tenant's unfinished jobs, in every queue (P:tenant:T) and pending in this script.
local function tenant_depth(tenant)
  local flat = redis.call('HGETALL', key_tenant(tenant))
  local depth = 0
  for i = 1, #flat, 2 do
    local state = string.match(flat[i], ' (%a+)$')
    if UNFINISHED[state] then depth = depth + num(flat[i + 1]) end
  end
  for name, delta in pairs(counter.tenants[tenant] or {}) do
    if UNFINISHED[string.match(name, ' (%a+)$')] then depth = depth + delta end
  end
  return depth
end

-- Whether job j's (queue, key) is already stored, or named by an earlier job of the same
-- call (seen): store() then returns that job and stores nothing new. Only a job with a
-- tenant (lookup) reads the store.
local function key_taken(j, seen, lookup)
  local queue, key = j[1], j[3]
  if not key then return false end
  local name = queue .. '\0' .. key
  if seen[name] then return true end
  seen[name] = true
  if not lookup then return false end
  local existing = redis.call('HGET', key_keys(queue), key)
  return existing ~= false and redis.call('EXISTS', key_job(existing)) == 1
end

-- The first tenant quota this call would break, as an answer; nil when it fits. A job whose
-- key is already stored is not incoming: the call returns the stored one.
local function tenant_full(call)
  local quotas = call[4]
  if not quotas or next(quotas) == nil then return nil end
  local incoming, order, seen = {}, {}, {}
  for _, j in ipairs(call[2]) do
    local tenant = j[7] and j[7][1]
    if not key_taken(j, seen, tenant) and tenant then
      if incoming[tenant] == nil then order[#order + 1] = tenant end
      incoming[tenant] = (incoming[tenant] or 0) + 1
    end
  end
  for _, tenant in ipairs(order) do
    local quota = quotas[tenant] or quotas['*']
    if quota and tenant_depth(tenant) + incoming[tenant] > quota then
      return {'tenant_full', tenant, quota}
    end
  end
  return nil
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

-- Only calls with a run or a parent are checked for them (a flag the caller sets).
local results = {}
for c, call in ipairs(cjson.decode(ARGV[2])) do
  local refused = (call[3] and link_refusal(call)) or first_full(call) or tenant_full(call)
  if refused then
    results[c] = refused
  else
    local items = {'ok'}
    for _, j in ipairs(call[2]) do items[#items + 1] = store(j) end
    results[c] = items
  end
end

if #index > 0 then bulk('ZADD', key_jobs(), index) end
counter:flush()
if #finished_now > 0 then redis.call('PUBLISH', key_finished(), table.concat(finished_now, ',')) end
return cjson.encode(results)
