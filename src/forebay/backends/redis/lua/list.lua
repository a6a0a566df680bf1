-- list: jobs matching a filter, newest first, a bounded slice of candidates per call.
--
-- KEYS[1]  prefix
-- ARGV     mode, output, limit, cursor, budget, JSON filter, JSON candidates
--          mode 'scan': walk P:jobs from id < cursor ('+inf' to start) downwards, at most
--                       budget ids; mode 'ids': test the candidate ids given, in order.
--          output 'jobs' answers [id, fields] items, 'ids' answers ids.
--          filter = [queue, state, error_type, since, until, run_id, tenant], false for "any";
--          since/until bound updated_at: since <= updated_at < until.
-- Keys     P:jobs (ZREVRANGEBYSCORE), P:job:N (HMGET/HGETALL)
-- Returns  JSON [next cursor ('' when no candidate is left), item, ...]

local mode, output, limit, cursor = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local budget = tonumber(ARGV[5])
local flt = cjson.decode(ARGV[6])
local queue, state, error_type, run_id, tenant = flt[1], flt[2], flt[3], flt[6], flt[7]
local since, before = flt[4] and tonumber(flt[4]), flt[5] and tonumber(flt[5])

local function matches(id)
  local f = redis.call('HMGET', key_job(id), 'queue', 'state', 'error_type', 'updated_at',
                       'run_id', 'tenant')
  if not f[1] then return false end
  if queue and f[1] ~= queue then return false end
  if state and f[2] ~= state then return false end
  if error_type and f[3] ~= error_type then return false end
  if since and num(f[4]) < since then return false end
  if before and num(f[4]) >= before then return false end
  if run_id and f[5] ~= run_id then return false end
  if tenant and f[6] ~= tenant then return false end
  return true
end

local candidates
if mode == 'scan' then
  local top = cursor == '+inf' and '+inf' or '(' .. cursor
  candidates = redis.call('ZREVRANGEBYSCORE', key_jobs(), top, '-inf', 'LIMIT', 0, budget)
else
  candidates = cjson.decode(ARGV[7])
end

local out = {''}
local found, examined = 0, 0
for _, id in ipairs(candidates) do
  if found >= limit then break end
  examined = examined + 1
  if matches(id) then
    found = found + 1
    if output == 'ids' then out[#out + 1] = id else out[#out + 1] = job_reply(id) end
  end
end

if mode == 'scan' then
  if examined > 0 and (examined < #candidates or #candidates == budget) then
    out[1] = candidates[examined]
  end
else
  out[1] = tostring(examined)
end
return cjson.encode(out)
