--[[
  Notes when a stage began; the first mark of an attempt wins. Never recreates a record that is gone (expired or
  lost): that hash would have no TTL.

  KEYS[1] record   ARGV[1] field (buildAt, pushAt)   ARGV[2] now (unix ms)
]]
if redis.call('EXISTS', KEYS[1]) == 1 then return redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) end
return 0
