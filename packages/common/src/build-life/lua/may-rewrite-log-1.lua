--[[
  Whether the attempt holding fencing token ARGV[1] may still write the log object: it holds the current token, and
  the build is live or ended by that very attempt with its upload pending. 1 or 0.

  KEYS[1] record   ARGV[1] fencing token ('' for none)
]]
--- @include "isTerminal"
--- @include "holdsFence"
local h = redis.call('HMGET', KEYS[1], 'state', 'attempt', 'logPending')
if h[1] == false then return 0 end
if not holdsFence(ARGV[1], h[2]) then return 0 end
if isTerminal(h[1]) and h[3] ~= '1' then return 0 end
return 1
