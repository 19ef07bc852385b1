// Metering without upstream usage: lowart counts with its own tokenizer (o200k_base, which
// stands in for a model tiktoken does not know: the record says "estimated"), counting the
// whole relayed text once (not delta by delta), puts its count in the usage chunk a client
// asked for, and bills interrupted streams for what was delivered. The generated property
// test is billing_property.test.mjs.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { getEncoding } from 'js-tiktoken';
import { api, cleanupAll, sqliteQuery, sseData, startGateway, startMock, waitFor } from './harness.mjs';

const enc = getEncoding('o200k_base');
let mock;
let gw;

before(async () => {
  mock = await startMock();
  // "mock-no-usage" answers normally but never reports usage, even when asked for it.
  gw = await startGateway({
    config: `
[[providers]]
name = "mock"
base_url = "${mock.url}/v1"
[[models]]
name = "no-usage"
[[models.deployments]]
provider = "mock"
model = "mock-no-usage"
[[models]]
name = "breaks"
[[models.deployments]]
provider = "mock"
model = "mock-reset"
`,
  });
});

after(cleanupAll);

const messages = [
  { role: 'system', content: 'You are terse.' },
  { role: 'user', content: 'Wie spät ist es in 東京? 🕐' },
];
// tiktoken's chat counting: 3 per message + role + content, and 3 to prime the answer.
const promptTokens = messages.reduce((n, m) => n + 3 + enc.encode(m.role).length + enc.encode(m.content).length, 3);

async function usageRow(requestId) {
  let rows = [];
  await waitFor(async () => {
    rows = await sqliteQuery(gw.dbPath, `SELECT prompt_tokens, completion_tokens, status, usage_source FROM usage_records WHERE request_id = '${requestId}'`);
    return rows.length === 1;
  }, { timeoutMs: 3000, what: 'the usage record' });
  return rows[0];
}

test('a stream from an upstream that sends no usage is billed with the exact token counts', async () => {
  const r = await api(gw, 'POST', '/v1/chat/completions', { body: { model: 'no-usage', stream: true, messages } });
  assert.equal(r.status, 200, r.text);
  const events = sseData(r.text);
  const reply = events.filter((e) => e !== '[DONE]').map((e) => JSON.parse(e).choices[0]?.delta?.content ?? '').join('');
  assert.match(reply, /^mock reply: /);
  assert.ok(!events.some((e) => e !== '[DONE]' && JSON.parse(e).usage), 'no usage chunk was asked for');
  const row = await usageRow(r.headers.get('x-request-id'));
  assert.equal(Number(row.prompt_tokens), promptTokens);
  // The whole reply counted once: a word split across two deltas is one word.
  assert.equal(Number(row.completion_tokens), enc.encode(reply).length);
  assert.equal(row.usage_source, 'estimated', 'mock-no-usage is not a model tiktoken knows');
});

test('when the client asks for include_usage and the upstream sends none, lowart usage chunk carries its count', async () => {
  const r = await api(gw, 'POST', '/v1/chat/completions', {
    body: { model: 'no-usage', stream: true, stream_options: { include_usage: true }, messages },
  });
  assert.equal(r.status, 200, r.text);
  const events = sseData(r.text);
  assert.equal(events.at(-1), '[DONE]');
  const last = JSON.parse(events.at(-2));
  assert.deepEqual(last.choices, []);
  const deltas = events.slice(0, -2).map((e) => JSON.parse(e).choices[0]?.delta?.content ?? '');
  const completion = enc.encode(deltas.join('')).length;
  assert.deepEqual(last.usage, { prompt_tokens: promptTokens, completion_tokens: completion, total_tokens: promptTokens + completion });
});

test('a JSON answer without usage is billed with the counted prompt and message', async () => {
  const r = await api(gw, 'POST', '/v1/chat/completions', { body: { model: 'no-usage', messages } });
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.usage, undefined, 'the upstream reported nothing');
  const row = await usageRow(r.headers.get('x-request-id'));
  assert.equal(Number(row.prompt_tokens), promptTokens);
  assert.equal(Number(row.completion_tokens), enc.encode(r.json.choices[0].message.content).length);
});

test('an interrupted stream is billed for what was delivered', async () => {
  const r = await api(gw, 'POST', '/v1/chat/completions', {
    body: { model: 'breaks', stream: true, messages: [{ role: 'user', content: 'one two three four five six' }] },
  });
  const events = sseData(r.text);
  const delivered = events.filter((e) => !e.includes('"error"')).map((e) => JSON.parse(e).choices[0]?.delta?.content ?? '');
  assert.ok(delivered.join('').length > 0, r.text);
  const row = await usageRow(r.headers.get('x-request-id'));
  assert.equal(Number(row.status), 502);
  assert.equal(Number(row.completion_tokens), enc.encode(delivered.join('')).length);
  assert.ok(Number(row.prompt_tokens) > 0);
});
