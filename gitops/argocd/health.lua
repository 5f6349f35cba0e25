-- Argo CD health check for divbase.io/DivBaseDatabase (resource.customizations.health.divbase.io_DivBaseDatabase).
-- Reads the kstatus conditions divbase-operator writes (Ready, Reconciling, Stalled, each with observedGeneration):
--   Degraded     Stalled=True: a step failed (expand/contract Job, deploy deadline, refused downgrade, bad spec);
--                the message is the operator's, with the Job's error. Needs a fix or the retry annotation.
--   Suspended    spec.paused (phase Paused), or the rollout waits for a manual contract approval
--                (Ready=False, reason AwaitingContractApproval): nothing will move until a person acts, which is
--                neither progress nor failure. The new release is already serving at that point.
--   Progressing  no status yet, status of an older generation, Reconciling=True, or any other not-yet-Ready state.
--   Healthy      Ready=True for the current generation.
local hs = {}

local function condition(conditions, kind)
  if conditions == nil then
    return nil
  end
  for _, c in ipairs(conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

local function text(c, fallback)
  if c ~= nil and c.message ~= nil and c.message ~= "" then
    return c.message
  end
  return fallback
end

if obj.status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for divbase-operator to report status"
  return hs
end

local status = obj.status
local generation = obj.metadata and obj.metadata.generation or nil
if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for divbase-operator to observe the latest spec"  -- no number: Lua 5.1 and 5.4 print floats differently
  return hs
end

local conditions = status.conditions
local ready = condition(conditions, "Ready")
local reconciling = condition(conditions, "Reconciling")
local stalled = condition(conditions, "Stalled")

if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = text(stalled, "Stalled")
  return hs
end

if status.phase == "Paused" then
  hs.status = "Suspended"
  hs.message = text(reconciling, "spec.paused is true")
  return hs
end

if ready ~= nil and ready.status == "False" and ready.reason == "AwaitingContractApproval" then
  hs.status = "Suspended"
  hs.message = text(ready, "Waiting for contract approval")
  return hs
end

if reconciling ~= nil and reconciling.status == "True" then
  hs.status = "Progressing"
  hs.message = text(reconciling, "Reconciling")
  return hs
end

if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = text(ready, "Ready")
  return hs
end

hs.status = "Progressing"
hs.message = text(ready, "Waiting for Ready")
return hs
