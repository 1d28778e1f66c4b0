--[[
  A caller's builds waiting for a slot, and queued or running: {queued, live}.

  KEYS[1] the caller's builds (sorted set)
  ARGV[1] record key prefix
]]
--- @include "callerBacklog"
local queued, live = callerBacklog(KEYS[1], ARGV[1])
return {queued, live}
