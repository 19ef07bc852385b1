-- Builds a ComfyUI text-to-image workflow from a job's input. Attach it to a model
-- served by a comfyui provider, with the template next to it:
--
--   [[models]]
--   name = "sdxl"
--   script = "comfyui_txt2img.lua"
--   workflow = "txt2img.json"
--
-- POST /v1/jobs {"model":"sdxl","input":{"prompt":"a lighthouse","size":"768x512","n":2}}
-- or POST /v1/images/generations {"model":"sdxl","prompt":"a lighthouse","async":true}.
-- req.body is the client's request ({model, input}); req.workflow the template. The hook
-- returns req with req.workflow filled in, or nil, status, message to refuse.

local MAX_SIDE = 2048

-- "WxH" -> width, height (multiples of 8, as the latent space needs)
local function parse_size(size)
  if size == nil then return nil end
  local w, h = string.match(size, "^(%d+)x(%d+)$")
  if not w then return nil end
  w, h = tonumber(w), tonumber(h)
  if w < 64 or h < 64 or w > MAX_SIDE or h > MAX_SIDE then return nil end
  return w - w % 8, h - h % 8
end

function on_request(req)
  local input = req.body.input
  local prompt = input.prompt
  if type(prompt) ~= "string" or #prompt == 0 then
    return nil, 400, "input.prompt (the text to draw) is required"
  end
  local wf = req.workflow
  if wf == nil then return nil, 500, "model has no workflow template" end

  wf["6"].inputs.text = prompt
  wf["7"].inputs.text = input.negative_prompt or "blurry, low quality"

  if input.size ~= nil then
    local w, h = parse_size(input.size)
    if not w then return nil, 400, "input.size must be WxH between 64 and " .. MAX_SIDE end
    wf["5"].inputs.width, wf["5"].inputs.height = w, h
  end
  local n = input.n or 1
  if type(n) ~= "number" or n < 1 or n > 8 then return nil, 400, "input.n must be 1 to 8" end
  wf["5"].inputs.batch_size = math.floor(n)

  if input.steps ~= nil then wf["3"].inputs.steps = math.max(1, math.min(150, math.floor(input.steps))) end
  -- A given seed reproduces an image; otherwise one derived from the job id.
  local seed = input.seed
  if seed == nil then
    seed = 0
    for i = 1, #req.job_id do seed = (seed * 31 + string.byte(req.job_id, i)) % 2147483647 end
  end
  wf["3"].inputs.seed = seed
  wf["9"].inputs.filename_prefix = "lowart_" .. req.job_id

  req.workflow = wf
  return req
end
