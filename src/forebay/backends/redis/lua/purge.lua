-- purge: delete dead jobs (and their idempotency keys).
--
-- KEYS[1]  prefix
-- ARGV     JSON [id, ...] (chosen by the caller's filter; only dead ones are deleted)
-- Keys     P:job:N (DEL), P:jobs + P:done:dead (ZREM), P:q:Q:keys (HDEL),
--          P:q:Q:counts (HINCRBY)
-- Returns  how many jobs were deleted.

local counter, deleted = new_counter(), {}
for _, id in ipairs(cjson.decode(ARGV[1])) do
  if delete_job(id, 'dead', counter) == 1 then deleted[#deleted + 1] = id end
end
if #deleted > 0 then
  bulk('ZREM', key_jobs(), deleted)
  bulk('ZREM', key_done('dead'), deleted)
end
counter:flush()
return #deleted
