--[[
  Whether a worker may run the build: its caller holds fewer than the limit of slots (a build keeps its slot across
  pick-ups). Slots of builds no longer queued or running are freed on the way. Returns 1 (taken or held) or 0.

  KEYS[1] the caller's running builds (set)
  ARGV[1] build id   ARGV[2] limit   ARGV[3] record key prefix   ARGV[4] TTL of the set (ms)
]]
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 1 then return 1 end
local n = 0
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local st = redis.call('HGET', ARGV[3] .. id, 'state')
  if st == 'queued' or st == 'running' then n = n + 1 else redis.call('SREM', KEYS[1], id) end
end
if n >= tonumber(ARGV[2]) then return 0 end
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
