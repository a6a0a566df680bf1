-- lease: queued -> running for up to LIMIT due jobs of one queue, best first.
--
-- KEYS[1]  prefix
-- ARGV     queue, limit, worker_id, lease_token, now, lease_expires_at
-- Keys     P:q:Q:settings (HGET paused: nothing is leased), P:q:Q:levels (ZREVRANGE: priorities high to low); per level P:q:Q:waiting:R (due
--          members: ZRANGEBYSCORE, ZREM) and P:q:Q:stream:R (XINFO GROUPS + XRANGE to peek
--          at the entries' run_at, XREADGROUP '>' as consumer leased to take);
--          P:job:N (HGETALL/HSET/HDEL), P:leases (ZADD), P:q:Q:counts (HINCRBY), P:run:I
--          (HINCRBY, for a job of a run)
--          With flow limits or lanes: P:q:Q:heads:R (ZRANGEBYSCORE, ZREM, ZADD), P:q:Q:lane:L
--          (ZRANGE, ZREM), P:q:Q:lanes (SMEMBERS with fairness, SREM), P:q:Q:buckets,
--          P:q:Q:served, P:q:Q:running_keys (HGET/HMGET/HSET/HINCRBY)
-- Returns  JSON [[id, fields], ...]: the leased jobs (the plain path); with flow limits or
--          lanes, JSON {"jobs": [[id, fields], ...], "until": when a rate frees a token for
--          jobs held back by it, as text, or null}.
--
-- Order: higher priority first; within a priority, earlier run_at, then lower id. A stream's
-- undelivered entries are already in that order, and so is the waiting set: the two are
-- merged. When nothing waits in the set (the usual case) a level is a plain XREADGROUP.
--
-- A queue with stored flow limits, or with jobs in lanes, takes the flow path (lease_flow):
-- the candidates are the due prefix of each level (merged as above) and of each lane whose
-- keys are not blocked, and the jobs taken are chosen as forebay.flow.plan does.

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
  if attempt > 0 then counter:add(queue, 'retrying', -1, f.tenant) end
  if f.tenant then
    counter:add_tenant(f.tenant, queue, 'queued', -1)
    counter:add_tenant(f.tenant, queue, 'running', 1)
  end
  if f.concurrency_key then
    redis.call('HINCRBY', key_running_keys(queue), f.concurrency_key, 1)
  end
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

-- The due jobs of a level in (run_at, id) order, at most need: the stream's undelivered
-- heads merged with the waiting set's due members. Each is {id, run_at, member} (member:
-- the waiting set's, nil for a stream entry).
local function level_candidates(priority, need)
  local stream = key_stream(queue, priority)
  local heads = {}
  if redis.call('EXISTS', stream) == 1 then
    heads = redis.call('XRANGE', stream, '(' .. last_delivered(stream), '+', 'COUNT', need)
  end
  local due = redis.call('ZRANGEBYSCORE', key_waiting(queue, priority), '-inf', now,
                         'WITHSCORES', 'LIMIT', 0, need)
  local items, i, j = {}, 1, 1
  while #items < need do
    local head, member = heads[i], due[2 * j - 1]
    if head == nil and member == nil then break end
    if head ~= nil and not head[2] then
      i = i + 1  -- an entry without fields: nothing to lease
    else
      local take_member = head == nil
      local head_id, head_at
      if head ~= nil then head_id, head_at = tonumber(head[2][2]), tonumber(head[2][4]) end
      if member ~= nil and head ~= nil then
        local at = tonumber(due[2 * j])
        take_member = at < head_at or (at == head_at and tonumber(member) < head_id)
      end
      if take_member then
        items[#items + 1] = {id = unzid(member), run_at = tonumber(due[2 * j]), member = member}
        j = j + 1
      else
        items[#items + 1] = {id = head[2][2], run_at = head_at}
        i = i + 1
      end
    end
  end
  return items
end

-- The flow path: forebay.flow.plan over the due prefixes of the levels and of the unblocked
-- lanes, then each job chosen is taken from where it waits.
local function lease_flow(limits)
  local now_n = tonumber(now)
  local state = flow_reader(queue, now_n)
  local room, wait = flow_budget(queue, limits, state, limit, now_n)
  if room <= 0 then return {}, wait end
  local per_key_rate, cap = limits.rate_per_key, limits.concurrency_per_key
  local keyed = per_key_rate ~= nil or cap ~= nil  -- whether admission looks at the keys

  -- Best first: effective priority (aging), then run_at, then id. A candidate is a table
  -- {effective, run_at, id_n, ...}: a level's job (id, member, level), a lane's job (member,
  -- src: its lane) or a lane head (opens: the lane, member, score), made only when it is
  -- its source's next, so a lease makes about one per job it looks at.
  local aging = limits.aging_s
  local function effective(priority, run_at)
    if aging and now_n > run_at then return priority + math.floor((now_n - run_at) / aging) end
    return priority
  end
  local function better(a, b)
    if a.effective ~= b.effective then return a.effective > b.effective end
    if a.run_at ~= b.run_at then return a.run_at < b.run_at end
    return a.id_n < b.id_n
  end

  -- The sources of candidates, each in best-first order, `cur` its next candidate (nil: not
  -- made yet, or none left), `pos` the position of that candidate:
  --   * a level: its due prefix (stream heads merged with the waiting set), read at once;
  --   * a lane (P:q:Q:lane:L): its members read in rank order a few at a time (due or not:
  --     the one after the jobs taken is the lane's new head; `ended` once a read came back
  --     short), at most `need` of them offered (no more can start);
  --   * a level's lane heads (P:q:Q:heads:R; with fairness, those of one fair key), read a
  --     few at a time. A lane head is its lane's first job: when it comes first, its lane
  --     opens as a source holding that job. So a lease reads the lanes it takes from (and
  --     the blocked ones it passes), not every lane of the queue, and a lane it takes one
  --     job from costs one read.
  local function lane_source(lane, parts, priority)
    local rate_key, concurrency_key = false, false
    local need = room
    if keyed then
      parts = parts or {lane_parts(lane)}
      rate_key, concurrency_key = parts[3], parts[4]
      local blocked = lane_blocked(limits, state, rate_key, concurrency_key, now_n)
      if blocked == 'rate' then
        need = 1  -- its head is held back, and says when its key frees a token
      elseif blocked == 'cap' then
        need = 0
      else
        if per_key_rate and rate_key then
          need = math.min(need, rate_available(per_key_rate, state:tat(rate_key), now_n))
        end
        if cap and concurrency_key then
          need = math.min(need, cap - state:running_of(concurrency_key))
        end
      end
      if need <= 0 then return nil end
    end
    return {lane = lane, priority = priority, rate_key = rate_key,
            concurrency_key = concurrency_key, need = need, m = {}, pos = 1, ended = false}
  end

  -- The buckets and running counts of the keys of lanes (their lane_parts) read at once.
  local function prefetch(parts)
    local rate_keys, concurrency_keys = {}, {}
    for _, p in ipairs(parts) do
      if per_key_rate and p[3] then rate_keys[#rate_keys + 1] = p[3] end
      if cap and p[4] then concurrency_keys[#concurrency_keys + 1] = p[4] end
    end
    if #rate_keys > 0 or #concurrency_keys > 0 then state:prefetch(rate_keys, concurrency_keys) end
  end

  local function heads_source(priority, fair_key)
    return {heads = key_heads(queue, priority), priority = tonumber(priority), fair = fair_key,
            due = {}, parts = {}, pos = 1, read = 0, done = false}
  end

  local sources, priorities = {}, redis.call('ZREVRANGE', key_levels(queue), 0, -1)
  for _, priority in ipairs(priorities) do
    local items, p = {}, tonumber(priority)
    for _, c in ipairs(level_candidates(priority, room)) do
      items[#items + 1] = {effective = effective(p, c.run_at), run_at = c.run_at,
                           id_n = tonumber(c.id), id = c.id, member = c.member, level = priority}
    end
    if #items > 0 then
      sources[#sources + 1] = {items = items, pos = 1}
    end
    if not limits.fair then sources[#sources + 1] = heads_source(priority, nil) end
  end
  -- With fairness, each fair key's lanes, opened when the key's turn first comes.
  local lanes_of, lane_count = {}, 0
  if limits.fair then
    local find, sub = string.find, string.sub
    for _, lane in ipairs(redis.call('SMEMBERS', key_lanes(queue))) do
      -- the fair key: between the lane's first two NULs (lane_parts)
      local a = find(lane, '\0', 1, true)
      local k = sub(lane, a + 1, find(lane, '\0', a + 1, true) - 1)
      local of = lanes_of[k]
      if of == nil then
        of = {}
        lanes_of[k] = of
      end
      of[#of + 1] = lane
      lane_count = lane_count + 1
    end
  end

  -- A heads source's next lane head: the next batch of heads read when these are used up
  -- (with per-key limits, the buckets and running counts of their lanes' keys at once).
  local function heads_next(src)
    while true do
      local k = 2 * src.pos - 1
      if k > #src.due then
        if src.done then return nil end
        local count = math.max(16, src.read)
        local due = redis.call('ZRANGEBYSCORE', src.heads, '-inf', now, 'WITHSCORES',
                               'LIMIT', src.read, count)
        src.read = src.read + #due / 2
        if #due < 2 * count then src.done = true end
        src.due, src.pos, src.parts, k = due, 1, {}, 1
        if keyed or src.fair then
          local parts, fetch = src.parts, {}
          for j = 1, #due, 2 do
            local p = {lane_parts(string.sub(due[j], 16))}
            parts[(j + 1) / 2] = p
            if src.fair == nil or (p[2] or '') == src.fair then fetch[#fetch + 1] = p end
          end
          if keyed then prefetch(fetch) end
        end
        if #due == 0 then return nil end
      end
      local p = src.parts[src.pos]
      if src.fair == nil or (p[2] or '') == src.fair then
        local member, score = src.due[k], src.due[k + 1]
        local first, at = string.sub(member, 1, 15), tonumber(score)
        return {effective = effective(src.priority, at), run_at = at, id_n = tonumber(first),
                opens = string.sub(member, 16), parts = p, member = first, score = score}
      end
      src.pos = src.pos + 1
    end
  end

  -- A lane source's next job: a few more members read when these are used up (twice what
  -- it read, and one past its `need`: the lane's new head once they are taken).
  local function lane_next(src)
    local pos = src.pos
    if pos > src.need then return nil end
    local k, m = 2 * pos - 1, src.m
    if k > #m then
      if src.ended then return nil end
      local n = #m / 2
      local count = math.min(src.need - n, math.max(1, n)) + 1
      src.key = src.key or key_lane(queue, src.lane)
      local got = redis.call('ZRANGE', src.key, n, n + count - 1, 'WITHSCORES')
      if #got < 2 * count then src.ended = true end
      for j = 1, #got do m[#m + 1] = got[j] end
      if k > #m then return nil end
    end
    local at = tonumber(m[k + 1])
    if at > now_n then return nil end
    return {effective = effective(src.priority, at), run_at = at, id_n = tonumber(m[k]),
            member = m[k], src = src}
  end

  -- A source's next candidate (nil: none left).
  local function head(src)
    if src.cur == nil then
      if src.items then
        src.cur = src.items[src.pos]
      elseif src.heads then
        src.cur = heads_next(src)
      else
        src.cur = lane_next(src)
      end
    end
    return src.cur
  end

  -- Sources in a binary heap by their next candidate: the best candidate overall is on top.
  local function push(heap, src)
    local c = head(src)
    if c == nil then return end
    heap[#heap + 1] = src
    local i = #heap
    while i > 1 do
      local parent = math.floor(i / 2)
      if not better(c, heap[parent].cur) then break end
      heap[i], heap[parent] = heap[parent], heap[i]
      i = parent
    end
  end
  local function pop(heap)
    local top, n = heap[1], #heap
    heap[1] = heap[n]
    heap[n] = nil
    n = n - 1
    local i = 1
    while true do
      local l, r, best = 2 * i, 2 * i + 1, i
      if l <= n and better(heap[l].cur, heap[best].cur) then best = l end
      if r <= n and better(heap[r].cur, heap[best].cur) then best = r end
      if best == i then break end
      heap[i], heap[best] = heap[best], heap[i]
      i = best
    end
    return top
  end

  -- The per-key limits within this lease (flow._Admission), for a lane's job.
  local tokens, running, spent, held = {}, {}, {}, {}
  local function admit(src)
    local key = src.rate_key
    if per_key_rate and key then
      local left = tokens[key]
      if left == nil then
        left = rate_available(per_key_rate, state:tat(key), now_n)
        tokens[key] = left
      end
      if left <= 0 then
        local tat = rate_spend(per_key_rate, state:tat(key), now_n, spent[key] or 0)
        local at = rate_free_at(per_key_rate, tat, now_n)
        held[#held + 1] = at
        return false
      end
    end
    local ckey = src.concurrency_key
    if cap and ckey then
      local n = running[ckey] or state:running_of(ckey)
      if n >= cap then return false end
      running[ckey] = n + 1
    end
    if per_key_rate and key then
      tokens[key] = tokens[key] - 1
      spent[key] = (spent[key] or 0) + 1
    end
    return true
  end

  -- The best candidate of a heap that may start, taken off it (nil: none). A lane whose
  -- candidate is refused leaves the heap: its other jobs have the same keys, refused too.
  local function next_admitted(heap)
    while #heap > 0 do
      local src = pop(heap)
      local c = src.cur
      src.pos, src.cur = src.pos + 1, nil
      if src.heads then
        -- a lane head: its lane opens holding it, and it is the best candidate there is
        push(heap, src)
        local lane = lane_source(c.opens, c.parts, src.priority)
        if lane then
          lane.m[1], lane.m[2], lane.pos = c.member, c.score, 2
          c.src = lane
          if not keyed or admit(lane) then
            push(heap, lane)
            return c
          end
        end
      else
        local lane = c.src
        local ok = lane == nil or not keyed or admit(lane)
        if ok or lane == nil then push(heap, src) end
        if ok then return c end
      end
    end
    return nil
  end

  local chosen = {}
  if not limits.fair then
    local heap = {}
    for _, src in ipairs(sources) do push(heap, src) end
    while #chosen < room do
      local c = next_admitted(heap)
      if c == nil then break end
      chosen[#chosen + 1] = c
    end
  else
    -- The fair keys take turns, one job each per round, least recently served first
    -- (never served: first; ties by key text, no key first). flow._take_turns.
    -- A key's lanes are read only when its turn comes: a lease that fills up in the first
    -- round reads the lanes of the keys it serves (and of those it found nothing in).
    local groups, turns = {}, {}
    for k in pairs(lanes_of) do turns[#turns + 1] = k end
    if #sources > 0 and lanes_of[''] == nil then turns[#turns + 1] = '' end
    local served_key = key_served(queue)
    local marks = {}
    for i = 1, #turns, 1000 do
      local slice = {unpack(turns, i, math.min(i + 999, #turns))}
      local stored = redis.call('HMGET', served_key, unpack(slice))
      for j, k in ipairs(slice) do marks[k] = tonumber(stored[j]) or -math.huge end
    end
    local function group(k)
      local heap = groups[k]
      if heap == nil then
        heap = {}
        groups[k] = heap
        if k == '' then
          for _, src in ipairs(sources) do push(heap, src) end  -- the levels: no fair key
        end
        local lanes = lanes_of[k] or {}
        if #lanes > 16 and 4 * #lanes >= lane_count then
          -- many lanes, a good share of all: their heads in order, read as they are needed
          for _, priority in ipairs(priorities) do push(heap, heads_source(priority, k)) end
        else
          local parts = {}
          for i, lane in ipairs(lanes) do parts[i] = {lane_parts(lane)} end
          if keyed then prefetch(parts) end
          for i, lane in ipairs(lanes) do
            local src = lane_source(lane, parts[i], tonumber(parts[i][1]))
            if src then push(heap, src) end
          end
        end
      end
      return heap
    end
    -- The first round takes the keys in order from a heap of them, as far as it gets (a
    -- lease over many keys fills up after its first few); later rounds go over the keys
    -- the first one left with jobs, in the same order.
    local function before(a, b)
      if marks[a] ~= marks[b] then return marks[a] < marks[b] end
      return a < b
    end
    local n = #turns
    local function sift(i)
      while true do
        local l, r, best = 2 * i, 2 * i + 1, i
        if l <= n and before(turns[l], turns[best]) then best = l end
        if r <= n and before(turns[r], turns[best]) then best = r end
        if best == i then return end
        turns[i], turns[best] = turns[best], turns[i]
        i = best
      end
    end
    for i = math.floor(n / 2), 1, -1 do sift(i) end
    local last_served, order = {}, 0
    local function serve(k)
      local heap = group(k)
      local c = next_admitted(heap)
      if c ~= nil then
        chosen[#chosen + 1] = c
        order = order + 1
        last_served[k] = order
      end
      return #heap > 0
    end
    local still = {}
    while #chosen < room and n > 0 do
      local k = turns[1]
      turns[1], turns[n] = turns[n], nil
      n = n - 1
      sift(1)
      if serve(k) then still[#still + 1] = k end
    end
    turns = still
    while #chosen < room and #turns > 0 do
      still = {}
      for _, k in ipairs(turns) do
        local more = (groups[k] or {})[1] ~= nil
        if #chosen < room then more = serve(k) end
        if more then still[#still + 1] = k end
      end
      turns = still
    end
    -- Later marks for keys served later in this lease, in the order last served.
    local served = {}
    for k, n in pairs(last_served) do served[#served + 1] = {k, n} end
    table.sort(served, function(a, b) return a[2] < b[2] end)
    local marks_new = {}
    for n, pair in ipairs(served) do
      marks_new[#marks_new + 1] = pair[1]
      marks_new[#marks_new + 1] = time_text(now_n + (n - 1) * 1e-6)
    end
    if #marks_new > 0 then bulk('HSET', served_key, marks_new) end
  end

  -- Take each job chosen from where it waits, in the order chosen. A lane gives up the
  -- first jobs it holds (a lane's jobs are taken in order, and a refused one closes it), so
  -- its new head is the member read after them (or the lane is empty): each level's heads
  -- and the lanes set change in one call each.
  local from_stream, from_set = {}, {}
  local lanes_taken, taken_of = {}, {}
  for _, c in ipairs(chosen) do
    local src = c.src
    if src then
      if taken_of[src] == nil then
        taken_of[src] = 0
        lanes_taken[#lanes_taken + 1] = src
      end
      taken_of[src] = taken_of[src] + 1
    elseif c.member then
      local zkey = key_waiting(queue, c.level)
      from_set[zkey] = from_set[zkey] or {}
      table.insert(from_set[zkey], c.member)
    else
      from_stream[c.level] = (from_stream[c.level] or 0) + 1
    end
  end
  for zkey, members in pairs(from_set) do bulk('ZREM', zkey, members) end
  local heads_gone, heads_new, emptied = {}, {}, {}
  for _, src in ipairs(lanes_taken) do
    local n, m = taken_of[src], src.m
    local key = src.key or key_lane(queue, src.lane)
    local heads = key_heads(queue, src.priority)
    local after, after_score = m[2 * n + 1], m[2 * n + 2]
    if after == nil and not src.ended then
      local next_member = redis.call('ZRANGE', key, n, n, 'WITHSCORES')
      after, after_score = next_member[1], next_member[2]
    end
    local gone = {}
    for k = 1, n do gone[k] = m[2 * k - 1] end
    bulk('ZREM', key, gone)
    heads_gone[heads] = heads_gone[heads] or {}
    table.insert(heads_gone[heads], m[1] .. src.lane)
    if after then
      heads_new[heads] = heads_new[heads] or {}
      table.insert(heads_new[heads], after_score)
      table.insert(heads_new[heads], after .. src.lane)
    else
      emptied[#emptied + 1] = src.lane
    end
  end
  for heads, members in pairs(heads_gone) do bulk('ZREM', heads, members) end
  for heads, pairs_ in pairs(heads_new) do bulk('ZADD', heads, pairs_) end
  if #emptied > 0 then bulk('SREM', key_lanes(queue), emptied) end
  for level, n in pairs(from_stream) do
    -- the heads chosen are the first undelivered entries: move them to the pending list
    redis.call('XREADGROUP', 'GROUP', GROUP, LEASED, 'COUNT', n, 'STREAMS',
               key_stream(queue, level), '>')
  end
  for _, c in ipairs(chosen) do
    if c.src then
      take(string.format('%d', c.id_n), tostring(c.src.priority), nil)
    else
      take(c.id, c.level, nil)
    end
  end

  local taken = #chosen
  local buckets = key_buckets(queue)
  local new_queue_tat = nil
  if taken > 0 and limits.rate then
    new_queue_tat = rate_spend(limits.rate, state:tat(''), now_n, taken)
    redis.call('HSET', buckets, '', time_text(new_queue_tat))
  end
  if per_key_rate then
    local tats = {}
    for key, n in pairs(spent) do
      tats[#tats + 1] = key
      tats[#tats + 1] = time_text(rate_spend(per_key_rate, state:tat(key), now_n, n))
    end
    if #tats > 0 then bulk('HSET', buckets, tats) end
  end
  if taken >= limit then return chosen, nil end
  -- Took less than asked: when a token frees for jobs it may have held back (flow._next_token):
  -- the keys it refused, the queue's bucket when it bounded the lease, and the rate keys this
  -- lease read that have no token (a wake-up for a key with no job left is harmless).
  local times = held
  if limits.rate and taken >= room then
    times[#times + 1] = rate_free_at(limits.rate, new_queue_tat or state:tat(''), now_n)
  end
  if per_key_rate then
    for key, tat in pairs(state.tats) do
      if key ~= '' and tat and rate_available(per_key_rate, tat, now_n) <= 0 then
        times[#times + 1] = rate_free_at(per_key_rate, tat, now_n)
      end
    end
  end
  local later, earliest = nil, nil
  for _, t in ipairs(times) do
    if t > now_n + FLOW_SLACK_S and (later == nil or t < later) then later = t end
    if earliest == nil or t < earliest then earliest = t end
  end
  return chosen, later or earliest
end

local function finish_lease()
  if #leases > 0 then
    bulk('ZADD', key_leases(), leases)
    counter:add(queue, 'queued', -#out)
    counter:add(queue, 'running', #out)
  end
  counter:flush()
  stale:flush()
end

-- A paused queue leases nothing (operator controls).
local settings = redis.call('HMGET', key_settings(queue), 'paused', 'limits')
if settings[1] == '1' then return '[]' end

if settings[2] or redis.call('EXISTS', key_lanes(queue)) == 1 then
  local _, wait = lease_flow(flow_limits(settings[2]) or {})
  finish_lease()
  local until_text = 'null'
  if wait ~= nil then until_text = '"' .. time_text(wait) .. '"' end
  return '{"jobs":' .. json_array(out) .. ',"until":' .. until_text .. '}'
end

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
