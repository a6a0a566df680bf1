-- Helpers shared by every script; loaded after the key prelude (keys.py), before the script.
--
-- Conventions:
--   * batches arrive as one JSON argument (cjson.decode: one C call instead of thousands of
--     arguments), and large answers leave as JSON (cjson.encode) for the same reason;
--   * ids and times are strings, stored as given: Lua would round a float turning it back
--     into a string; false stands for "none";
--   * a job is answered as [id, {field: value}] (its hash).
--
-- Where a queued job of queue Q at priority R waits:
--   * in the stream P:q:Q:stream:R (entry: id N, at run_at) when it was due on arrival and
--     not earlier than the stream's last entry, so a stream's entries are always in
--     (run_at, id) order and most jobs go XADD -> XREADGROUP -> XACK + XDEL;
--   * else in the sorted set P:q:Q:waiting:R (score run_at): scheduled jobs, retries in
--     backoff, deferred and put-back jobs, jobs enqueued with a past run_at. The lease script
--     merges its due members with the stream's undelivered entries by (run_at, id), so the
--     promised order (priority, then run_at, then enqueue order) holds exactly;
--   * a job that carries a flow key (rate_key, concurrency_key, fair_key) waits in its lane
--     instead, P:q:Q:lane:L (score run_at; L = priority, fair_key, rate_key, concurrency_key),
--     due or not, and the lane is in P:q:Q:lanes while it holds jobs: the lease takes from
--     lanes whose keys are not blocked, so a throttled key never stands in front of others.

-- Redis answers false for a missing field: nil-safe number parsing.
local function num(value)
  return tonumber(value) or 0
end

-- A JSON array answer; cjson would encode an empty table as an object.
local function json_array(items)
  if #items == 0 then return '[]' end
  return cjson.encode(items)
end

-- A job's hash as a table {field = value}.
local function job_fields(id)
  local flat = redis.call('HGETALL', key_job(id))
  local fields = {}
  for i = 1, #flat, 2 do fields[flat[i]] = flat[i + 1] end
  return fields
end

local function job_reply(id)
  return {id, job_fields(id)}
end

-- Commands taking many members at once, sent in slices (Lua's unpack has a stack limit).
local function bulk(command, key, items)
  local n = #items
  for i = 1, n, 1000 do
    redis.call(command, key, unpack(items, i, math.min(i + 999, n)))
  end
end

-- Members of the waiting sets: ids zero-padded, so equal run_at scores sort by id.
local function zid(id)
  return string.format('%015d', tonumber(id))
end

local function unzid(member)
  return string.format('%d', tonumber(member))
end

-- Per-queue state counters (P:q:Q:counts), summed in a table and written once per script.
local Counter = {}
Counter.__index = Counter

local function new_counter()
  return setmetatable({deltas = {}, tenants = {}}, Counter)
end

-- The tenant's own counts (P:tenant:T, field "<queue> <state>"), beside its queue's.
function Counter:add_tenant(tenant, queue, field, delta)
  local per_tenant = self.tenants[tenant]
  if per_tenant == nil then
    per_tenant = {}
    self.tenants[tenant] = per_tenant
  end
  local name = queue .. ' ' .. field
  per_tenant[name] = (per_tenant[name] or 0) + delta
end

-- tenant: the job's (false or nil: none), counted for it as well.
function Counter:add(queue, field, delta, tenant)
  local per_queue = self.deltas[queue]
  if per_queue == nil then
    per_queue = {}
    self.deltas[queue] = per_queue
  end
  per_queue[field] = (per_queue[field] or 0) + delta
  if tenant then self:add_tenant(tenant, queue, field, delta) end
end

function Counter:flush()
  for queue, fields in pairs(self.deltas) do
    local key = key_counts(queue)
    for field, delta in pairs(fields) do
      if delta ~= 0 then redis.call('HINCRBY', key, field, delta) end
    end
  end
  for tenant, fields in pairs(self.tenants) do
    local key = key_tenant(tenant)
    for field, delta in pairs(fields) do
      if delta ~= 0 then redis.call('HINCRBY', key, field, delta) end
    end
  end
end

-- One count of a tenant moved at once (for the helpers below that write counts directly).
local function tenant_move(tenant, queue, from, to)
  if not tenant then return end
  local key = key_tenant(tenant)
  if from then redis.call('HINCRBY', key, queue .. ' ' .. from, -1) end
  if to then redis.call('HINCRBY', key, queue .. ' ' .. to, 1) end
end

-- Stream entries of jobs that no longer wait or run, acknowledged and deleted per stream in
-- one call each: a stream holds only jobs that wait or run, so it does not grow with history.
local Dropper = {}
Dropper.__index = Dropper

local function new_dropper()
  return setmetatable({per_stream = {}}, Dropper)
end

function Dropper:add(queue, priority, entry)
  if not entry then return end
  local stream = key_stream(queue, priority)
  local list = self.per_stream[stream]
  if list == nil then
    list = {}
    self.per_stream[stream] = list
  end
  list[#list + 1] = entry
end

function Dropper:flush()
  for stream, entries in pairs(self.per_stream) do
    for i = 1, #entries, 1000 do
      local slice = {unpack(entries, i, math.min(i + 999, #entries))}
      redis.call('XACK', stream, GROUP, unpack(slice))
      redis.call('XDEL', stream, unpack(slice))
    end
  end
end

-- Touch the queue's wake stream (once per script): idle workers block on it beside the
-- streams and poll again when it moves.
local woken = {}
local function wake(queue)
  if not woken[queue] then
    redis.call('XADD', key_wake(queue), 'MAXLEN', '1', '*', 'wake', '1')
    woken[queue] = true
  end
end

local levels_seen = {}
local function use_level(queue, priority)
  local seen = levels_seen[queue]
  if seen == nil then
    seen = {}
    levels_seen[queue] = seen
  end
  if not seen[priority] then
    redis.call('ZADD', key_levels(queue), priority, priority)
    seen[priority] = true
  end
end

-- The stream of (queue, priority), created with its consumer group (and its level
-- registered) on first use.
local streams_seen = {}
local function ensure_stream(queue, priority)
  local stream = key_stream(queue, priority)
  if not streams_seen[stream] then
    if redis.call('EXISTS', stream) == 0 then
      redis.call('XGROUP', 'CREATE', stream, GROUP, '0', 'MKSTREAM')
      use_level(queue, priority)
      wake(queue)  -- idle workers watch the streams that existed when they polled
    end
    streams_seen[stream] = true
  end
  return stream
end

-- The group's last delivered entry id: entries after it are not yet delivered.
local function last_delivered(stream)
  for _, group in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
    for i = 1, #group, 2 do
      if group[i] == 'last-delivered-id' then return group[i + 1] end
    end
  end
  return '0-0'
end

-- (run_at, id) of a stream's last entry, read once per script. Entries before it that are
-- still undelivered are not later than it, so appending after it keeps the order.
local tails = {}
local function tail_of(stream)
  local tail = tails[stream]
  if tail == nil then
    tail = false
    local last = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)[1]
    if last then tail = {tonumber(last[2][4]), tonumber(last[2][2])} end
    tails[stream] = tail
  end
  return tail
end

-- The lane of a job with flow keys (false: it has none, it waits in its level). The keys are
-- never empty and never hold a NUL, so the name is unambiguous.
local function lane_of(priority, fair_key, rate_key, concurrency_key)
  if not (fair_key or rate_key or concurrency_key) then return false end
  return priority .. '\0' .. (fair_key or '') .. '\0' .. (rate_key or '') .. '\0'
    .. (concurrency_key or '')
end

-- A lane's parts: priority, fair_key, rate_key, concurrency_key (false for none).
local function lane_parts(lane)
  local priority, fair_key, rate_key, concurrency_key =
    string.match(lane, '^([^%z]*)%z([^%z]*)%z([^%z]*)%z(.*)$')
  return priority, fair_key ~= '' and fair_key, rate_key ~= '' and rate_key,
    concurrency_key ~= '' and concurrency_key
end

-- The lane's entry in its priority's heads (P:q:Q:heads:R: member = zid of the lane's first
-- job followed by the lane, score = its run_at, so equal times sort by id) after its first
-- job may have changed from `before` (a zid, or nil); an emptied lane leaves P:q:Q:lanes.
local function lane_head_moved(queue, lane, before)
  local priority = string.sub(lane, 1, string.find(lane, '\0', 1, true) - 1)
  local heads = key_heads(queue, priority)
  local first = redis.call('ZRANGE', key_lane(queue, lane), 0, 0, 'WITHSCORES')
  if first[1] == before then return end
  if before then redis.call('ZREM', heads, before .. lane) end
  if first[1] then
    redis.call('ZADD', heads, first[2], first[1] .. lane)
  else
    redis.call('SREM', key_lanes(queue), lane)
  end
end

local function lane_first(queue, lane)
  return redis.call('ZRANGE', key_lane(queue, lane), 0, 0)[1]
end

-- Queued jobs leave their lane (members: their zid).
local function leave_lane(queue, lane, members)
  local before = lane_first(queue, lane)
  bulk('ZREM', key_lane(queue, lane), members)
  lane_head_moved(queue, lane, before)
end

-- A job's run_at in its lane (added, or moved), and the lane's head.
local function lane_put(queue, lane, run_at, member)
  local before = lane_first(queue, lane)
  redis.call('ZADD', key_lane(queue, lane), run_at, member)
  lane_head_moved(queue, lane, before)
end

-- Put a queued job where it waits (see the top of this file). Returns its new stream entry
-- id, or nil when it went to the waiting set or its lane (lane: lane_of its keys, false or
-- nil when it has none). Idle workers are woken when it is due (unless quiet) or the earliest
-- of its set; an entry appended to a stream wakes them by itself.
local function place(id, queue, priority, run_at, now, quiet, lane)
  local at = tonumber(run_at)
  if lane then
    local zkey = key_lane(queue, lane)
    local member = zid(id)
    lane_put(queue, lane, run_at, member)
    redis.call('SADD', key_lanes(queue), lane)
    use_level(queue, priority)
    local due = at <= tonumber(now)
    if (due and not quiet) or (not due and redis.call('ZRANGE', zkey, 0, 0)[1] == member) then
      wake(queue)
    end
    return nil
  end
  if at <= tonumber(now) then
    local stream = key_stream(queue, priority)
    local tail = tail_of(stream)
    if not tail or at > tail[1] or (at == tail[1] and tonumber(id) > tail[2]) then
      local entry = redis.call('XADD', ensure_stream(queue, priority), '*', 'id', id, 'at', run_at)
      tails[stream] = {at, tonumber(id)}
      return entry
    end
  end
  use_level(queue, priority)
  local zkey = key_waiting(queue, priority)
  local member = zid(id)
  redis.call('ZADD', zkey, run_at, member)
  local due = at <= tonumber(now)
  if (due and not quiet) or (not due and redis.call('ZRANGE', zkey, 0, 0)[1] == member) then
    wake(queue)
  end
  return nil
end

-- Flow control (forebay.flow, whose module docstring is the semantics): the queue's stored
-- limits, its rate buckets (GCRA: one tat per bucket) and its running counts.

-- A rate as stored ({count, period_s, burst}; burst 0: count), or nil.
local function flow_rate(r)
  if r == nil or r == cjson.null then return nil end
  local burst = tonumber(r.burst) or 0
  if burst == 0 then burst = r.count end
  local interval = r.period_s / r.count
  return {burst = burst, interval = interval, tolerance = (burst - 1) * interval}
end

local function flow_value(v)
  if v == cjson.null then return nil end
  return v
end

-- The queue's stored limits (the settings hash's JSON text), or nil when it has none.
local function flow_limits(text)
  if not text then return nil end
  local d = cjson.decode(text)
  return {rate = flow_rate(d.rate), rate_per_key = flow_rate(d.rate_per_key),
          concurrency = flow_value(d.concurrency),
          concurrency_per_key = flow_value(d.concurrency_per_key), fair = d.fair == true,
          aging_s = flow_value(d.aging_s)}
end

-- Times closer than this are equal (flow._SLACK_S: epoch seconds carry rounding).
local FLOW_SLACK_S = 1e-6

-- Tokens free at now in a bucket at tat (nil: full). Rate.available.
local function rate_available(r, tat, now)
  if tat == nil or tat <= now then return r.burst end
  local spare = r.tolerance - (tat - now)
  if spare < -FLOW_SLACK_S then return 0 end
  return math.min(r.burst, math.floor((spare + FLOW_SLACK_S) / r.interval) + 1)
end

-- The bucket's tat once n tokens are spent at now. Rate.spend.
local function rate_spend(r, tat, now, n)
  local base = now
  if tat ~= nil and tat >= now then base = tat end
  return base + n * r.interval
end

-- When the bucket has a token again. Rate.free_at.
local function rate_free_at(r, tat, now)
  if tat == nil then return now end
  return math.max(now, tat - r.tolerance)
end

-- A time as stored and answered: exact decimal text (cjson keeps 14 digits only).
local function time_text(t)
  return string.format('%.17g', t)
end

-- What a lease reads of a queue's flow state, each thing once per script: its bucket tats
-- (nil: full; a past one reads as nil) and its running counts.
local function flow_reader(queue, now)
  local r = {tats = {}, running = {}}
  local buckets, running = key_buckets(queue), key_running_keys(queue)
  function r:tat(key)  -- key '' is the queue's own bucket
    local tat = self.tats[key]
    if tat == nil then
      tat = tonumber(redis.call('HGET', buckets, key)) or false
      if tat and tat < now then tat = false end
      self.tats[key] = tat
    end
    return tat or nil
  end
  function r:running_of(key)
    local n = self.running[key]
    if n == nil then
      n = num(redis.call('HGET', running, key))
      self.running[key] = n
    end
    return n
  end
  -- Read the buckets of rate_keys and the counts of concurrency_keys not read yet, each
  -- list in one HMGET (a lease opening many lanes reads their keys together).
  function r:prefetch(rate_keys, concurrency_keys)
    local want = {}
    for _, key in ipairs(rate_keys) do
      if self.tats[key] == nil then
        self.tats[key] = false
        want[#want + 1] = key
      end
    end
    for i = 1, #want, 1000 do
      local slice = {unpack(want, i, math.min(i + 999, #want))}
      local stored = redis.call('HMGET', buckets, unpack(slice))
      for j, key in ipairs(slice) do
        local tat = tonumber(stored[j]) or false
        if tat and tat < now then tat = false end
        self.tats[key] = tat
      end
    end
    want = {}
    for _, key in ipairs(concurrency_keys) do
      if self.running[key] == nil then
        self.running[key] = 0
        want[#want + 1] = key
      end
    end
    for i = 1, #want, 1000 do
      local slice = {unpack(want, i, math.min(i + 999, #want))}
      local stored = redis.call('HMGET', running, unpack(slice))
      for j, key in ipairs(slice) do self.running[key] = num(stored[j]) end
    end
  end
  return r
end

-- The queue-wide limits at now: how many jobs a lease may start (limit: at most this many),
-- and, when its rate is what stops it, when the next token frees. flow.budget.
local function flow_budget(queue, limits, state, limit, now)
  local room = limit
  if limits.concurrency then
    room = math.min(room, limits.concurrency - num(redis.call('HGET', key_counts(queue), 'running')))
  end
  if limits.rate and room > 0 then
    local tokens = rate_available(limits.rate, state:tat(''), now)
    if tokens <= 0 then return 0, rate_free_at(limits.rate, state:tat(''), now) end
    room = math.min(room, tokens)
  end
  return math.max(0, room), nil
end

-- Whether a lane's keys hold its jobs back at now: 'rate' (and when its key's next token
-- frees), 'cap', or nil. flow.blocked_keys.
local function lane_blocked(limits, state, rate_key, concurrency_key, now)
  if limits.rate_per_key and rate_key then
    local tat = state:tat(rate_key)
    if rate_available(limits.rate_per_key, tat, now) <= 0 then
      return 'rate', rate_free_at(limits.rate_per_key, tat, now)
    end
  end
  if limits.concurrency_per_key and concurrency_key
      and state:running_of(concurrency_key) >= limits.concurrency_per_key then
    return 'cap'
  end
  return nil
end

-- A running job of queue left running: when the queue caps its running jobs (in all or per
-- key), idle workers poll again (once per script), since a slot may be free.
local capped = {}
local function freed_slot(queue)
  local c = capped[queue]
  if c == nil then
    local limits = flow_limits(redis.call('HGET', key_settings(queue), 'limits'))
    c = limits ~= nil and (limits.concurrency ~= nil or limits.concurrency_per_key ~= nil)
    capped[queue] = c
  end
  if c then wake(queue) end
end

-- Runs, dependencies and job webhooks (forebay.runs): what a job's arrival or finish does
-- beyond its queue, in the same script. A job with no run, no webhook and no children never
-- gets here: the fields every transition reads anyway (HELD, ...) say there is nothing to do.
-- WEBHOOK_QUEUE, RUN_COMPLETED, DEPENDENCY_FAILED and JOB_WEBHOOK_TYPES come from
-- forebay.runs, generated before this file.

-- A JSON value for a stored text (false: null); numbers and JSON texts go in as stored.
local function jtext(value)
  if not value then return 'null' end
  return cjson.encode(value)
end

local queues_noted = {}
local function note_queue(queue)
  if not queues_noted[queue] then
    redis.call('SADD', key_queues(), queue)
    queues_noted[queue] = true
  end
end

-- A new job's hash (fields: a flat list without the id-derived ones), placed where it waits
-- when queued. index: the caller's list of P:jobs members to add, or nil to add it now.
local function insert_job(queue, priority, run_at, state, fields, now, index, lane)
  local id = string.format('%d', redis.call('INCR', key_next_id()))
  if state == 'queued' then
    local entry = place(id, queue, priority, run_at, now, false, lane)
    if entry then
      fields[#fields + 1] = 'entry'
      fields[#fields + 1] = entry
    end
  end
  redis.call('HSET', key_job(id), unpack(fields))
  if index then
    index[#index + 1] = id
    index[#index + 1] = id
  else
    redis.call('ZADD', key_jobs(), id, id)
  end
  note_queue(queue)
  return id
end

-- A job the store derives (a completion job, a webhook delivery): queued now at priority 0,
-- no run, no max_depth, once per (queue, key) when it has a key. tenant (false or nil: none):
-- the job's, stored and counted in P:tenant:T as enqueue counts any job with a tenant.
local function derive_job(queue, payload, key, now, tenant)
  local fields = {'queue', queue, 'payload', payload, 'state', 'queued', 'priority', '0',
                  'run_at', now, 'created_at', now, 'updated_at', now}
  if key then
    local existing = redis.call('HGET', key_keys(queue), key)
    if existing and redis.call('EXISTS', key_job(existing)) == 1 then return end
    fields[#fields + 1] = 'key'
    fields[#fields + 1] = key
  end
  if tenant then
    fields[#fields + 1] = 'tenant'
    fields[#fields + 1] = tenant
  end
  local id = insert_job(queue, '0', now, 'queued', fields, now)
  if key then redis.call('HSET', key_keys(queue), key, id) end
  redis.call('HINCRBY', key_counts(queue), 'queued', 1)
  tenant_move(tenant, queue, nil, 'queued')
end

-- A run's hash key, or nil when the run is not stored (pruned): its jobs keep the id only.
local runs_stored = {}
local function stored_run(run_id)
  local stored = runs_stored[run_id]
  if stored == nil then
    stored = redis.call('EXISTS', key_run(run_id)) == 1
    runs_stored[run_id] = stored
  end
  return stored and key_run(run_id) or nil
end

-- A job of run_id (false: none) moves between two of the run's counts.
local function run_move(run_id, from, to)
  if not run_id then return end
  local k = stored_run(run_id)
  if not k then return end
  redis.call('HINCRBY', k, from, -1)
  redis.call('HINCRBY', k, to, 1)
end

local RUN_DESCRIBED = {'name', 'key', 'meta', 'on_complete', 'webhook', 'created_at', 'sealed_at',
                      'tenant'}

-- The run completes when it is sealed and every job finished: state, completed_at and its
-- completion jobs (forebay.runs.run_summary, built with the stored texts of its times); the
-- on_complete job belongs to the run's tenant, the webhook delivery to none.
local function complete_run_if_done(run_id, now)
  local k = key_run(run_id)
  local c = redis.call('HMGET', k, 'state', 'total', 'completed', 'dead', 'cancelled')
  if c[1] ~= 'sealed' or num(c[3]) + num(c[4]) + num(c[5]) ~= num(c[2]) then return end
  redis.call('HSET', k, 'state', 'completed', 'completed_at', now)
  redis.call('ZADD', key_runs_completed(), now, run_id)
  local f = redis.call('HMGET', k, unpack(RUN_DESCRIBED))
  if not f[4] and not f[5] then return end
  local summary = '{"run_id":' .. jtext(run_id) .. ',"name":' .. jtext(f[1])
    .. ',"key":' .. jtext(f[2]) .. ',"meta":' .. (f[3] or '{}')
    .. ',"total":' .. num(c[2]) .. ',"completed":' .. num(c[3]) .. ',"dead":' .. num(c[4])
    .. ',"cancelled":' .. num(c[5]) .. ',"created_at":' .. f[6] .. ',"sealed_at":' .. f[7]
    .. ',"completed_at":' .. now .. '}'
  if f[4] then derive_job(f[4], summary, 'run:' .. run_id .. ':complete', now, f[8]) end
  if f[5] then
    local payload = '{"url":' .. jtext(f[5]) .. ',"type":' .. jtext(RUN_COMPLETED)
      .. ',"data":' .. summary .. '}'
    derive_job(WEBHOOK_QUEUE, payload, 'run:' .. run_id .. ':webhook', now)
  end
end

local JOB_SUMMARY = {'queue', 'key', 'run_id', 'attempt', 'error', 'error_type', 'result',
                     'finished_at'}

-- The delivery job of a finished job's webhook (forebay.runs.job_summary).
local function job_webhook(id, url, state, now)
  local f = redis.call('HMGET', key_job(id), unpack(JOB_SUMMARY))
  local data = '{"id":' .. id .. ',"queue":' .. jtext(f[1]) .. ',"state":' .. jtext(state)
    .. ',"key":' .. jtext(f[2]) .. ',"run_id":' .. jtext(f[3]) .. ',"attempt":' .. num(f[4])
    .. ',"error":' .. jtext(f[5]) .. ',"error_type":' .. jtext(f[6])
    .. ',"result":' .. (f[7] or 'null') .. ',"finished_at":' .. (f[8] or now) .. '}'
  local payload = '{"url":' .. jtext(url) .. ',"type":' .. jtext(JOB_WEBHOOK_TYPES[state])
    .. ',"data":' .. data .. '}'
  derive_job(WEBHOOK_QUEUE, payload, false, now)
end

local CHILD = {'state', 'after_policy', 'queue', 'priority', 'run_at', 'run_id', 'webhook',
               'children', 'tenant', 'fair_key', 'rate_key', 'concurrency_key'}

-- A waiting child whose parent ended badly: cancelled, a finish of its own (returned, to be
-- followed like any finish).
local function cancel_child(child, f, parent, parent_state, now)
  local k = key_job(child)
  redis.call('HSET', k, 'state', 'cancelled', 'finished_at', now, 'updated_at', now,
             'error', 'parent job ' .. parent .. ' ended ' .. parent_state,
             'error_type', DEPENDENCY_FAILED)
  redis.call('HDEL', k, 'parents_left')
  redis.call('ZREM', key_waiting_jobs(), child)
  redis.call('ZADD', key_done('cancelled'), now, child)
  redis.call('ZADD', key_queue_done(f[3], 'cancelled'), now, child)
  redis.call('HINCRBY', key_counts(f[3]), 'waiting', -1)
  redis.call('HINCRBY', key_counts(f[3]), 'cancelled', 1)
  tenant_move(f[9], f[3], 'waiting', 'cancelled')
  return {id = child, from = 'waiting', state = 'cancelled',
          job = {run_id = f[6], webhook = f[7], children = f[8]}}
end

-- One parent fewer to wait for; the last one queues the child at its own run_at.
local function release_child(child, f, now)
  local k = key_job(child)
  if redis.call('HINCRBY', k, 'parents_left', -1) > 0 then return end
  redis.call('HSET', k, 'state', 'queued', 'updated_at', now)
  redis.call('HDEL', k, 'parents_left')
  redis.call('ZREM', key_waiting_jobs(), child)
  local entry = place(child, f[3], f[4], f[5], now, false, lane_of(f[4], f[10], f[11], f[12]))
  if entry then redis.call('HSET', k, 'entry', entry) end
  redis.call('HINCRBY', key_counts(f[3]), 'waiting', -1)
  redis.call('HINCRBY', key_counts(f[3]), 'queued', 1)
  tenant_move(f[9], f[3], 'waiting', 'queued')
  run_move(f[6], 'waiting', 'queued')
end

-- After job id went from `from` (nil: stored finished at enqueue, already counted) to the
-- finished `state`: its run's counts and completion, its webhook, its waiting children, and
-- theirs in turn (a work list, not recursion: chains may be long). job: run_id, webhook,
-- children as stored.
local function after_finish(id, from, state, now, job)
  local work, cancelled = {{id = id, from = from, state = state, job = job}}, {}
  local i = 1
  while i <= #work do
    local w = work[i]
    i = i + 1
    local run_id = w.job.run_id
    if run_id and stored_run(run_id) then
      if w.from then run_move(run_id, w.from, w.state) end
      complete_run_if_done(run_id, now)
    end
    if w.job.webhook then job_webhook(w.id, w.job.webhook, w.state, now) end
    if w.job.children then
      for _, child in ipairs(redis.call('SMEMBERS', key_children(w.id))) do
        local f = redis.call('HMGET', key_job(child), unpack(CHILD))
        if f[1] == 'waiting' then
          if w.state ~= 'completed' and f[2] ~= 'always' then
            work[#work + 1] = cancel_child(child, f, w.id, w.state, now)
            cancelled[#cancelled + 1] = child
          else
            release_child(child, f, now)
          end
        end
      end
      -- Each child counts this parent once: replayed, it finishes again without them.
      redis.call('DEL', key_children(w.id))
      redis.call('HDEL', key_job(w.id), 'children')
    end
  end
  if #cancelled > 0 then redis.call('PUBLISH', key_finished(), table.concat(cancelled, ',')) end
end

-- Fields every transition out of running reads; nil unless the job is running under token.
local HELD = {'state', 'lease_token', 'queue', 'priority', 'entry', 'attempt', 'deliveries',
              'defers', 'error_type', 'run_id', 'webhook', 'children', 'tenant', 'fair_key',
              'rate_key', 'concurrency_key'}
local function held(id, token)
  local f = redis.call('HMGET', key_job(id), unpack(HELD))
  if f[1] ~= 'running' or f[2] ~= token then return nil end
  return {queue = f[3], priority = f[4], entry = f[5], attempt = num(f[6]),
          deliveries = num(f[7]), defers = num(f[8]), failed = f[9] ~= false, run_id = f[10],
          webhook = f[11], children = f[12], tenant = f[13], fair_key = f[14],
          rate_key = f[15], concurrency_key = f[16]}
end

-- A job leaves running, whichever way: its concurrency key's slot comes back.
local function leave_running(queue, concurrency_key)
  if not concurrency_key then return end
  local k = key_running_keys(queue)
  if redis.call('HINCRBY', k, concurrency_key, -1) <= 0 then
    redis.call('HDEL', k, concurrency_key)
  end
end

-- A job leaving running for queued: its entry goes, it waits again at run_at (in its lane
-- when it has flow keys: job.fair_key, rate_key, concurrency_key).
local function put_back(id, job, run_at, now, dropper, quiet)
  local k = key_job(id)
  dropper:add(job.queue, job.priority, job.entry)
  redis.call('HDEL', k, 'lease_token', 'lease_expires_at', 'entry')
  leave_running(job.queue, job.concurrency_key)
  if not quiet then freed_slot(job.queue) end
  local lane = lane_of(job.priority, job.fair_key, job.rate_key, job.concurrency_key)
  local entry = place(id, job.queue, job.priority, run_at, now, quiet, lane)
  if entry then redis.call('HSET', k, 'entry', entry) end
  run_move(job.run_id, 'running', 'queued')
end

-- The loop of every transition out of running. ARGV = now, JSON rows, each starting with
-- the job's id and lease_token. apply(id, job, row) moves one job still held under that token.
-- Returns the ids refused (not running under that token).
local function settle(apply)
  local refused, ended = {}, {}
  for _, row in ipairs(cjson.decode(ARGV[2])) do
    local id = row[1]
    local job = held(id, row[2])
    if job then
      apply(id, job, row)
      ended[#ended + 1] = id
    else
      refused[#refused + 1] = id
    end
  end
  if #ended > 0 then bulk('ZREM', key_leases(), ended) end
  return refused
end

-- The job's errors history (JSON text in its hash) with one more entry, keeping the last 10
-- (forebay.job.MAX_ERRORS_KEPT); traceback false: none.
local function append_error(id, attempt, now, kind, message, traceback)
  local k = key_job(id)
  local old = redis.call('HGET', k, 'errors')
  local list = old and cjson.decode(old) or {}
  list[#list + 1] = {attempt = tonumber(attempt), at = tonumber(now), type = kind,
                     message = message, traceback = traceback or cjson.null}
  while #list > 10 do table.remove(list, 1) end
  redis.call('HSET', k, 'errors', cjson.encode(list))
end

-- Finished jobs to index by finished_at: in P:done:S (listings) and P:q:Q:done:S (pruning
-- each queue by its own retention). done:flush(state) writes them, one ZADD per key.
local function new_done()
  local d = {all = {}, queues = {}}
  function d:add(queue, now, id)
    local q = self.queues[queue]
    if not q then
      q = {}
      self.queues[queue] = q
    end
    q[#q + 1] = now
    q[#q + 1] = id
    self.all[#self.all + 1] = now
    self.all[#self.all + 1] = id
  end
  function d:flush(state)
    if #self.all > 0 then bulk('ZADD', key_done(state), self.all) end
    for queue, items in pairs(self.queues) do bulk('ZADD', key_queue_done(queue, state), items) end
  end
  return d
end

-- A running job ends in a terminal state: its entry goes, it is indexed for pruning.
local function finish(id, job, state, now, counter, dropper, done)
  dropper:add(job.queue, job.priority, job.entry)
  redis.call('HDEL', key_job(id), 'lease_token', 'lease_expires_at', 'entry')
  done:add(job.queue, now, id)
  leave_running(job.queue, job.concurrency_key)
  freed_slot(job.queue)
  counter:add(job.queue, 'running', -1, job.tenant)
  counter:add(job.queue, state, 1, job.tenant)
  if job.run_id or job.webhook or job.children then
    after_finish(id, 'running', state, now, job)
  end
end

-- Finished jobs counted where they finish (forebay.fleet): per queue and outcome (completed,
-- dead, reclaimed) in the minute of the script's now (P:minute:M, listed in P:minutes) and in
-- the totals (P:totals). tally:add as each transition applies, tally:flush(now) once: a few
-- commands per queue and script call, whatever the batch.
local function new_tally()
  local t = {counts = {}, any = false}
  function t:add(queue, outcome)
    local name = queue .. ' ' .. outcome
    self.counts[name] = (self.counts[name] or 0) + 1
    self.any = true
  end
  function t:flush(now)
    if not self.any then return end
    local at = tonumber(now)
    local minute = string.format('%d', at - math.fmod(at, 60))  -- fleet.minute_of, exactly
    local per_minute, totals = key_minute(minute), key_totals()
    for name, n in pairs(self.counts) do
      redis.call('HINCRBY', per_minute, name, n)
      redis.call('HINCRBY', totals, name, n)
    end
    redis.call('ZADD', key_minutes(), minute, minute)
  end
  return t
end

-- Tell whoever waits for the jobs a script finished, in any process: one PUBLISH of their
-- ids, comma-separated (`done` holds finished_at, id pairs, as ZADD takes them).
local function announce_finished(done)
  if #done == 0 then return end
  local ids = {}
  for i = 2, #done, 2 do ids[#ids + 1] = done[i] end
  redis.call('PUBLISH', key_finished(), table.concat(ids, ','))
end

-- Delete a job in the given terminal state with its idempotency key; 1 if deleted.
local function delete_job(id, state, counter)
  local k = key_job(id)
  local f = redis.call('HMGET', k, 'state', 'queue', 'key', 'children', 'tenant')
  if f[1] ~= state then return 0 end
  if f[3] then
    local keys = key_keys(f[2])
    if redis.call('HGET', keys, f[3]) == id then redis.call('HDEL', keys, f[3]) end
  end
  if f[4] then redis.call('DEL', key_children(id)) end
  redis.call('DEL', k)
  counter:add(f[2], state, -1, f[5])
  return 1
end

-- Whether enqueue.lua refuses jobs past a queue's stored max_depth: fire_schedule.lua, which
-- ends with enqueue.lua, turns it off (a schedule's tick is never refused, on every backend).
local enqueue_checks_stored_depth = true

