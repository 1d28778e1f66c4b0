--[[
  A caller's builds still queued or running, from its sorted set of build ids (KEYS[1] of the fair-share scripts).
  Ids of builds that ended or expired are dropped on the way, so no path that ends a build has to remember the set.
  `recordPrefix` + id is a build's record. Returns queued, queued + running.
]]
local function callerBacklog(set, recordPrefix)
  local queued, live = 0, 0
  for _, id in ipairs(redis.call('ZRANGE', set, 0, -1)) do
    local st = redis.call('HGET', recordPrefix .. id, 'state')
    if st == 'queued' then queued = queued + 1; live = live + 1
    elseif st == 'running' then live = live + 1
    else redis.call('ZREM', set, id) end
  end
  return queued, live
end
