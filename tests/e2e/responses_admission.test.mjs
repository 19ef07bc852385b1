// What the Responses API route (POST /v1/responses) shares with the chat route, end to end:
// fallback before the first byte between passthrough and translated deployments, reasoning
// items passed back in `input`, /metrics, and Lua hooks (a model script sees and changes the
// request and the answer in the client's protocol, and the stored response is what the
// client got). Same gateway and upstreams as responses.test.mjs (responses_fixture.mjs).

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fsp from 'node:fs/promises';
import path from 'node:path';
import {
  api, cleanupAll, metricValue, mockReset, mockStats, parseMetrics, startGateway, tempDir, waitFor,
} from './harness.mjs';
import {
  TEXT_STREAM, UPSTREAMS, assertWellFormed, client, foldedTypes, gw, key, mock, rawStream, startResponsesGateway, usageRows, weather, words,
} from './responses_fixture.mjs';

before(startResponsesGateway);
after(cleanupAll);

// Fallback before the first byte: the first deployment (lowart-mock's mock-fail-500: a 500
// before any byte) fails, the next one answers — passed through or translated, whichever the
// failed one was — and the client sees only the answer. The breakers of this file's gateway
// never open ([breaker] min_requests), so the failing deployment is really asked every time.
describe('fallback before the first byte (passthrough <-> translated)', () => {
  const FALLBACKS = [
    { model: 'resp-then-chat', failed: 'rs', answered: 'oa/mock-model', path: /\/v1\/chat\/completions$/ },
    { model: 'resp-then-claude', failed: 'rs', answered: 'an/claude-mock', path: /\/v1\/messages$/ },
    { model: 'chat-then-resp', failed: 'oa', answered: 'rs/mock-model', path: /\/v1\/responses$/ },
    { model: 'claude-then-resp', failed: 'an', answered: 'rs/mock-model', path: /\/v1\/responses$/ },
    // a fallback model (fallbacks = ["claude"]) rather than a second deployment
    { model: 'resp-then-model-claude', failed: 'rs', answered: 'an/claude-mock', path: /\/v1\/messages$/ },
  ];
  const columns = 'route, model, deployment, status, stream, prompt_tokens, completion_tokens';

  /** Both upstream requests went out: the failing one first (mock-fail-500), then the answering one. */
  async function assertBothAsked(fb) {
    const stats = await mockStats(mock);
    const answeredModel = fb.answered.split('/')[1];
    assert.equal(stats.requests, 2, `${fb.model}: one failed attempt and one answer (${JSON.stringify(stats.by_model)})`);
    assert.equal(stats.by_model['mock-fail-500'], 1, `${fb.model}: the failing deployment was asked`);
    assert.equal(stats.by_model[answeredModel], 1, `${fb.model}: ${fb.answered} answered`);
    assert.match(stats.last_path, fb.path);
  }

  for (const fb of FALLBACKS) {
    test(`JSON: ${fb.failed}/mock-fail-500 fails, ${fb.answered} answers (${fb.model})`, async () => {
      await mockReset(mock);
      const input = `fall back for ${fb.model}`;
      const res = await client().responses.create({ model: fb.model, input, max_output_tokens: 64 }).withResponse();
      const r = res.data;
      assert.equal(r.status, 'completed');
      assert.equal(r.output_text, `mock reply: ${input}`);
      assert.equal(r.usage.output_tokens, words(r.output_text));
      assert.equal(res.response.headers.get('x-lowart-deployment'), fb.answered);
      assert.equal(res.response.headers.get('x-lowart-fallbacks'), '1');
      await assertBothAsked(fb);
      const row = await usageRows(res.response.headers.get('x-request-id'), columns);
      assert.deepEqual(row, {
        route: 'responses', model: fb.model, deployment: fb.answered, status: 200, stream: 0,
        prompt_tokens: r.usage.input_tokens, completion_tokens: r.usage.output_tokens,
      });
      // Stored as answered, by the deployment that answered.
      assert.deepEqual((await client().responses.retrieve(r.id)).output, r.output);
    });

    test(`streamed: ${fb.failed}/mock-fail-500 fails, ${fb.answered} streams, events from sequence 0 (${fb.model})`, async () => {
      await mockReset(mock);
      const input = `stream after falling back for ${fb.model}`;
      const { status, headers, events } = await rawStream({ model: fb.model, input });
      assert.equal(status, 200);
      assert.equal(headers.get('x-lowart-deployment'), fb.answered);
      assert.equal(headers.get('x-lowart-fallbacks'), '1');
      assertWellFormed(events);
      // Nothing of the failed attempt reached the client: one response, created once, completed.
      assert.deepEqual(foldedTypes(events), TEXT_STREAM, events.map((e) => e.event).join(' '));
      assert.equal(events.filter((e) => e.event === 'response.created').length, 1);
      const text = events.filter((e) => e.event === 'response.output_text.delta').map((e) => e.data.delta).join('');
      assert.equal(text, `mock reply: ${input}`);
      const completed = events.at(-1).data.response;
      assert.equal(completed.status, 'completed');
      assert.equal(completed.id, events[0].data.response.id);
      assert.equal(completed.output[0].content[0].text, text);
      await assertBothAsked(fb);
      const row = await usageRows(headers.get('x-request-id'), columns);
      assert.deepEqual(row, {
        route: 'responses', model: fb.model, deployment: fb.answered, status: 200, stream: 1,
        prompt_tokens: completed.usage.input_tokens, completion_tokens: completed.usage.output_tokens,
      });
      assert.equal(completed.usage.output_tokens, words(text));
    });
  }
});

// Reasoning items, as the openai client replays them (its output items sent back as input):
// an upstream that speaks Responses gets them as they are; Chat Completions and Anthropic
// have no place for them, so translation drops them (and their summaries) and answers.
describe('reasoning items passed back in input', () => {
  const REASONING = { type: 'reasoning', id: 'rs_replayed_1', summary: [] };
  const ASSISTANT = {
    type: 'message', id: 'msg_replayed_1', role: 'assistant', status: 'completed',
    content: [{ type: 'output_text', text: 'It is four.', annotations: [] }],
  };
  const replay = (question) => [{ role: 'user', content: 'What is two plus two?' }, REASONING, ASSISTANT, { role: 'user', content: question }];
  /** The reasoning item left no trace in a translated request. */
  const assertNoReasoning = (sent, what) => {
    const text = JSON.stringify(sent);
    assert.ok(!text.includes('rs_replayed') && !text.includes('rs_tool') && !text.includes('"reasoning"') &&
      !text.includes('call the tool first') && !text.includes('opaque-reasoning'), `${what}: ${text}`);
  };

  for (const up of UPSTREAMS) {
    test(`a reasoning item before an assistant message, ${up.kind} upstream: JSON, streamed, and again from the store`, async () => {
      await mockReset(mock);
      const question = 'And three plus three?';
      const r = await client().responses.create({ model: up.model, input: replay(question) });
      assert.equal(r.status, 'completed');
      assert.equal(r.output_text, `mock reply: ${question}`);
      let stats = await mockStats(mock);
      assert.match(stats.last_path, up.path);
      let sent = JSON.parse(stats.last_body);
      if (up.kind === 'responses') {
        assert.deepEqual(sent.input, [
          { type: 'message', role: 'user', content: 'What is two plus two?' },
          REASONING,
          ASSISTANT,
          { type: 'message', role: 'user', content: question },
        ]);
      } else if (up.kind === 'chat') {
        assert.deepEqual(sent.messages, [
          { role: 'user', content: 'What is two plus two?' },
          { role: 'assistant', content: 'It is four.' },
          { role: 'user', content: question },
        ]);
        assertNoReasoning(sent, 'chat request');
      } else {
        const text = (t) => [{ type: 'text', text: t }];
        assert.deepEqual(sent.messages, [
          { role: 'user', content: text('What is two plus two?') },
          { role: 'assistant', content: text('It is four.') },
          { role: 'user', content: text(question) },
        ]);
        assertNoReasoning(sent, 'messages request');
      }

      const { status, events } = await rawStream({ model: up.model, input: replay('Stream five plus five?') });
      assert.equal(status, 200);
      assertWellFormed(events);
      assert.deepEqual(foldedTypes(events), TEXT_STREAM);
      assert.equal(events.at(-1).data.response.output[0].content[0].text, 'mock reply: Stream five plus five?');
      if (up.kind === 'responses') assert.deepEqual(JSON.parse((await mockStats(mock)).last_body).input[1], REASONING);
      else assertNoReasoning(JSON.parse((await mockStats(mock)).last_body), `${up.kind} stream request`);

      // The stored conversation holds the reasoning item: continued, it goes along again (or not).
      const next = await client().responses.create({ model: up.model, previous_response_id: r.id, input: 'One more?' });
      assert.equal(next.status, 'completed');
      assert.equal(next.output_text, 'mock reply: One more?');
      stats = await mockStats(mock);
      sent = JSON.parse(stats.last_body);
      if (up.kind === 'responses') {
        assert.deepEqual(sent.input[1], REASONING);
        assert.equal(sent.input.length, 6, JSON.stringify(sent.input)); // 4 replayed + the answer + 'One more?'
      } else {
        assertNoReasoning(sent, `${up.kind} continued request`);
        assert.deepEqual(sent.messages.map((m) => m.role), ['user', 'assistant', 'user', 'assistant', 'user']);
      }
    });

    test(`a reasoning item (summary, encrypted_content) before a function call, ${up.kind} upstream`, async () => {
      await mockReset(mock);
      const reasoning = {
        type: 'reasoning', id: 'rs_tool_1', summary: [{ type: 'summary_text', text: 'I should call the tool first.' }],
        encrypted_content: 'opaque-reasoning-blob',
      };
      const call = { type: 'function_call', id: 'fc_replayed_1', call_id: 'call_replayed_1', name: 'get_weather', arguments: '{"text":"Oslo"}', status: 'completed' };
      const input = [
        { role: 'user', content: 'What is the weather in Oslo?' }, reasoning, call,
        { type: 'function_call_output', call_id: 'call_replayed_1', output: 'sunny and mild' },
      ];
      const r = await client().responses.create({ model: up.model, input, tools: [weather] });
      assert.equal(r.status, 'completed');
      assert.equal(r.output_text, 'mock reply: tool said sunny and mild');
      const sent = JSON.parse((await mockStats(mock)).last_body);
      if (up.kind === 'responses') {
        assert.deepEqual(sent.input[1], reasoning);
        assert.deepEqual(sent.input[2], call);
      } else if (up.kind === 'chat') {
        assertNoReasoning(sent, 'chat request');
        assert.deepEqual(sent.messages.slice(1), [
          { role: 'assistant', content: null, tool_calls: [{ id: 'call_replayed_1', type: 'function', function: { name: 'get_weather', arguments: '{"text":"Oslo"}' } }] },
          { role: 'tool', tool_call_id: 'call_replayed_1', content: 'sunny and mild' },
        ]);
      } else {
        assertNoReasoning(sent, 'messages request');
        assert.deepEqual(sent.messages.slice(1), [
          { role: 'assistant', content: [{ type: 'tool_use', id: 'call_replayed_1', name: 'get_weather', input: { text: 'Oslo' } }] },
          { role: 'user', content: [{ type: 'tool_result', tool_use_id: 'call_replayed_1', content: 'sunny and mild' }] },
        ]);
      }
    });
  }
});

// Metrics: /v1/responses requests count under the route label the route table gives them
// ("responses", net/routing.cpp), not "chat" whose machinery serves them, and their tokens
// and fallbacks under the model the client asked for.
describe('metrics of /v1/responses', () => {
  test('http_requests_total / http_request_duration_seconds{route="responses"}, gateway_tokens_total{model}, fallbacks', async () => {
    const scrape = async () => parseMetrics((await api(gw, 'GET', '/metrics', { key: null })).text);
    const before = await scrape();
    const delta = (samples, name, labels) => metricValue(samples, name, labels) - metricValue(before, name, labels);
    const tokens = {};
    for (const up of UPSTREAMS) {
      const r = await client().responses.create({ model: up.model, input: `count me on ${up.kind}` });
      const s = await rawStream({ model: up.model, input: `count my stream on ${up.kind} please` });
      assert.equal(s.status, 200);
      const u = s.events.at(-1).data.response.usage;
      tokens[up.model] = { prompt: r.usage.input_tokens + u.input_tokens, completion: r.usage.output_tokens + u.output_tokens };
      assert.ok(tokens[up.model].prompt > 0 && tokens[up.model].completion > 0);
    }
    const failed = await api(gw, 'POST', '/v1/responses', { key, body: { model: 'resp-fail', input: 'fail me' } });
    assert.equal(failed.status, 500);
    const fell = await api(gw, 'POST', '/v1/responses', { key, body: { model: 'resp-then-chat', input: 'fall back once' } });
    assert.equal(fell.status, 200);

    // A request is counted once its answer is written: wait for the last one to land.
    let after;
    await waitFor(async () => {
      after = await scrape();
      return delta(after, 'http_request_duration_seconds_count', { route: 'responses' }) >= 8;
    }, { what: 'the responses requests in /metrics' });
    assert.equal(delta(after, 'http_requests_total', { route: 'responses', status: '200' }), 7);
    assert.equal(delta(after, 'http_requests_total', { route: 'responses', status: '500' }), 1);
    assert.equal(delta(after, 'http_request_duration_seconds_count', { route: 'responses' }), 8);
    assert.equal(delta(after, 'http_requests_total', { route: 'chat' }), 0, 'not counted as chat');
    assert.equal(delta(after, 'http_requests_total', { route: 'messages' }), 0, 'not counted as messages');
    for (const up of UPSTREAMS) {
      assert.equal(delta(after, 'gateway_tokens_total', { model: up.model, type: 'prompt' }), tokens[up.model].prompt, up.model);
      assert.equal(delta(after, 'gateway_tokens_total', { model: up.model, type: 'completion' }), tokens[up.model].completion, up.model);
    }
    assert.equal(delta(after, 'gateway_tokens_total', { model: 'resp-then-chat', type: 'completion' }), fell.json.usage.output_tokens);
    assert.equal(delta(after, 'gateway_fallbacks_total', { model: 'resp-then-chat' }), 1);
    assert.equal(delta(after, 'gateway_upstream_requests_total', { deployment: 'rs/mock-fail-500', status: '500' }), 2);
    assert.equal(delta(after, 'gateway_upstream_requests_total', { deployment: 'rs/mock-model', status: '200' }), 2);
  });
});

// Lua hooks on /v1/responses: one model script on a model per upstream kind, on a gateway of
// its own (scripts change every request's path). What each hook did shows in what the mock
// got (/mock/stats), what the client got, and gateway_script_calls_total.
const RESPONSES_HOOKS = `
function on_request(req)
  if req.body.user == "hook-refuse" then return nil, 403, "refused by the responses hook" end
  if req.body.user == "hook-shape" then
    return nil, 418, "input=" .. type(req.body.input) .. " instructions=" .. type(req.body.instructions) ..
      " messages=" .. type(req.body.messages)
  end
  if req.body.user == "hook-429" then req.headers["x-mock-mode"] = "fail-429" end
  req.body.temperature = 0.25
  return req
end

function on_response(resp)
  if resp.status == 200 and resp.body and resp.body.output then
    for _, item in ipairs(resp.body.output) do
      if item.type == "message" then
        for _, part in ipairs(item.content) do
          if part.type == "output_text" then part.text = part.text .. " [hooked " .. resp.route .. "]" end
        end
      end
    end
  end
  return resp
end

-- Sees the upstream's events before translation: Responses events, chat chunks or Anthropic events.
function on_chunk(chunk)
  local d = chunk.data
  if d.type == "response.output_text.delta" then
    d.delta = string.upper(d.delta)
  elseif d.choices and d.choices[1] and d.choices[1].delta and d.choices[1].delta.content then
    d.choices[1].delta.content = string.upper(d.choices[1].delta.content)
  elseif d.type == "content_block_delta" and d.delta.type == "text_delta" then
    d.delta.text = string.upper(d.delta.text)
  end
  return chunk
end
`;

describe('Lua hooks on /v1/responses (a model script, passthrough and translated)', () => {
  const HOOKED = [
    { model: 'hooked-resp', kind: 'responses', upstream: 'mock-model', path: /\/v1\/responses$/ },
    { model: 'hooked-chat', kind: 'chat', upstream: 'mock-model', path: /\/v1\/chat\/completions$/ },
    { model: 'hooked-claude', kind: 'anthropic', upstream: 'claude-mock', path: /\/v1\/messages$/ },
  ];
  let hgw;
  const post = (body) => api(hgw, 'POST', '/v1/responses', { body });
  const scriptCalls = async (hook) => metricValue(parseMetrics((await api(hgw, 'GET', '/metrics', { key: null })).text),
    'gateway_script_calls_total', { script: 'responses_hooks.lua', hook, outcome: 'ok' });

  before(async () => {
    const dir = await tempDir();
    const scripts = path.join(dir, 'scripts');
    await fsp.mkdir(scripts);
    await fsp.writeFile(path.join(scripts, 'responses_hooks.lua'), RESPONSES_HOOKS);
    const provider = (name, kind, extra = '') => `
[[providers]]
name = "${name}"
kind = "${kind}"
base_url = "${mock.url}/v1"
${extra}
`;
    hgw = await startGateway({
      config: `
[scripts]
dir = "${scripts}"
poll_ms = 50
${provider('rs', 'openai', 'responses = true')}
${provider('oa', 'openai')}
${provider('an', 'anthropic')}
${HOOKED.map((h) => `
[[models]]
name = "${h.model}"
script = "responses_hooks.lua"
[[models.deployments]]
provider = "${{ responses: 'rs', chat: 'oa', anthropic: 'an' }[h.kind]}"
model = "${h.upstream}"
`).join('')}
`,
    });
  });

  for (const h of HOOKED) {
    test(`on_request runs and its body change reaches the ${h.kind} upstream`, async () => {
      await mockReset(mock);
      const calls = await scriptCalls('on_request');
      const r = await post({ model: h.model, input: 'hook my request', temperature: 0.9 });
      assert.equal(r.status, 200, r.text);
      assert.equal(await scriptCalls('on_request'), calls + 1, 'on_request ran once');
      const stats = await mockStats(mock);
      assert.match(stats.last_path, h.path);
      const sent = JSON.parse(stats.last_body);
      assert.equal(sent.temperature, 0.25,
        `${h.kind}: on_request set temperature 0.25 (the client sent 0.9); the upstream got ${stats.last_body}`);
    });

    test(`on_request's headers go to the ${h.kind} upstream`, async () => {
      await mockReset(mock);
      // The hook adds x-mock-mode: fail-429 — the mock answers 429 (retry-after 1) only if it got it.
      const r = await post({ model: h.model, input: 'hook my headers', user: 'hook-429' });
      assert.equal(r.status, 429, r.text);
      assert.equal(r.headers.get('retry-after'), '1');
      const stats = await mockStats(mock);
      assert.equal(stats.requests, 1);
      assert.match(stats.last_path, h.path);
    });

    test(`on_response changes the Response object the client gets, ${h.kind} upstream`, async () => {
      const calls = await scriptCalls('on_response');
      const r = await post({ model: h.model, input: 'answer me' });
      assert.equal(r.status, 200, r.text);
      assert.equal(r.json.object, 'response');
      assert.equal(r.json.status, 'completed');
      assert.equal(r.json.output[0].content[0].text, 'mock reply: answer me [hooked responses]');
      assert.equal(await scriptCalls('on_response'), calls + 1, 'on_response ran once');
    });

    test(`on_chunk changes the streamed text, ${h.kind} upstream`, async () => {
      const { status, events } = await rawStream({ model: h.model, input: 'stream through the hook' }, hgw.masterKey, hgw);
      assert.equal(status, 200);
      assertWellFormed(events);
      assert.deepEqual(foldedTypes(events), TEXT_STREAM);
      const text = events.filter((e) => e.event === 'response.output_text.delta').map((e) => e.data.delta).join('');
      assert.equal(text, 'MOCK REPLY: STREAM THROUGH THE HOOK');
    });
  }

  test('an on_request refusal answers in OpenAI\'s envelope before any upstream is asked', async () => {
    for (const h of HOOKED) {
      await mockReset(mock);
      const r = await post({ model: h.model, input: 'refuse me', user: 'hook-refuse' });
      assert.equal(r.status, 403, h.kind);
      assert.equal(r.json.error.code, 'rejected_by_script');
      assert.match(r.json.error.message, /refused by the responses hook/);
      assert.equal((await mockStats(mock)).requests, 0, h.kind);
    }
  });

  // docs/scripts.md: a model's script "runs on this model's requests, in the client's
  // protocol" — for /v1/responses that is a Responses request (input, instructions).
  test('on_request sees the request in the client\'s protocol (Responses: input, instructions)', async () => {
    const seen = {};
    for (const h of HOOKED) {
      const r = await post({ model: h.model, input: 'what do you see', instructions: 'Be brief.', user: 'hook-shape' });
      assert.equal(r.status, 418, r.text);
      seen[h.kind] = r.json.error.message;
    }
    const want = 'input=string instructions=string messages=nil';
    assert.deepEqual(seen, { responses: want, chat: want, anthropic: want });
  });

  // docs/responses.md: GET /v1/responses/{id} "returns it as answered".
  test('a response changed by on_response is stored as the client got it', async () => {
    const answered = {};
    const stored = {};
    for (const h of HOOKED) {
      const r = await post({ model: h.model, input: 'store the hooked answer' });
      assert.equal(r.status, 200, r.text);
      answered[h.kind] = r.json.output[0].content[0].text;
      const got = await api(hgw, 'GET', `/v1/responses/${r.json.id}`);
      assert.equal(got.status, 200, got.text);
      stored[h.kind] = got.json.output[0].content[0].text;
    }
    assert.equal(answered.chat, 'mock reply: store the hooked answer [hooked responses]');
    assert.deepEqual(stored, answered);
  });
});
