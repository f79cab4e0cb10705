-- Argo CD health check for canaries.canaryctl.dev (argocd-cm key:
-- resource.customizations.health.canaryctl.dev_Canary). Lua 5.1, as Argo CD runs it.
--   Healthy      the last revision is rolled out (Initialized, Succeeded)
--   Progressing  a rollout runs, or canaryctl has not seen the latest spec yet
--   Suspended    the rollout waits for a person (paused, confirm-rollout or confirm-promotion gate)
--   Degraded     the rollout was rolled back (Failed) or the spec is invalid (InvalidSpec)
local hs = {}

local function condition(status, kind)
  for _, c in ipairs(status.conditions or {}) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

local status = obj.status
if status == nil or status.phase == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for canaryctl to initialize the canary"
  return hs
end

local generation = obj.metadata.generation
if generation ~= nil and status.observedGeneration ~= nil and status.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for canaryctl to observe generation " .. generation
  return hs
end

local invalid = condition(status, "InvalidSpec")
if invalid ~= nil and invalid.status == "True" then
  hs.status = "Degraded"
  hs.message = "InvalidSpec: " .. (invalid.message or "")
  return hs
end

local phase = status.phase
local detail = phase
local weight = tonumber(status.canaryWeight) or 0
if weight > 0 then
  detail = detail .. ", canary weight " .. weight .. "%"
end
if status.message ~= nil and status.message ~= "" then
  detail = detail .. ": " .. status.message
end
hs.message = detail

if phase == "Failed" then
  hs.status = "Degraded"
elseif phase == "Succeeded" or phase == "Initialized" or phase == "Terminated" then
  hs.status = "Healthy"
elseif phase == "Waiting" or phase == "WaitingPromotion" or (phase == "Progressing" and status.paused == true) then
  hs.status = "Suspended"
else
  hs.status = "Progressing"
end
return hs
