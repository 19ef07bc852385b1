// Requests are validated before they cost an upstream round trip: the types and ranges
// the vendors refuse anyway get a 400 in the API's own envelope naming `param`, and no
// upstream call; unknown fields pass through untouched.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { api, cleanupAll, createKey, mockReset, mockStats, rawRequest, renderConfig, startGateway, startMock } from './harness.mjs';

let gw;
let mock;
let key;

before(async () => {
  mock = await startMock();
  gw = await startGateway({
    config: renderConfig({
      providers: [{ name: 'mock', base_url: `${mock.url}/v1` }],
      models: [{ name: 'gpt-demo', deployments: [{ provider: 'mock', model: 'mock-model' }] }],
    }),
  });
  key = (await createKey(gw, { name: 'validation' })).key;
});
after(cleanupAll);

const msgs = [{ role: 'user', content: 'hi' }];

test('OpenAI chat: wrong types and ranges are a 400 naming param, with no upstream call', async () => {
  await mockReset(mock);
  const cases = [
    [{ messages: 'hi' }, 'messages'],
    [{ messages: [1] }, 'messages'],
    [{ messages: [] }, 'messages'],
    [{}, 'messages'],
    [{ messages: msgs, max_tokens: 0 }, 'max_tokens'],
    [{ messages: msgs, max_tokens: 'ten' }, 'max_tokens'],
    [{ messages: msgs, max_completion_tokens: -1 }, 'max_completion_tokens'],
    [{ messages: msgs, stream: 'yes' }, 'stream'],
    [{ messages: msgs, temperature: 2.5 }, 'temperature'],
    [{ messages: msgs, temperature: 'hot' }, 'temperature'],
    [{ messages: msgs, top_p: 1.5 }, 'top_p'],
    [{ messages: msgs, n: 0 }, 'n'],
    [{ messages: msgs, presence_penalty: 3 }, 'presence_penalty'],
  ];
  for (const [body, param] of cases) {
    const r = await api(gw, 'POST', '/v1/chat/completions', { key, body: { model: 'gpt-demo', ...body } });
    assert.equal(r.status, 400, `${JSON.stringify(body)}: ${r.text}`);
    assert.equal(r.json.error.type, 'invalid_request_error');
    assert.equal(r.json.error.param, param, r.text);
    assert.ok(r.json.error.message.length > 10);
  }
  assert.equal((await mockStats(mock)).requests, 0, 'no refused request reached the upstream');
  // Nulls are absent values, and unknown fields pass through untouched.
  const ok = await api(gw, 'POST', '/v1/chat/completions', {
    key, body: { model: 'gpt-demo', messages: msgs, temperature: null, max_tokens: 5, x_vendor_extension: { keep: [1, 2] } },
  });
  assert.equal(ok.status, 200, ok.text);
  assert.deepEqual(JSON.parse((await mockStats(mock)).last_body).x_vendor_extension, { keep: [1, 2] });
});

test('Anthropic messages: refused in Anthropic\'s envelope (temperature is 0..1 there)', async () => {
  await mockReset(mock);
  for (const [body, param] of [
    [{ max_tokens: 5, messages: 'hi' }, 'messages'],
    [{ max_tokens: 0, messages: msgs }, 'max_tokens'],
    [{ max_tokens: 5, messages: msgs, temperature: 1.5 }, 'temperature'],
    [{ max_tokens: 5, messages: msgs, stream: 1 }, 'stream'],
  ]) {
    const r = await api(gw, 'POST', '/v1/messages', { key, body: { model: 'gpt-demo', ...body } });
    assert.equal(r.status, 400, `${JSON.stringify(body)}: ${r.text}`);
    assert.deepEqual(Object.keys(r.json), ['type', 'error']);
    assert.equal(r.json.error.type, 'invalid_request_error');
    assert.match(r.json.error.message, new RegExp(param));
  }
  assert.equal((await mockStats(mock)).requests, 0);
});

test('Content-Length: abc is a 400, not a 413', async () => {
  const r = await rawRequest({
    port: gw.port, method: 'POST', path: '/v1/chat/completions',
    headers: { 'content-length': 'abc', authorization: `Bearer ${key}`, 'content-type': 'application/json' },
  });
  assert.equal(r.status, 400, r.text);
});
