--[[
  Ends a build once: records the terminal state, appends it to the event stream, releases the ref's dedupe lock
  (only if it is still ours), drops the build from the live set and starts the retention clock. A fenced caller
  (ARGV[8], the attempt's token) ends it only if no newer attempt took over. Bumps the token, so no attempt writes
  after the end; returns the new token (the ender's right to upload a pending log), or 0.

  KEYS[1] record   KEYS[2] event stream   KEYS[3] the ref's dedupe lock   KEYS[4] live set
  KEYS[5] the ref's last build   KEYS[6] counters   KEYS[7] event channel
  ARGV[1] build id   ARGV[2] terminal state   ARGV[3] message   ARGV[4] now (unix s)   ARGV[5] retention (ms)
  ARGV[6] event stream TTL (ms)   ARGV[7] log pending ('1' or '0')   ARGV[8] fencing token ('' for none)
]]
--- @include "isTerminal"
--- @include "holdsFence"
local h = redis.call('HMGET', KEYS[1], 'state', 'attempt')
if h[1] == false or isTerminal(h[1]) then return 0 end
if not holdsFence(ARGV[8], h[2]) then return 0 end
local token = redis.call('HINCRBY', KEYS[1], 'attempt', 1)
redis.call('HSET', KEYS[1], 'state', ARGV[2], 'message', ARGV[3], 'finishedAt', ARGV[4], 'logPending', ARGV[7])
redis.call('XADD', KEYS[2], '*', 's', ARGV[2], 'm', ARGV[3])
if redis.call('GET', KEYS[3]) == ARGV[1] then redis.call('DEL', KEYS[3]) end
redis.call('ZREM', KEYS[4], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
redis.call('PEXPIRE', KEYS[2], ARGV[6])
redis.call('SET', KEYS[5], ARGV[1], 'PX', ARGV[5])
redis.call('HINCRBY', KEYS[6], ARGV[2], 1)
redis.call('PUBLISH', KEYS[7], ARGV[2])
return token
