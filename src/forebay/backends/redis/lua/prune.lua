-- prune: delete finished jobs past their retention (and their idempotency keys).
--
-- KEYS[1]  prefix
-- ARGV     completed_before, dead_before, cancelled_before, limit
-- Keys     P:done:S (ZRANGEBYSCORE finished_at < cut-off, ZREM), P:job:N (DEL), P:jobs (ZREM),
--          P:q:Q:keys (HDEL), P:q:Q:counts (HINCRBY)
-- Returns  how many jobs were deleted.

local cutoffs = {{'completed', ARGV[1]}, {'dead', ARGV[2]}, {'cancelled', ARGV[3]}}
local left = tonumber(ARGV[4])
local counter, total = new_counter(), 0
for _, cut in ipairs(cutoffs) do
  if left <= 0 then break end
  local done = key_done(cut[1])
  local ids = redis.call('ZRANGEBYSCORE', done, '-inf', '(' .. cut[2], 'LIMIT', 0, left)
  if #ids > 0 then
    local deleted = {}
    for _, id in ipairs(ids) do
      if delete_job(id, cut[1], counter) == 1 then deleted[#deleted + 1] = id end
    end
    bulk('ZREM', done, ids)
    if #deleted > 0 then bulk('ZREM', key_jobs(), deleted) end
    total = total + #deleted
    left = left - #ids
  end
end
counter:flush()
return total
