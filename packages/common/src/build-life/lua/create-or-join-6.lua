--[[
  Creates the build of a ref unless one is already queued or running; returns {created, id}.
  The active key's TTL is a safety net only: the worker deletes it when the build ends.

  KEYS[1] the ref's dedupe lock   KEYS[2] the new build's record   KEYS[3] the ref's last build
  KEYS[4] live set                KEYS[5] counters                 KEYS[6] recent index
  ARGV[1] build id   ARGV[2] ref   ARGV[3] base ref   ARGV[4] now (unix s)   ARGV[5] log object key
  ARGV[6] triggered by   ARGV[7] lock TTL (ms)   ARGV[8] retention (ms)
  ARGV[9] record key prefix: the joined build's record shares the hash tag, so it lives in the declared keys' slot
  ARGV[10] deadline (unix ms)   ARGV[11] recent index cap   ARGV[12] the creating span's W3C traceparent, or ''
]]
local existing = redis.call('GET', KEYS[1])
if existing and redis.call('EXISTS', ARGV[9] .. existing) == 1 then
  redis.call('HINCRBY', KEYS[5], 'deduplicated', 1)
  return {0, existing}
end
local id = ARGV[1]
redis.call('HSET', KEYS[2], 'id', id, 'ref', ARGV[2], 'baseRef', ARGV[3], 'state', 'queued', 'startedAt', ARGV[4],
  'message', '', 'logKey', ARGV[5], 'triggeredBy', ARGV[6], 'attempt', 0, 'deadlineAt', ARGV[10], 'traceparent', ARGV[12])
redis.call('SET', KEYS[1], id, 'PX', ARGV[7])
redis.call('SET', KEYS[3], id, 'PX', ARGV[8])
redis.call('ZADD', KEYS[4], ARGV[4], id)
redis.call('HINCRBY', KEYS[5], 'started', 1)
redis.call('ZADD', KEYS[6], ARGV[4], id)
redis.call('ZREMRANGEBYRANK', KEYS[6], 0, -1 - tonumber(ARGV[11]))
return {1, id}
