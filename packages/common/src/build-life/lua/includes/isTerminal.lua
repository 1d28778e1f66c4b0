--[[
  Whether a build state is final: no script moves a build out of it, and no attempt writes after it.
  TERMINAL_STATES is the set of state.ts, written at the top of every script when it is loaded (scripts.ts).
]]
local function isTerminal(state)
  return TERMINAL_STATES[state] == true
end
