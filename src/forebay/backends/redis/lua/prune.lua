-- prune: delete finished jobs past their retention (and their idempotency keys).
--
-- KEYS[1]  prefix
-- ARGV     completed_before, dead_before, cancelled_before, limit, JSON [only, skip] where
--          only is one queue to prune (false: every queue in P:queues but those in skip)
-- Keys     P:queues (SMEMBERS), P:q:Q:done:S (ZRANGEBYSCORE finished_at < cut-off, ZREM),
--          P:done:S (ZREM), P:job:N (DEL), P:jobs (ZREM), P:q:Q:keys (HDEL),
--          P:q:Q:counts (HINCRBY)
-- Returns  how many jobs were deleted.
--
-- Each queue's finished jobs are read from its own sets, so a queue that keeps its jobs
-- longer never stands in the way of another's. An id there whose job is gone or in another
-- state (replayed, purged) is simply dropped from the set.

local cutoffs = {{'completed', ARGV[1]}, {'dead', ARGV[2]}, {'cancelled', ARGV[3]}}
local left = tonumber(ARGV[4])
local scope = cjson.decode(ARGV[5])
local queues
if scope[1] then
  queues = {scope[1]}
else
  local skip = {}
  for _, q in ipairs(scope[2]) do skip[q] = true end
  queues = {}
  for _, q in ipairs(redis.call('SMEMBERS', key_queues())) do
    if not skip[q] then queues[#queues + 1] = q end
  end
end

local counter, total = new_counter(), 0
for _, queue in ipairs(queues) do
  for _, cut in ipairs(cutoffs) do
    if left <= 0 then break end
    local done = key_queue_done(queue, cut[1])
    local ids = redis.call('ZRANGEBYSCORE', done, '-inf', '(' .. cut[2], 'LIMIT', 0, left)
    if #ids > 0 then
      local deleted = {}
      for _, id in ipairs(ids) do
        if delete_job(id, cut[1], counter) == 1 then deleted[#deleted + 1] = id end
      end
      bulk('ZREM', done, ids)
      if #deleted > 0 then
        bulk('ZREM', key_done(cut[1]), deleted)
        bulk('ZREM', key_jobs(), deleted)
      end
      total = total + #deleted
      left = left - #ids
    end
  end
end
counter:flush()
return total
