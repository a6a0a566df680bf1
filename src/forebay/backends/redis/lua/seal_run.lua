-- seal_run: open -> sealed; a run whose jobs all finished (or that has none) completes in the
-- same script, with its completion jobs (common.lua). Sealed or completed: unchanged.
--
-- KEYS[1]  prefix
-- ARGV     now, run id
-- Keys     P:run:I (HGET/HSET/HGETALL), and what a run's completion does (common.lua:
--          P:runs:completed, the completion jobs)
-- Returns  the run's {field, value, ...}, or nil when there is no such run.

local now, id = ARGV[1], ARGV[2]
local k = key_run(id)
local state = redis.call('HGET', k, 'state')
if not state then return false end
if state == 'open' then
  redis.call('HSET', k, 'state', 'sealed', 'sealed_at', now)
  complete_run_if_done(id, now)
end
return redis.call('HGETALL', k)
