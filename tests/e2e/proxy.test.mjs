// The proxy path: chat (plain and streamed), embeddings and models through the real
// gateway to the real mock upstream, with the official openai client.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import net from 'node:net';
import {
  api, cleanupAll, createKey, mockReset, mockStats, renderConfig, sseData, startGateway, startMock, waitFor,
  REQUEST_TIMEOUT_MS,
} from './harness.mjs';

const PROVIDER_KEY = 'sk-upstream-proxytest-0123456789';

let mock;
let gw;
let client; // master key
let slowReader; // an upstream that reads nothing for a while, then everything
let slowReaderGot = null; // digest of the message content it last read

before(async () => {
  mock = await startMock();
  slowReader = net.createServer((socket) => {
    socket.pause(); // the kernel buffers fill: lowart's write cannot finish at once
    const chunks = [];
    setTimeout(() => socket.resume(), 300);
    socket.on('data', (c) => {
      chunks.push(c);
      const all = Buffer.concat(chunks);
      const head = all.indexOf('\r\n\r\n');
      if (head < 0) return;
      const length = Number(/content-length: *(\d+)/i.exec(all.subarray(0, head).toString())[1]);
      if (all.length < head + 4 + length) return;
      const body = all.subarray(head + 4, head + 4 + length);
      let got;
      try {
        got = JSON.parse(body.toString()).messages[0].content;
      } catch {
        got = `not JSON: ${body.length} bytes`;
      }
      slowReaderGot = createHash('sha256').update(got).digest('hex');
      // "big" asks for a 6 MiB answer (more than the client's socket takes while it waits).
      const reply = got === 'big' ? 'z'.repeat(6 * 1024 * 1024) : 'read it all';
      const answer = JSON.stringify({
        id: 'chatcmpl-slow', object: 'chat.completion', created: 1, model: 'slow',
        choices: [{ index: 0, message: { role: 'assistant', content: reply }, finish_reason: 'stop' }],
        usage: { prompt_tokens: 1, completion_tokens: 3, total_tokens: 4 },
      });
      socket.end(`HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: ${answer.length}\r\n\r\n${answer}`);
    });
  });
  await new Promise((resolve) => slowReader.listen(0, '127.0.0.1', resolve));
  gw = await startGateway({
    config: renderConfig({
      providers: [
        { name: 'mock', base_url: `${mock.url}/v1`, api_key_env: 'MOCK_API_KEY' },
        { name: 'slow', base_url: `http://127.0.0.1:${slowReader.address().port}/v1` },
      ],
      models: [
        { name: 'gpt-demo', deployments: [{ provider: 'mock', model: 'mock-model' }] },
        { name: 'other-model', deployments: [{ provider: 'mock', model: 'mock-model' }] },
        { name: 'slow-reader', deployments: [{ provider: 'slow', model: 'slow' }] },
      ],
    }),
    env: { MOCK_API_KEY: PROVIDER_KEY },
  });
  client = gw.client(gw.masterKey);
});

after(async () => {
  slowReader?.close();
  await cleanupAll();
});

describe('chat completions', () => {
  test('a non-streaming chat returns the upstream answer, usage and gateway headers', async () => {
    const { data, response } = await client.chat.completions.create({
      model: 'gpt-demo',
      messages: [{ role: 'user', content: 'hello world' }],
    }).withResponse();
    assert.equal(data.object, 'chat.completion');
    assert.equal(data.choices[0].message.role, 'assistant');
    assert.equal(data.choices[0].message.content, 'mock reply: hello world');
    assert.equal(data.choices[0].finish_reason, 'stop');
    // The mock counts whitespace-separated words: prompt "hello world", reply "mock reply: hello world".
    assert.deepEqual(
      { p: data.usage.prompt_tokens, c: data.usage.completion_tokens, t: data.usage.total_tokens },
      { p: 2, c: 4, t: 6 });
    assert.equal(response.headers.get('x-lowart-deployment'), 'mock/mock-model');
    assert.match(response.headers.get('x-request-id') ?? '', /^[A-Za-z0-9._:-]+$/);
  });

  test('a request of several MiB reaches the upstream whole (more than one socket write)', async () => {
    await mockReset(mock);
    const content = Array.from({ length: 1_200_000 }, (_, i) => `w${i % 9973}`).join(' ').slice(0, 6 * 1024 * 1024);
    const r = await client.chat.completions.create({ model: 'gpt-demo', messages: [{ role: 'user', content }] });
    assert.match(r.choices[0].message.content, /^mock reply: w0 w1 w2/);
    const sent = JSON.parse((await mockStats(mock)).last_body).messages[0].content;
    // Compared by length and digest: a failure should not print 6 MiB.
    const digest = (t) => createHash('sha256').update(t).digest('hex');
    assert.equal(sent.length, content.length);
    assert.equal(digest(sent), digest(content));
    // An upstream that reads nothing for 300 ms: the kernel takes part of the request, the
    // rest follows asynchronously once the upstream reads, in order and nothing twice.
    slowReaderGot = null;
    const slow = await client.chat.completions.create({ model: 'slow-reader', messages: [{ role: 'user', content }] });
    assert.equal(slow.choices[0].message.content, 'read it all');
    assert.equal(slowReaderGot, digest(content), 'the upstream read the same content');
  });

  test('an answer of several MiB reaches a client that reads late, whole, and the connection serves again', async () => {
    const body = JSON.stringify({ model: 'slow-reader', messages: [{ role: 'user', content: 'big' }] });
    const request = `POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${gw.masterKey}\r\n` +
      `Content-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`;
    const socket = net.connect(gw.port, '127.0.0.1');
    await new Promise((resolve) => socket.once('connect', resolve));
    socket.pause(); // nothing is read for 300 ms: lowart's first write can take only part
    const answers = [];
    let data = Buffer.alloc(0);
    socket.on('data', (c) => {
      data = Buffer.concat([data, c]);
      for (;;) {
        const head = data.indexOf('\r\n\r\n');
        if (head < 0) return;
        const length = Number(/content-length: *(\d+)/i.exec(data.subarray(0, head).toString())[1]);
        if (data.length < head + 4 + length) return;
        answers.push(JSON.parse(data.subarray(head + 4, head + 4 + length).toString()));
        data = data.subarray(head + 4 + length);
      }
    });
    socket.write(request);
    await new Promise((resolve) => setTimeout(resolve, 300));
    socket.resume();
    await waitFor(() => answers.length === 1, { what: 'the 6 MiB answer' });
    assert.equal(answers[0].choices[0].message.content, 'z'.repeat(6 * 1024 * 1024));
    socket.write(request); // keep-alive: the same connection answers again
    await waitFor(() => answers.length === 2, { what: 'the second answer' });
    assert.equal(answers[1].choices[0].message.content.length, 6 * 1024 * 1024);
    socket.destroy();
  });

  test('the upstream gets the deployment model name and the provider key, not the client key', async () => {
    await mockReset(mock);
    await client.chat.completions.create({ model: 'gpt-demo', messages: [{ role: 'user', content: 'check upstream' }] });
    const stats = await mockStats(mock);
    assert.equal(stats.requests, 1);
    assert.equal(stats.last_path, '/v1/chat/completions');
    assert.equal(stats.last_authorization, `Bearer ${PROVIDER_KEY}`);
    const body = JSON.parse(stats.last_body);
    assert.equal(body.model, 'mock-model');
    assert.deepEqual(body.messages, [{ role: 'user', content: 'check upstream' }]);
    assert.deepEqual(stats.by_model, { 'mock-model': 1 });
  });

  test('a virtual key works with x-api-key as well as Authorization: Bearer', async () => {
    const { key } = await createKey(gw, { name: 'proxy-x-api-key' });
    const body = { model: 'gpt-demo', messages: [{ role: 'user', content: 'via header' }] };
    const viaHeader = await api(gw, 'POST', '/v1/chat/completions', { body, key: null, headers: { 'x-api-key': key } });
    assert.equal(viaHeader.status, 200, viaHeader.text);
    assert.equal(viaHeader.json.choices[0].message.content, 'mock reply: via header');
    const viaBearer = await gw.client(key).chat.completions.create(body);
    assert.equal(viaBearer.choices[0].message.content, 'mock reply: via header');
  });

  test('a sane client x-request-id is echoed back; an unusable one is replaced', async () => {
    const body = { model: 'gpt-demo', messages: [{ role: 'user', content: 'id' }] };
    const mine = 'e2e-trace:0001.abc_DEF';
    const echoed = await api(gw, 'POST', '/v1/chat/completions', { body, headers: { 'x-request-id': mine } });
    assert.equal(echoed.status, 200);
    assert.equal(echoed.headers.get('x-request-id'), mine);

    const bad = 'has spaces and "quotes"';
    const replaced = await api(gw, 'POST', '/v1/chat/completions', { body, headers: { 'x-request-id': bad } });
    assert.equal(replaced.status, 200);
    const id = replaced.headers.get('x-request-id');
    assert.ok(id && id !== bad, `expected a generated request id, got ${id}`);
    assert.match(id, /^[A-Za-z0-9._:-]+$/);
    // Two requests never share a generated id.
    const again = await api(gw, 'POST', '/v1/chat/completions', { body });
    assert.notEqual(again.headers.get('x-request-id'), id);
  });
});

describe('streaming', () => {
  test('a stream delivers the whole answer word by word and hides the usage chunk the client did not ask for', async () => {
    await mockReset(mock);
    const { data: stream, response } = await client.chat.completions.create({
      model: 'gpt-demo',
      stream: true,
      messages: [{ role: 'user', content: 'stream these four words' }],
    }).withResponse();
    assert.match(response.headers.get('content-type') ?? '', /^text\/event-stream/);
    assert.equal(response.headers.get('x-lowart-deployment'), 'mock/mock-model');
    const chunks = [];
    for await (const chunk of stream) chunks.push(chunk);
    const text = chunks.map((c) => c.choices[0]?.delta?.content ?? '').join('');
    assert.equal(text, 'mock reply: stream these four words');
    // role chunk + one chunk per word (6) + finish chunk; no usage-only chunk.
    assert.equal(chunks.length, 8, JSON.stringify(chunks));
    assert.equal(chunks.at(-1).choices[0].finish_reason, 'stop');
    assert.ok(chunks.every((c) => c.usage == null), 'no chunk may carry usage');
    assert.ok(chunks.every((c) => c.choices.length === 1), 'no choices-less (usage) chunk');

    // ... while lowart did ask the upstream for usage, to meter the stream.
    const stats = await mockStats(mock);
    const upstreamBody = JSON.parse(stats.last_body);
    assert.equal(upstreamBody.stream, true);
    assert.equal(upstreamBody.model, 'mock-model');
    assert.deepEqual(upstreamBody.stream_options, { include_usage: true });
  });

  test('a stream with stream_options.include_usage gets the usage chunk last', async () => {
    const stream = await client.chat.completions.create({
      model: 'gpt-demo',
      stream: true,
      stream_options: { include_usage: true },
      messages: [{ role: 'user', content: 'count me' }],
    });
    const chunks = [];
    for await (const chunk of stream) chunks.push(chunk);
    const last = chunks.at(-1);
    assert.deepEqual(last.choices, []);
    assert.deepEqual(
      { p: last.usage.prompt_tokens, c: last.usage.completion_tokens, t: last.usage.total_tokens },
      { p: 2, c: 4, t: 6 });
    const text = chunks.map((c) => c.choices[0]?.delta?.content ?? '').join('');
    assert.equal(text, 'mock reply: count me');
  });

  test('the raw SSE body is well formed and ends with data: [DONE]', async () => {
    const res = await fetch(`${gw.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${gw.masterKey}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'gpt-demo', stream: true, messages: [{ role: 'user', content: 'raw sse' }] }),
      signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
    });
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type'), /^text\/event-stream/);
    assert.ok(res.headers.get('x-request-id'));
    const events = sseData(await res.text());
    assert.equal(events.at(-1), '[DONE]');
    const parsed = events.slice(0, -1).map((e) => JSON.parse(e));
    assert.ok(parsed.every((c) => c.object === 'chat.completion.chunk'));
    assert.equal(parsed.map((c) => c.choices[0].delta.content ?? '').join(''), 'mock reply: raw sse');
  });
});

describe('embeddings and models', () => {
  test('embeddings return one vector per input, computed by the upstream deployment model', async () => {
    await mockReset(mock);
    const { data, response } = await client.embeddings.create({
      model: 'gpt-demo',
      input: ['first text', 'second text', 'third'],
      encoding_format: 'float',
    }).withResponse();
    assert.equal(data.object, 'list');
    assert.equal(data.data.length, 3);
    for (const [i, item] of data.data.entries()) {
      assert.equal(item.index, i);
      assert.equal(item.embedding.length, 8);
      assert.ok(item.embedding.every((x) => typeof x === 'number' && Number.isFinite(x)));
    }
    assert.notDeepEqual(data.data[0].embedding, data.data[1].embedding);
    assert.equal(response.headers.get('x-lowart-deployment'), 'mock/mock-model');
    const stats = await mockStats(mock);
    assert.equal(stats.last_path, '/v1/embeddings');
    assert.equal(JSON.parse(stats.last_body).model, 'mock-model');
    assert.equal(stats.last_authorization, `Bearer ${PROVIDER_KEY}`);
  });

  test('/v1/models lists every model for the master key and only its allowed models for a restricted key', async () => {
    const all = [];
    for await (const m of client.models.list()) all.push(m.id);
    assert.deepEqual(all.sort(), ['gpt-demo', 'other-model', 'slow-reader']);

    const { key } = await createKey(gw, { name: 'only-demo', models: ['gpt-demo'] });
    const some = [];
    for await (const m of gw.client(key).models.list()) some.push(m.id);
    assert.deepEqual(some, ['gpt-demo']);
  });
});
