--[[
  Keeps the ref's dedupe lock for as long as its build lives (only if the lock is still this build's).

  KEYS[1] the ref's dedupe lock   ARGV[1] build id   ARGV[2] TTL (ms)
]]
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
