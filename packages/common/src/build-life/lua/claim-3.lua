--[[
  A worker takes the build: unless it has ended, it becomes 'running' under a new fencing token (returned; 0 when
  the build is gone or over) and gets the deadline the reaper enforces.

  KEYS[1] record   KEYS[2] event stream   KEYS[3] event channel
  ARGV[1] deadline (unix ms)   ARGV[2] now (unix ms)
]]
--- @include "isTerminal"
local state = redis.call('HGET', KEYS[1], 'state')
if state == false or isTerminal(state) then return 0 end
local token = redis.call('HINCRBY', KEYS[1], 'attempt', 1)
redis.call('HSET', KEYS[1], 'state', 'running', 'deadlineAt', ARGV[1], 'runningAt', ARGV[2])
redis.call('HDEL', KEYS[1], 'buildAt', 'pushAt')
redis.call('XADD', KEYS[2], '*', 's', 'running', 'm', '')
redis.call('PUBLISH', KEYS[3], 's')
return token
