-- Argo CD health check for ingest.vfxt.dev/IngestJob.
-- Install: resource.customizations.health.ingest.vfxt.dev_IngestJob in argocd-cm (docs/gitops.md).
-- Reads the kstatus conditions the operator writes (Ready, Reconciling, Stalled) and status.phase:
--   Healthy      the requested run finished (Ready=True, phase Succeeded)
--   Degraded     the run failed or cannot go on without a change (Stalled=True, phase Failed)
--   Suspended    spec.suspend holds the run (Ready=False, reason Suspended)
--   Progressing  anything else: not yet seen by the operator, scanning, copying, verifying
-- Written for Argo CD's Lua 5.1 (gopher-lua): no integer division, no goto, no os/io.
local hs = {}

local function condition(status, type_)
  if status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == type_ then
      return c
    end
  end
  return nil
end

local function progress_text(status)
  local parts = {}
  if status.phase ~= nil then
    table.insert(parts, status.phase)
  end
  if status.progress ~= nil and status.progress.percentText ~= nil then
    table.insert(parts, status.progress.percentText)
  end
  if status.shards ~= nil and status.shards.total ~= nil then
    table.insert(parts, tostring(status.shards.succeeded or 0) .. "/" .. tostring(status.shards.total) .. " shards")
  end
  return table.concat(parts, ", ")
end

local function with_failures(msg, status)
  if status.failedFiles ~= nil and status.failedFiles > 0 then
    return msg .. " (" .. tostring(status.failedFiles) .. " files failed; see status.failures)"
  end
  return msg
end

if obj.status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the vfxt-ingest operator to pick up the IngestJob"
  return hs
end
local status = obj.status

-- A status written for an older generation says nothing about the current spec.
local generation = obj.metadata and obj.metadata.generation
if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end

local stalled = condition(status, "Stalled")
if (stalled ~= nil and stalled.status == "True") or status.phase == "Failed" then
  hs.status = "Degraded"
  local why = (stalled and stalled.message) or status.message or "the run failed"
  if stalled ~= nil and stalled.reason ~= nil then
    why = stalled.reason .. ": " .. why
  end
  hs.message = with_failures(why, status)
  return hs
end

local ready = condition(status, "Ready")
if ready ~= nil and ready.status == "False" and ready.reason == "Suspended" then
  hs.status = "Suspended"
  hs.message = ready.message or "suspended (spec.suspend)"
  return hs
end
local reconciling = condition(status, "Reconciling")
local busy = reconciling ~= nil and reconciling.status == "True"
if not busy and ((ready ~= nil and ready.status == "True") or (ready == nil and status.phase == "Succeeded")) then
  hs.status = "Healthy"
  hs.message = with_failures(status.message or "Succeeded", status)
  return hs
end

hs.status = "Progressing"
local text = progress_text(status)
if reconciling ~= nil and reconciling.message ~= nil and reconciling.message ~= "" then
  text = text .. " - " .. reconciling.message
elseif status.message ~= nil then
  text = text .. " - " .. status.message
end
if text == "" then
  text = "Reconciling"
end
hs.message = text
return hs
