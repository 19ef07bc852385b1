// The Anthropic Messages API and translation between the two protocols, end to end:
// the official @anthropic-ai/sdk against /v1/messages with an OpenAI-compatible upstream
// (and with an Anthropic upstream, passed through), and the official openai client
// against /v1/chat/completions with an Anthropic upstream. The upstream is lowart-mock,
// which speaks both protocols; /mock/stats shows what lowart actually sent it.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import Anthropic from '@anthropic-ai/sdk';
import { getEncoding } from 'js-tiktoken';
import { api, cleanupAll, createKey, mockReset, mockStats, sqliteQuery, sseData, startGateway, startMock, waitFor } from './harness.mjs';

let mock;
let gw;
let key;

const PROVIDER_KEY = 'sk-ant-upstream-secret';

before(async () => {
  mock = await startMock();
  const model = (name, provider, upstream) => `
[[models]]
name = "${name}"
[[models.deployments]]
provider = "${provider}"
model = "${upstream}"
`;
  gw = await startGateway({
    config: `
[[providers]]
name = "oa"
kind = "openai"
base_url = "${mock.url}/v1"
api_key = "sk-openai-upstream"

[[providers]]
name = "an"
kind = "anthropic"
base_url = "${mock.url}/v1"
api_key = "${PROVIDER_KEY}"
${model('claude-via-openai', 'oa', 'mock-model')}
${model('gpt-via-anthropic', 'an', 'claude-mock')}
${model('claude-native', 'an', 'claude-mock')}
${model('oa-mid-error', 'oa', 'mock-mid-error')}
${model('an-mid-error', 'an', 'mock-mid-error')}
${model('an-fail', 'an', 'mock-fail-500')}
${model('an-no-usage', 'an', 'mock-no-usage')}
`,
  });
  key = (await createKey(gw, { name: 'anthropic-e2e' })).key;
});

after(cleanupAll);

const anthropic = () => new Anthropic({ baseURL: gw.url, apiKey: key, maxRetries: 0, timeout: 5000 });
const words = (s) => s.split(/\s+/).filter(Boolean).length;

const weatherTool = {
  name: 'get_weather',
  description: 'Weather for a city',
  input_schema: { type: 'object', properties: { text: { type: 'string' } }, required: ['text'] },
};
const weatherFunction = {
  type: 'function',
  function: { name: 'get_weather', description: 'Weather for a city', parameters: weatherTool.input_schema },
};

async function usageRow(requestId) {
  let rows = [];
  await waitFor(async () => {
    rows = await sqliteQuery(gw.dbPath,
      `SELECT prompt_tokens, completion_tokens, cached_tokens, status, model FROM usage_records WHERE request_id = '${requestId}'`);
    return rows.length === 1;
  }, { timeoutMs: 3000, what: 'the usage record' });
  return rows[0];
}

// --- Anthropic SDK -> /v1/messages -> OpenAI-compatible upstream --------------------------------

test('Anthropic SDK: a message through an OpenAI upstream comes back as an Anthropic message', async () => {
  await mockReset(mock);
  const msg = await anthropic().messages.create({
    model: 'claude-via-openai', max_tokens: 64, system: 'Be brief.',
    messages: [{ role: 'user', content: 'Hello from the Anthropic SDK' }],
  });
  assert.equal(msg.type, 'message');
  assert.equal(msg.role, 'assistant');
  assert.equal(msg.stop_reason, 'end_turn');
  assert.deepEqual(msg.content, [{ type: 'text', text: 'mock reply: Hello from the Anthropic SDK' }]);
  assert.equal(msg.usage.output_tokens, words('mock reply: Hello from the Anthropic SDK'));
  assert.equal(msg.usage.input_tokens, words('Be brief. Hello from the Anthropic SDK'));
  // What the upstream received: OpenAI's shape, the system prompt as the first message.
  const stats = await mockStats(mock);
  assert.match(stats.last_path, /\/v1\/chat\/completions$/);
  assert.equal(stats.last_authorization, 'Bearer sk-openai-upstream');
  const sent = JSON.parse(stats.last_body);
  assert.equal(sent.model, 'mock-model');
  assert.equal(sent.max_tokens, 64);
  assert.deepEqual(sent.messages, [
    { role: 'system', content: 'Be brief.' },
    { role: 'user', content: 'Hello from the Anthropic SDK' },
  ]);
});

test('Anthropic SDK: a stream through an OpenAI upstream arrives as Anthropic events, usage included', async () => {
  const stream = anthropic().messages.stream({
    model: 'claude-via-openai', max_tokens: 64,
    messages: [{ role: 'user', content: [{ type: 'text', text: 'Stream me some words please' }] }],
  });
  let text = '';
  stream.on('text', (t) => { text += t; });
  const final = await stream.finalMessage();
  assert.equal(text, 'mock reply: Stream me some words please');
  assert.equal(final.stop_reason, 'end_turn');
  assert.equal(final.content[0].text, text);
  assert.equal(final.usage.output_tokens, words(text));
  assert.equal(final.usage.input_tokens, words('Stream me some words please'));
});

test('Anthropic SDK: tool use round trip through an OpenAI upstream (JSON and stream)', async () => {
  const client = anthropic();
  const question = { role: 'user', content: 'What is the weather in Oslo?' };
  const first = await client.messages.create({
    model: 'claude-via-openai', max_tokens: 64, tools: [weatherTool], messages: [question],
  });
  assert.equal(first.stop_reason, 'tool_use');
  const use = first.content.find((b) => b.type === 'tool_use');
  assert.ok(use, JSON.stringify(first));
  assert.equal(use.name, 'get_weather');
  assert.deepEqual(use.input, { text: 'What is the weather in Oslo?' });
  assert.match(use.id, /^call_mock_/);

  // The same turn streamed: input_json_delta pieces assemble into the same input.
  const streamed = await client.messages.stream({
    model: 'claude-via-openai', max_tokens: 64, tools: [weatherTool], messages: [question],
  }).finalMessage();
  assert.equal(streamed.stop_reason, 'tool_use');
  const streamedUse = streamed.content.find((b) => b.type === 'tool_use');
  assert.deepEqual(streamedUse.input, { text: 'What is the weather in Oslo?' });

  await mockReset(mock);
  const second = await client.messages.create({
    model: 'claude-via-openai', max_tokens: 64, tools: [weatherTool],
    messages: [question, { role: 'assistant', content: first.content },
      { role: 'user', content: [{ type: 'tool_result', tool_use_id: use.id, content: 'sunny, 21 C' }] }],
  });
  assert.equal(second.stop_reason, 'end_turn');
  assert.equal(second.content[0].text, 'mock reply: tool said sunny, 21 C');
  // The upstream saw OpenAI's tool_calls and a tool message with the matching id.
  const sent = JSON.parse((await mockStats(mock)).last_body);
  const assistant = sent.messages.find((m) => m.role === 'assistant');
  assert.equal(assistant.tool_calls[0].id, use.id);
  assert.equal(assistant.tool_calls[0].function.name, 'get_weather');
  assert.deepEqual(JSON.parse(assistant.tool_calls[0].function.arguments), use.input);
  assert.deepEqual(sent.messages.at(-1), { role: 'tool', tool_call_id: use.id, content: 'sunny, 21 C' });
  assert.deepEqual(sent.tools, [weatherFunction]);
});

test('Anthropic SDK: a mid-stream upstream error becomes an Anthropic error event', async () => {
  const stream = anthropic().messages.stream({
    model: 'oa-mid-error', max_tokens: 64, messages: [{ role: 'user', content: 'one two three four five six' }],
  });
  let text = '';
  stream.on('text', (t) => { text += t; });
  await assert.rejects(stream.finalMessage(), (e) => {
    assert.match(String(e.message), /mock mid-stream failure/);
    return true;
  });
  assert.ok(text.length > 0, 'content before the error reached the client');
});

// --- Anthropic SDK -> /v1/messages -> Anthropic upstream (passthrough) ---------------------------

test('Anthropic SDK: passthrough to an Anthropic upstream with the provider key and version', async () => {
  await mockReset(mock);
  // A version that is neither the SDK's default nor lowart's own: it must be the client's
  // that reaches the upstream, and the beta header with it.
  const client = new Anthropic({
    baseURL: gw.url, apiKey: key, maxRetries: 0, timeout: 5000,
    defaultHeaders: { 'anthropic-version': '2023-01-01', 'anthropic-beta': 'prompt-caching-2024-07-31' },
  });
  const msg = await client.messages.create({
    model: 'claude-native', max_tokens: 32, messages: [{ role: 'user', content: 'native hello' }],
  });
  assert.equal(msg.content[0].text, 'mock reply: native hello');
  assert.equal(msg.model, 'claude-mock');
  const stats = await mockStats(mock);
  assert.match(stats.last_path, /\/v1\/messages$/);
  assert.equal(stats.last_x_api_key, PROVIDER_KEY, 'the client key never reaches the upstream');
  assert.equal(stats.last_anthropic_version, '2023-01-01');
  assert.equal(stats.last_anthropic_beta, 'prompt-caching-2024-07-31');
  assert.equal(stats.last_authorization, null);
  // Without the client's header, lowart sends its default.
  await api(gw, 'POST', '/v1/messages', { key, body: { model: 'claude-native', max_tokens: 8, messages: [{ role: 'user', content: 'x' }] } });
  const plain = await mockStats(mock);
  assert.equal(plain.last_anthropic_version, '2023-06-01');
  assert.equal(plain.last_anthropic_beta, null);

  const final = await client.messages.stream({
    model: 'claude-native', max_tokens: 32, messages: [{ role: 'user', content: 'native stream words' }],
  }).finalMessage();
  assert.equal(final.content[0].text, 'mock reply: native stream words');
  assert.equal(final.usage.output_tokens, words('mock reply: native stream words'));
});

test('cache tokens: Anthropic usage maps to OpenAI prompt_tokens and is billed that way', async () => {
  await mockReset(mock);
  const system = 'You are a careful assistant with a long cached preamble of seven words';
  const body = (text) => ({
    model: 'claude-native', max_tokens: 32,
    system: [{ type: 'text', text: system, cache_control: { type: 'ephemeral' } }],
    messages: [{ role: 'user', content: text }],
  });
  // First call writes the cache, the second reads it (the mock keeps the cached texts).
  const write = await api(gw, 'POST', '/v1/messages', { key, body: body('first question') });
  assert.equal(write.status, 200, write.text);
  assert.equal(write.json.usage.cache_creation_input_tokens, words(system));
  assert.equal(write.json.usage.input_tokens, words('first question'));
  const read = await api(gw, 'POST', '/v1/messages', { key, body: body('second question here') });
  assert.equal(read.json.usage.cache_read_input_tokens, words(system));
  assert.equal(read.json.usage.cache_creation_input_tokens, 0);

  let row = await usageRow(write.headers.get('x-request-id'));
  assert.equal(row.prompt_tokens, words(system) + words('first question'), 'prompt = input + cache_creation');
  assert.equal(row.cached_tokens, 0);
  row = await usageRow(read.headers.get('x-request-id'));
  assert.equal(row.prompt_tokens, words(system) + words('second question here'), 'prompt = input + cache_read');
  assert.equal(row.cached_tokens, words(system));

  // The same through the OpenAI client (translated): prompt_tokens and cached_tokens.
  const client = gw.client(key);
  const chat = await client.chat.completions.create({
    model: 'gpt-via-anthropic',
    messages: [{ role: 'system', content: [{ type: 'text', text: system, cache_control: { type: 'ephemeral' } }] },
      { role: 'user', content: 'third one' }],
  });
  assert.equal(chat.usage.prompt_tokens, words(system) + words('third one'));
  assert.equal(chat.usage.prompt_tokens_details.cached_tokens, words(system));
  assert.equal(chat.usage.completion_tokens, words('mock reply: third one'));

  // A stream: message_start's usage plus the last message_delta's, never summed.
  const r = await api(gw, 'POST', '/v1/messages', { key, body: { ...body('streamed question'), stream: true } });
  assert.equal(r.status, 200);
  row = await usageRow(r.headers.get('x-request-id'));
  assert.equal(row.prompt_tokens, words(system) + words('streamed question'));
  assert.equal(row.cached_tokens, words(system));
  assert.equal(row.completion_tokens, words('mock reply: streamed question'));
});

test('an Anthropic stream without usage is billed with lowart\'s own count', async () => {
  const r = await api(gw, 'POST', '/v1/messages', {
    key, body: { model: 'an-no-usage', max_tokens: 32, stream: true, messages: [{ role: 'user', content: 'count these words' }] },
  });
  assert.equal(r.status, 200, r.text);
  const row = await usageRow(r.headers.get('x-request-id'));
  assert.ok(row.prompt_tokens > 0, JSON.stringify(row));
  // The relayed text counted once with the encoding that stands in for a model tiktoken
  // does not know (o200k_base): exact, not "at least" (per-delta sums over-billed).
  const expected = getEncoding('o200k_base').encode('mock reply: count these words').length;
  assert.equal(row.completion_tokens, expected, JSON.stringify(row));
});

// --- OpenAI SDK -> /v1/chat/completions -> Anthropic upstream ------------------------------------

test('OpenAI SDK: a chat completion through an Anthropic upstream', async () => {
  await mockReset(mock);
  const client = gw.client(key);
  const res = await client.chat.completions.create({
    model: 'gpt-via-anthropic', max_tokens: 50, stop: 'END',
    messages: [{ role: 'system', content: 'Be terse.' }, { role: 'user', content: 'Hello from the OpenAI SDK' }],
  });
  assert.equal(res.object, 'chat.completion');
  assert.equal(res.choices[0].message.content, 'mock reply: Hello from the OpenAI SDK');
  assert.equal(res.choices[0].finish_reason, 'stop');
  assert.equal(res.usage.prompt_tokens, words('Be terse. Hello from the OpenAI SDK'));
  const stats = await mockStats(mock);
  assert.match(stats.last_path, /\/v1\/messages$/);
  assert.equal(stats.last_x_api_key, PROVIDER_KEY);
  assert.equal(stats.last_anthropic_version, '2023-06-01');
  const sent = JSON.parse(stats.last_body);
  assert.equal(sent.model, 'claude-mock');
  assert.equal(sent.max_tokens, 50);
  assert.deepEqual(sent.stop_sequences, ['END']);
  assert.deepEqual(sent.system, [{ type: 'text', text: 'Be terse.' }]);
  assert.deepEqual(sent.messages, [{ role: 'user', content: [{ type: 'text', text: 'Hello from the OpenAI SDK' }] }]);
});

test('OpenAI SDK: a stream through an Anthropic upstream, with the usage chunk it asked for', async () => {
  const client = gw.client(key);
  const stream = await client.chat.completions.create({
    model: 'gpt-via-anthropic', stream: true, stream_options: { include_usage: true },
    messages: [{ role: 'user', content: 'stream through anthropic please' }],
  });
  let text = '';
  let finish;
  let usage;
  for await (const chunk of stream) {
    if (chunk.usage) usage = chunk.usage;
    const c = chunk.choices[0];
    if (c?.delta?.content) text += c.delta.content;
    if (c?.finish_reason) finish = c.finish_reason;
  }
  assert.equal(text, 'mock reply: stream through anthropic please');
  assert.equal(finish, 'stop');
  assert.equal(usage.completion_tokens, words(text));
  assert.equal(usage.prompt_tokens, words('stream through anthropic please'));
  assert.equal(usage.total_tokens, usage.prompt_tokens + usage.completion_tokens);
});

test('OpenAI SDK: tool call round trip through an Anthropic upstream (JSON and stream)', async () => {
  const client = gw.client(key);
  const question = { role: 'user', content: 'Weather in Lisbon?' };
  const first = await client.chat.completions.create({
    model: 'gpt-via-anthropic', tools: [weatherFunction], tool_choice: 'required', messages: [question],
  });
  const choice = first.choices[0];
  assert.equal(choice.finish_reason, 'tool_calls');
  const call = choice.message.tool_calls[0];
  assert.equal(call.type, 'function');
  assert.equal(call.function.name, 'get_weather');
  assert.deepEqual(JSON.parse(call.function.arguments), { text: 'Weather in Lisbon?' });
  assert.match(call.id, /^toolu_mock_/);

  // Streamed: the tool call's arguments arrive in pieces under index 0 (the text block
  // before it is Anthropic's index 0, but OpenAI numbers tool calls only).
  const stream = await client.chat.completions.create({
    model: 'gpt-via-anthropic', stream: true, tools: [weatherFunction], messages: [question],
  });
  const calls = [];
  let finish;
  for await (const chunk of stream) {
    const c = chunk.choices[0];
    for (const tc of c?.delta?.tool_calls ?? []) {
      calls[tc.index] ??= { id: '', name: '', arguments: '' };
      if (tc.id) calls[tc.index].id = tc.id;
      if (tc.function?.name) calls[tc.index].name = tc.function.name;
      calls[tc.index].arguments += tc.function?.arguments ?? '';
    }
    if (c?.finish_reason) finish = c.finish_reason;
  }
  assert.equal(finish, 'tool_calls');
  assert.equal(calls.length, 1);
  assert.equal(calls[0].name, 'get_weather');
  assert.deepEqual(JSON.parse(calls[0].arguments), { text: 'Weather in Lisbon?' });

  await mockReset(mock);
  const second = await client.chat.completions.create({
    model: 'gpt-via-anthropic', tools: [weatherFunction],
    messages: [question, choice.message, { role: 'tool', tool_call_id: call.id, content: 'windy, 18 C' }],
  });
  assert.equal(second.choices[0].message.content, 'mock reply: tool said windy, 18 C');
  const sent = JSON.parse((await mockStats(mock)).last_body);
  assert.deepEqual(sent.tools, [weatherTool]);
  assert.equal(sent.messages[1].role, 'assistant');
  assert.deepEqual(sent.messages[1].content.find((b) => b.type === 'tool_use'),
    { type: 'tool_use', id: call.id, name: 'get_weather', input: { text: 'Weather in Lisbon?' } });
  assert.deepEqual(sent.messages[2], { role: 'user', content: [{ type: 'tool_result', tool_use_id: call.id, content: 'windy, 18 C' }] });
});

test('OpenAI SDK: a mid-stream Anthropic error event becomes an OpenAI error', async () => {
  const client = gw.client(key);
  const stream = await client.chat.completions.create({
    model: 'an-mid-error', stream: true, messages: [{ role: 'user', content: 'one two three four five six' }],
  });
  let text = '';
  await assert.rejects((async () => {
    for await (const chunk of stream) text += chunk.choices[0]?.delta?.content ?? '';
  })(), (e) => {
    assert.match(String(e.message), /mock mid-stream failure/);
    return true;
  });
  assert.ok(text.length > 0);
});

test('upstream errors come back in the client protocol\'s envelope', async () => {
  const r = await api(gw, 'POST', '/v1/chat/completions', { key, body: { model: 'an-fail', messages: [{ role: 'user', content: 'x' }] } });
  assert.equal(r.status, 500);
  assert.equal(typeof r.json.error.message, 'string');
  assert.ok(r.json.error.message.length > 0);
  assert.ok('param' in r.json.error && 'code' in r.json.error, r.text);
  assert.equal(r.json.type, undefined, 'not the Anthropic envelope');

  const m = await api(gw, 'POST', '/v1/messages', {
    key, body: { model: 'an-fail', max_tokens: 5, messages: [{ role: 'user', content: 'x' }] },
  });
  assert.equal(m.status, 500);
  assert.equal(m.json.type, 'error');
  assert.equal(m.json.error.type, 'api_error');
});

// --- lowart's own answers on the Anthropic endpoints ---------------------------------------------

test('/v1/messages refuses in Anthropic\'s envelope: bad JSON, no key, unknown model, limits', async () => {
  const bad = await api(gw, 'POST', '/v1/messages', { key, body: '{"model":' });
  assert.equal(bad.status, 400);
  assert.deepEqual(Object.keys(bad.json), ['type', 'error']);
  assert.equal(bad.json.type, 'error');
  assert.equal(bad.json.error.type, 'invalid_request_error');

  const nokey = await api(gw, 'POST', '/v1/messages', { key: null, body: { model: 'claude-native', max_tokens: 5, messages: [] } });
  assert.equal(nokey.status, 401);
  assert.equal(nokey.json.error.type, 'authentication_error');

  // x-api-key works as well as a bearer token, as the Anthropic SDK sends it.
  const xkey = await api(gw, 'POST', '/v1/messages', {
    key: null, headers: { 'x-api-key': key, 'anthropic-version': '2023-06-01' },
    body: { model: 'nope', max_tokens: 5, messages: [{ role: 'user', content: 'x' }] },
  });
  assert.equal(xkey.status, 404);
  assert.equal(xkey.json.error.type, 'not_found_error');

  await assert.rejects(anthropic().messages.create({ model: 'nope', max_tokens: 5, messages: [{ role: 'user', content: 'x' }] }),
    (e) => e instanceof Anthropic.NotFoundError);

  // Limits: a key with rpm 1 gets its second request refused as Anthropic's rate_limit_error.
  const limited = (await createKey(gw, { name: 'anthropic-rpm-1', rpm: 1 })).key;
  const once = { model: 'claude-native', max_tokens: 5, messages: [{ role: 'user', content: 'x' }] };
  assert.equal((await api(gw, 'POST', '/v1/messages', { key: limited, body: once })).status, 200);
  const over = await api(gw, 'POST', '/v1/messages', { key: limited, body: once });
  assert.equal(over.status, 429, over.text);
  assert.deepEqual(Object.keys(over.json), ['type', 'error']);
  assert.equal(over.json.error.type, 'rate_limit_error');
  assert.ok(Number(over.headers.get('retry-after')) >= 1);
  await assert.rejects(new Anthropic({ baseURL: gw.url, apiKey: limited, maxRetries: 0 }).messages.create(once),
    (e) => e instanceof Anthropic.RateLimitError);
});

test('GET /v1/models lists the key\'s models for both SDKs; count_tokens answers', async () => {
  const limited = (await createKey(gw, { name: 'two-models', models: ['claude-native', 'gpt-via-anthropic'] })).key;
  const viaAnthropic = [];
  for await (const m of new Anthropic({ baseURL: gw.url, apiKey: limited, maxRetries: 0 }).models.list()) viaAnthropic.push(m.id);
  assert.deepEqual(viaAnthropic.sort(), ['claude-native', 'gpt-via-anthropic']);
  const viaOpenAI = [];
  for await (const m of gw.client(limited).models.list()) viaOpenAI.push(m.id);
  assert.deepEqual(viaOpenAI.sort(), ['claude-native', 'gpt-via-anthropic']);

  const counted = await anthropic().messages.countTokens({
    model: 'claude-native', system: 'Be brief.', messages: [{ role: 'user', content: 'How many tokens is this?' }],
  });
  assert.ok(counted.input_tokens > 5 && counted.input_tokens < 40, JSON.stringify(counted));
});

test('a raw /v1/messages stream is well-formed SSE with named events', async () => {
  const r = await api(gw, 'POST', '/v1/messages', {
    key, body: { model: 'claude-via-openai', max_tokens: 16, stream: true, messages: [{ role: 'user', content: 'hi there' }] },
  });
  assert.equal(r.status, 200);
  assert.match(r.headers.get('content-type'), /^text\/event-stream/);
  const names = [...r.text.matchAll(/^event: (\S+)$/gm)].map((m) => m[1]);
  assert.equal(names[0], 'message_start');
  assert.equal(names.at(-1), 'message_stop');
  assert.equal(names.at(-2), 'message_delta');
  const datas = sseData(r.text).map((d) => JSON.parse(d));
  assert.equal(datas.length, names.length);
  datas.forEach((d, i) => assert.equal(d.type, names[i]));
});
