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
--     promised order (priority, then run_at, then enqueue order) holds exactly.

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
  return setmetatable({deltas = {}}, Counter)
end

function Counter:add(queue, field, delta)
  local per_queue = self.deltas[queue]
  if per_queue == nil then
    per_queue = {}
    self.deltas[queue] = per_queue
  end
  per_queue[field] = (per_queue[field] or 0) + delta
end

function Counter:flush()
  for queue, fields in pairs(self.deltas) do
    local key = key_counts(queue)
    for field, delta in pairs(fields) do
      if delta ~= 0 then redis.call('HINCRBY', key, field, delta) end
    end
  end
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

-- Put a queued job where it waits (see the top of this file). Returns its new stream entry
-- id, or nil when it went to the waiting set. Idle workers are woken when it is due (unless
-- quiet) or the earliest of its set; an entry appended to a stream wakes them by itself.
local function place(id, queue, priority, run_at, now, quiet)
  local at = tonumber(run_at)
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

-- Fields every transition out of running reads; nil unless the job is running under token.
local HELD = {'state', 'lease_token', 'queue', 'priority', 'entry', 'attempt', 'deliveries',
              'defers', 'error_type'}
local function held(id, token)
  local f = redis.call('HMGET', key_job(id), unpack(HELD))
  if f[1] ~= 'running' or f[2] ~= token then return nil end
  return {queue = f[3], priority = f[4], entry = f[5], attempt = num(f[6]),
          deliveries = num(f[7]), defers = num(f[8]), failed = f[9] ~= false}
end

-- A job leaving running for queued: its entry goes, it waits again at run_at.
local function put_back(id, job, run_at, now, dropper, quiet)
  local k = key_job(id)
  dropper:add(job.queue, job.priority, job.entry)
  redis.call('HDEL', k, 'lease_token', 'lease_expires_at', 'entry')
  local entry = place(id, job.queue, job.priority, run_at, now, quiet)
  if entry then redis.call('HSET', k, 'entry', entry) end
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
  counter:add(job.queue, 'running', -1)
  counter:add(job.queue, state, 1)
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
  local f = redis.call('HMGET', k, 'state', 'queue', 'key')
  if f[1] ~= state then return 0 end
  if f[3] then
    local keys = key_keys(f[2])
    if redis.call('HGET', keys, f[3]) == id then redis.call('HDEL', keys, f[3]) end
  end
  redis.call('DEL', k)
  counter:add(f[2], state, -1)
  return 1
end

-- Whether enqueue.lua refuses jobs past a queue's stored max_depth: fire_schedule.lua, which
-- ends with enqueue.lua, turns it off (a schedule's tick is never refused, on every backend).
local enqueue_checks_stored_depth = true
