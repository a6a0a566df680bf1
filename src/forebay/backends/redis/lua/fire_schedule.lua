-- fire_schedule: one step of a schedule, atomically: the compare-and-set of its last tick,
-- then the enqueue of the tick's jobs. The script's source is this file followed by
-- enqueue.lua, which stores the jobs: both happen in one script, or neither.
--
-- KEYS[1]  prefix
-- ARGV     now, JSON jobs as for enqueue.lua (one call, no max_depth), name, after (the last
--          tick the scheduler read; '' for none), tick (the new last tick)
-- Keys     P:schedules (HEXISTS), P:schedule_ticks (HGET/HSET), and enqueue.lua's
-- Returns  'stale' (nothing changed: another process fired it first, or the schedule is
--          gone), else enqueue.lua's answer

local schedule_name, schedule_after, schedule_tick = ARGV[3], ARGV[4], ARGV[5]
if redis.call('HEXISTS', key_schedules(), schedule_name) == 0 then
  return 'stale'
end
local stored_tick = redis.call('HGET', key_schedule_ticks(), schedule_name)
if schedule_after == '' then
  if stored_tick then return 'stale' end
else
  -- ticks cross as exact decimal strings; compared as numbers, to the microsecond
  if not stored_tick or math.abs(tonumber(stored_tick) - tonumber(schedule_after)) >= 1e-6 then
    return 'stale'
  end
  if tonumber(schedule_tick) <= tonumber(schedule_after) then return 'stale' end
end
redis.call('HSET', key_schedule_ticks(), schedule_name, schedule_tick)
enqueue_checks_stored_depth = false  -- a tick is never refused by a max_depth
