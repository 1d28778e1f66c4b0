--[[
  Someone asks to cancel the build: record who (first asker only) and tell every worker; the one running it aborts
  it. A second request finds the first's name and publishes again (a worker that missed the first hears it now). An
  ended build is left alone. One script, so a cancel and the build's own end never both win the record.
  Returns {'gone'}, {'ended', state, message}, {'again', state, first asker} or {'requested', state}.

  KEYS[1] record   KEYS[2] cancel channel
  ARGV[1] who asks   ARGV[2] now (unix ms)   ARGV[3] the notice (JSON {id, by})
]]
--- @include "isTerminal"
local h = redis.call('HMGET', KEYS[1], 'state', 'cancelledBy', 'message')
if h[1] == false then return {'gone'} end
local ended = isTerminal(h[1])
if h[2] then
  if not ended then redis.call('PUBLISH', KEYS[2], ARGV[3]) end
  return {'again', h[1], h[2]}
end
if ended then return {'ended', h[1], h[3] or ''} end
redis.call('HSET', KEYS[1], 'cancelledBy', ARGV[1], 'cancelAt', ARGV[2])
redis.call('PUBLISH', KEYS[2], ARGV[3])
return {'requested', h[1]}
