-- Adapts an upstream that speaks a protocol of its own (Hugging Face text-generation-
-- inference style: POST /generate {"inputs", "parameters"} -> {"generated_text"}) to the
-- OpenAI chat API. Attach it to the provider:
--
--   [[providers]]
--   name = "tgi"
--   kind = "openai"
--   base_url = "http://127.0.0.1:8080"
--   script = "tgi_adapter.lua"
--
-- Clients then call /v1/chat/completions (or /v1/messages) as usual.

-- Flattens the chat into one prompt: "role: text" lines, then "assistant:".
local function prompt_of(messages)
  local lines = {}
  for _, m in ipairs(messages or {}) do
    local text = m.content
    if type(text) == "table" then -- content parts: keep the text ones
      local parts = {}
      for _, p in ipairs(text) do
        if p.type == "text" then parts[#parts + 1] = p.text end
      end
      text = table.concat(parts, " ")
    end
    lines[#lines + 1] = m.role .. ": " .. tostring(text or "")
  end
  lines[#lines + 1] = "assistant:"
  return table.concat(lines, "\n")
end

function on_request(req)
  local body = req.body
  if body.stream then
    return nil, 400, "this model does not stream; send stream: false"
  end
  req.path = "/generate"
  req.body = {
    inputs = prompt_of(body.messages),
    parameters = {
      max_new_tokens = body.max_tokens or 256,
      temperature = body.temperature,
      stop = body.stop,
    },
  }
  req.headers = { ["x-adapter"] = "tgi_adapter.lua" }
  return req
end

function on_response(resp)
  if resp.status ~= 200 or type(resp.body) ~= "table" then
    -- Errors keep their status; the body becomes OpenAI's error envelope.
    local message = type(resp.body) == "table" and resp.body.error or resp.text or "upstream error"
    resp.body = { error = { message = tostring(message), type = "upstream_error" } }
    return resp
  end
  local details = resp.body.details or {}
  local prompt_tokens = details.prompt_tokens or 0
  local completion_tokens = details.generated_tokens or 0
  resp.body = {
    id = "chatcmpl-" .. resp.request_id,
    object = "chat.completion",
    created = 0,
    model = resp.model,
    choices = { {
      index = 0,
      message = { role = "assistant", content = resp.body.generated_text },
      finish_reason = details.finish_reason == "length" and "length" or "stop",
    } },
    usage = {
      prompt_tokens = prompt_tokens,
      completion_tokens = completion_tokens,
      total_tokens = prompt_tokens + completion_tokens,
    },
  }
  return resp
end
