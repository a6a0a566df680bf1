-- index_queue_done: the upgrade to key layout 2, one chunk at a time: index the finished jobs
-- of P:done:S (layout 1) in their queue's P:q:Q:done:S as well. Idempotent (ZADD).
--
-- KEYS[1]  prefix
-- ARGV     state, start, count (a range of P:done:S by rank)
-- Keys     P:done:S (ZRANGE), P:job:N (HGET queue), P:q:Q:done:S (ZADD)
-- Returns  how many entries the range held (less than count: the last chunk).

local state, start, count = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local entries = redis.call('ZRANGE', key_done(state), start, start + count - 1, 'WITHSCORES')
local by_queue = {}
for i = 1, #entries, 2 do
  local id, finished = entries[i], entries[i + 1]
  local queue = redis.call('HGET', key_job(id), 'queue')
  if queue then
    local q = by_queue[queue]
    if not q then
      q = {}
      by_queue[queue] = q
    end
    q[#q + 1] = finished
    q[#q + 1] = id
  end
end
for queue, items in pairs(by_queue) do bulk('ZADD', key_queue_done(queue, state), items) end
return #entries / 2
