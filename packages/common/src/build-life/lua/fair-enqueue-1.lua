--[[
  A new build joins its caller's line; returns its rank: 1 + the caller's builds queued or running before it.

  KEYS[1] the caller's builds (sorted set)
  ARGV[1] record key prefix   ARGV[2] build id   ARGV[3] now (unix ms)   ARGV[4] TTL of the set (ms)
]]
--- @include "callerBacklog"
local _, live = callerBacklog(KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return live + 1
