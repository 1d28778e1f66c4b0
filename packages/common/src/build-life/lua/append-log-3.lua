--[[
  Appends a log chunk starting at byte ARGV[3] of the log, for the attempt holding fencing token ARGV[1] ('' for an
  unfenced writer such as the reaper), and trims the stream's older entries below id ARGV[4] ('*': all before this
  one; '': none). A stale attempt, or any writer after the build ended, writes nothing: 0. Else the new entry's id.

  KEYS[1] record   KEYS[2] event stream   KEYS[3] event channel
  ARGV[1] fencing token   ARGV[2] text   ARGV[3] byte offset   ARGV[4] trim below
]]
--- @include "isTerminal"
--- @include "holdsFence"
local h = redis.call('HMGET', KEYS[1], 'state', 'attempt')
if h[1] == false or isTerminal(h[1]) then return 0 end
if not holdsFence(ARGV[1], h[2]) then return 0 end
local id = redis.call('XADD', KEYS[2], '*', 'l', ARGV[2], 'o', ARGV[3])
if ARGV[4] == '*' then redis.call('XTRIM', KEYS[2], 'MINID', id)
elseif ARGV[4] ~= '' then redis.call('XTRIM', KEYS[2], 'MINID', ARGV[4]) end
redis.call('PUBLISH', KEYS[3], 'l')
return id
