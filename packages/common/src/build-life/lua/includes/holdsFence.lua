--[[
  Whether the writer holding fencing token `token` may write to a build whose record has attempt `attempt` (HMGET's
  false when the field is missing): it holds the current token, or it is an unfenced writer ('', such as the reaper).
]]
local function holdsFence(token, attempt)
  return token == '' or (attempt or '0') == token
end
