// Error paths: every failure reaches the client as the right HTTP status with an OpenAI
// error envelope, whether it is the client's fault, the configuration's or the upstream's.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import {
  api, cleanupAll, createKey, freePort, isOpenAIErrorEnvelope, renderConfig, sseData, startGateway, startMock,
  REQUEST_TIMEOUT_MS, TIME_SCALE,
} from './harness.mjs';

const MAX_BODY = 4096;

let mock;
let gw;
let client;

before(async () => {
  mock = await startMock();
  const closedPort = await freePort(); // nothing listens there
  gw = await startGateway({
    config: renderConfig({
      server: { max_body_bytes: MAX_BODY },
      providers: [
        { name: 'mock', base_url: `${mock.url}/v1`, api_key: 'sk-upstream-errors' },
        { name: 'impatient', base_url: `${mock.url}/v1`, first_byte_timeout_ms: 300 },
        { name: 'dead', base_url: `http://127.0.0.1:${closedPort}/v1`, connect_timeout_ms: 2000 },
      ],
      models: [
        { name: 'gpt-demo', deployments: [{ provider: 'mock', model: 'mock-model' }] },
        { name: 'secret-model', deployments: [{ provider: 'mock', model: 'mock-model' }] },
        { name: 'fails-500', deployments: [{ provider: 'mock', model: 'mock-fail-500' }] },
        { name: 'fails-429', deployments: [{ provider: 'mock', model: 'mock-fail-429' }] },
        { name: 'hangs', deployments: [{ provider: 'impatient', model: 'mock-hang' }] },
        { name: 'unreachable', deployments: [{ provider: 'dead', model: 'mock-model' }] },
        { name: 'breaks-mid-stream', deployments: [{ provider: 'mock', model: 'mock-reset' }] },
      ],
    }),
  });
  client = gw.client(gw.masterKey);
});

after(cleanupAll);

const chatBody = (model, content = 'hi') => ({ model, messages: [{ role: 'user', content }] });

/** Posts a chat request; asserts the status and the OpenAI error envelope; returns the error. */
async function expectChatError(body, status, { key = gw.masterKey, headers } = {}) {
  const r = await api(gw, 'POST', '/v1/chat/completions', { body, key, headers });
  assert.equal(r.status, status, `expected ${status}, got ${r.status}: ${r.text}`);
  assert.ok(isOpenAIErrorEnvelope(r.json), `not an OpenAI error envelope: ${r.text}`);
  assert.match(r.headers.get('content-type') ?? '', /application\/json/);
  assert.ok(r.headers.get('x-request-id'), 'errors carry x-request-id too');
  return { error: r.json.error, headers: r.headers };
}

/** Runs an openai client call that must fail; returns the thrown APIError. */
async function expectClientError(promise, status, ErrorClass) {
  const err = await promise.then(
    (v) => assert.fail(`expected HTTP ${status}, got success: ${JSON.stringify(v).slice(0, 200)}`),
    (e) => e);
  assert.ok(err instanceof OpenAI.APIError, `expected an APIError, got ${err}`);
  assert.equal(err.status, status, `${err}`);
  if (ErrorClass) assert.ok(err instanceof ErrorClass, `expected ${ErrorClass.name}, got ${err.constructor.name}`);
  return err;
}

describe('client errors', () => {
  test('a request without a key is refused with 401', async () => {
    const { error } = await expectChatError(chatBody('gpt-demo'), 401, { key: null });
    assert.equal(error.code, 'invalid_api_key');
  });

  test('a wrong key is refused with 401 (openai client: AuthenticationError)', async () => {
    const err = await expectClientError(
      gw.client('sk-lw-this-key-does-not-exist').chat.completions.create(chatBody('gpt-demo')),
      401, OpenAI.AuthenticationError);
    assert.equal(err.code, 'invalid_api_key');
    // ... and with x-api-key too.
    await expectChatError(chatBody('gpt-demo'), 401, { key: null, headers: { 'x-api-key': 'sk-wrong' } });
  });

  test('malformed JSON is refused with 400', async () => {
    const { error } = await expectChatError('{"model": "gpt-demo", "messages": [', 400);
    assert.equal(error.type, 'invalid_request_error');
  });

  test('a request without a model is refused with 400 naming the model parameter', async () => {
    const { error } = await expectChatError({ messages: [{ role: 'user', content: 'hi' }] }, 400);
    assert.equal(error.type, 'invalid_request_error');
    assert.equal(error.param, 'model');
  });

  test('an unknown model is refused with 404 (openai client: NotFoundError)', async () => {
    const err = await expectClientError(client.chat.completions.create(chatBody('no-such-model')), 404,
      OpenAI.NotFoundError);
    assert.equal(err.code, 'model_not_found');
    const { error } = await expectChatError(chatBody('no-such-model'), 404);
    assert.equal(error.param, 'model');
  });

  test('a model outside the key\'s allowed list is refused with 403 (openai client: PermissionDeniedError)', async () => {
    const { key } = await createKey(gw, { name: 'demo-only', models: ['gpt-demo'] });
    const restricted = gw.client(key);
    const ok = await restricted.chat.completions.create(chatBody('gpt-demo'));
    assert.equal(ok.choices[0].message.content, 'mock reply: hi');
    await expectClientError(restricted.chat.completions.create(chatBody('secret-model')), 403,
      OpenAI.PermissionDeniedError);
    const { error } = await expectChatError(chatBody('secret-model'), 403, { key });
    assert.equal(error.type, 'permission_error');
  });

  test('a body larger than server.max_body_bytes is refused with 413', async () => {
    const big = JSON.stringify(chatBody('gpt-demo', 'x'.repeat(MAX_BODY * 3)));
    const { error } = await expectChatError(big, 413);
    assert.match(error.message, /larger/);
    // A body just under the limit still goes through.
    const fits = await api(gw, 'POST', '/v1/chat/completions', { body: chatBody('gpt-demo', 'y'.repeat(MAX_BODY - 200)) });
    assert.equal(fits.status, 200, fits.text);
  });

  test('an unknown endpoint is 404 and a wrong method on a known one is 405', async () => {
    const r = await api(gw, 'GET', '/v1/nothing-here');
    assert.equal(r.status, 404);
    assert.ok(isOpenAIErrorEnvelope(r.json), r.text);
    const m = await api(gw, 'GET', '/v1/chat/completions');
    assert.equal(m.status, 405);
    assert.ok(isOpenAIErrorEnvelope(m.json), m.text);
  });
});

describe('upstream errors', () => {
  test('an upstream 500 is passed through with its status and body', async () => {
    const err = await expectClientError(client.chat.completions.create(chatBody('fails-500')), 500,
      OpenAI.InternalServerError);
    assert.equal(err.type, 'server_error');
    const { error, headers } = await expectChatError(chatBody('fails-500'), 500);
    assert.equal(error.message, 'mock failure');
    assert.equal(headers.get('x-lowart-deployment'), 'mock/mock-fail-500');
  });

  test('an upstream 429 is passed through with its retry-after header', async () => {
    await expectClientError(client.chat.completions.create(chatBody('fails-429')), 429, OpenAI.RateLimitError);
    const { error, headers } = await expectChatError(chatBody('fails-429'), 429);
    assert.equal(error.type, 'rate_limit_error');
    assert.equal(headers.get('retry-after'), '1');
  });

  test('an unreachable upstream (closed port) gives 502', async () => {
    await expectClientError(client.chat.completions.create(chatBody('unreachable')), 502);
    const { error } = await expectChatError(chatBody('unreachable'), 502);
    assert.equal(error.type, 'upstream_error');
  });

  test('an upstream that never answers gives 504 after first_byte_timeout_ms', async () => {
    const t0 = Date.now();
    const { error } = await expectChatError(chatBody('hangs'), 504);
    const elapsed = Date.now() - t0;
    assert.equal(error.type, 'timeout_error');
    assert.ok(elapsed >= 250 && elapsed < 3000 * TIME_SCALE, `504 after ${elapsed} ms; first_byte_timeout_ms is 300`);
    await expectClientError(client.chat.completions.create(chatBody('hangs')), 504);
  });

  test('the gateway keeps serving after upstream failures', async () => {
    const ok = await client.chat.completions.create(chatBody('gpt-demo', 'still alive'));
    assert.equal(ok.choices[0].message.content, 'mock reply: still alive');
  });
});

describe('a stream that breaks mid-way', () => {
  const content = 'one two three four five six seven eight';

  test('the openai client sees an error, not a clean end, when the upstream resets mid-stream', async () => {
    const stream = await client.chat.completions.create({ ...chatBody('breaks-mid-stream', content), stream: true });
    const received = [];
    let caught;
    try {
      for await (const chunk of stream) received.push(chunk.choices[0]?.delta?.content ?? '');
    } catch (e) {
      caught = e;
    }
    assert.ok(caught, `the stream ended cleanly after ${JSON.stringify(received.join(''))}`);
    assert.ok(caught instanceof OpenAI.APIError, `expected an APIError, got ${caught}`);
    // The mock resets after the role chunk and two content chunks ("mock", " reply:"):
    // what arrived is a strict prefix of the full answer.
    const got = received.join('');
    assert.ok(`mock reply: ${content}`.startsWith(got) && got.length < `mock reply: ${content}`.length,
      `unexpected content before the error: ${JSON.stringify(got)}`);
  });

  test('the raw stream ends with a data: {"error":...} event and no [DONE]', async () => {
    const res = await fetch(`${gw.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${gw.masterKey}`, 'content-type': 'application/json' },
      body: JSON.stringify({ ...chatBody('breaks-mid-stream', content), stream: true }),
      signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
    });
    assert.equal(res.status, 200);
    const events = sseData(await res.text());
    assert.ok(!events.includes('[DONE]'), 'a broken stream must not end with [DONE]');
    const last = JSON.parse(events.at(-1));
    assert.ok(isOpenAIErrorEnvelope(last), `last event is not an error: ${events.at(-1)}`);
    assert.equal(last.error.type, 'upstream_error');
  });
});
