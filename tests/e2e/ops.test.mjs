// Operating the gateway: probes, Prometheus metrics, JSON logs, Unix-socket listening,
// usage records in SQLite, persistence across restarts and graceful shutdown.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import path from 'node:path';
import {
  api, canConnect, cleanupAll, createKey, metricValue, parseMetrics, rawRequest, renderConfig, run,
  sqliteQuery, sseData, startGateway, startMock, tempDir, waitFor, REQUEST_TIMEOUT_MS, TIME_SCALE,
} from './harness.mjs';

let mock;

before(async () => {
  mock = await startMock();
});

after(cleanupAll);

/** A config with one provider on the shared mock and the given models ({name: upstreamModel}). */
function mockConfig(models = { 'gpt-demo': 'mock-model' }, { provider = {}, server, storage } = {}) {
  return renderConfig({
    server,
    storage,
    providers: [{ name: 'mock', base_url: `${mock.url}/v1`, ...provider }],
    models: Object.entries(models).map(([name, model]) => ({ name, deployments: [{ provider: 'mock', model }] })),
  });
}

const chatBody = (content, extra = {}) => ({ model: 'gpt-demo', messages: [{ role: 'user', content }], ...extra });

async function scrape(gw) {
  const res = await fetch(`${gw.url}/metrics`, { signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) });
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type') ?? '', /^text\/plain/);
  const text = await res.text();
  return { text, samples: parseMetrics(text) };
}

describe('probes, metrics and logs', () => {
  const PROVIDER_KEY = 'sk-provider-must-not-be-logged-7f3a9c';
  let gw;
  let userKey;

  before(async () => {
    gw = await startGateway({
      config: mockConfig({ 'gpt-demo': 'mock-model' }, { provider: { api_key_env: 'OPS_PROVIDER_KEY' } }),
      env: { OPS_PROVIDER_KEY: PROVIDER_KEY },
    });
    userKey = (await createKey(gw, { name: 'ops-user' })).key;
  });

  test('GET /healthz and GET /readyz answer 200 without a key', async () => {
    const h = await api(gw, 'GET', '/healthz', { key: null });
    assert.equal(h.status, 200);
    assert.equal(h.json.status, 'ok');
    const r = await api(gw, 'GET', '/readyz', { key: null });
    assert.equal(r.status, 200);
    assert.equal(r.json.status, 'ready');
  });

  test('/metrics passes promtool and its request, token and upstream counters move with traffic', async () => {
    const before = (await scrape(gw)).samples;
    // Prompts of 3 and 2 words: replies "mock reply: ..." of 5 and 4 words.
    const a = await api(gw, 'POST', '/v1/chat/completions', { key: userKey, body: chatBody('one two three') });
    assert.equal(a.status, 200, a.text);
    const b = await api(gw, 'POST', '/v1/chat/completions', { key: userKey, body: chatBody('four five', { stream: true }) });
    assert.equal(b.status, 200, b.text);
    const c = await api(gw, 'POST', '/v1/chat/completions', { key: 'sk-lw-wrong', body: chatBody('denied') });
    assert.equal(c.status, 401, c.text);

    const { text, samples } = await scrape(gw);
    const check = await run('promtool', ['check', 'metrics'], { input: text });
    assert.equal(check.code, 0, `promtool check metrics failed:\n${check.stdout}${check.stderr}`);

    const delta = (name, labels) => metricValue(samples, name, labels) - metricValue(before, name, labels);
    assert.equal(delta('http_requests_total', { route: 'chat', status: '200' }), 2);
    // A request refused before authentication still counts under its route.
    assert.equal(delta('http_requests_total', { route: 'chat', status: '401' }), 1);
    assert.equal(delta('http_request_duration_seconds_count', { route: 'chat' }), 3);
    assert.ok(samples.some((s) => s.name === 'http_request_duration_seconds_bucket' && s.labels.route === 'chat'));
    // Non-streamed usage from the body, streamed usage from the usage chunk lowart asked for.
    assert.equal(delta('gateway_tokens_total', { model: 'gpt-demo', type: 'prompt' }), 3 + 2);
    assert.equal(delta('gateway_tokens_total', { model: 'gpt-demo', type: 'completion' }), 5 + 4);
    assert.equal(delta('gateway_upstream_requests_total', { deployment: 'mock/mock-model', status: '200' }), 2);
  });

  test('every proxied request logs a JSON "request" line whose request_id is the response x-request-id', async () => {
    const responses = [];
    responses.push(await api(gw, 'POST', '/v1/chat/completions', { key: userKey, body: chatBody('log me') }));
    responses.push(await api(gw, 'POST', '/v1/chat/completions', {
      key: null, headers: { 'x-api-key': userKey }, body: chatBody('log me too', { stream: true }),
    }));
    responses.push(await api(gw, 'POST', '/v1/embeddings', { key: userKey, body: { model: 'gpt-demo', input: 'vec' } }));
    responses.push(await api(gw, 'POST', '/v1/chat/completions', {
      key: userKey, body: chatBody('mine'), headers: { 'x-request-id': 'client-chosen-id-42' },
    }));
    for (const r of responses) {
      assert.equal(r.status, 200, r.text);
      const id = r.headers.get('x-request-id');
      assert.ok(id);
      const line = await gw.waitForLog((l) => l.msg === 'request' && l.request_id === id);
      assert.equal(line.status, 200);
      assert.equal(line.method, 'POST');
      assert.equal(line.model, 'gpt-demo');
      assert.equal(line.deployment, 'mock/mock-model');
      assert.match(line.path, /^\/v1\/(chat\/completions|embeddings)$/);
    }
    assert.equal(responses[3].headers.get('x-request-id'), 'client-chosen-id-42');
  });

  test('the stderr log is JSON lines and never contains the provider key, a virtual key or the master key', async () => {
    // Some traffic that carries every secret: master key, virtual key (both headers), provider key upstream.
    await api(gw, 'POST', '/v1/chat/completions', { body: chatBody('secret check') });
    await api(gw, 'POST', '/v1/chat/completions', { key: userKey, body: chatBody('secret check') });
    await api(gw, 'GET', '/admin/keys', { key: userKey }); // 403
    const last = await api(gw, 'POST', '/v1/chat/completions', { key: userKey, body: chatBody('flush marker') });
    await gw.waitForLog((l) => l.request_id === last.headers.get('x-request-id'));

    const lines = gw.rawLogs().split('\n').filter((l) => l.trim());
    assert.ok(lines.length > 5);
    for (const l of lines) {
      let parsed;
      assert.doesNotThrow(() => { parsed = JSON.parse(l); }, `not a JSON log line: ${l}`);
      assert.equal(typeof parsed.msg, 'string', l);
      assert.equal(typeof parsed.level, 'string', l);
    }
    const all = gw.rawLogs();
    assert.ok(!all.includes(PROVIDER_KEY), 'provider api key leaked into the logs');
    assert.ok(!all.includes(userKey), 'virtual key leaked into the logs');
    assert.ok(!all.includes(gw.masterKey), 'master key leaked into the logs');
  });
});

describe('Unix domain socket', () => {
  async function curlChat(socketPath, key, content) {
    const r = await run('curl', ['-sS', '--max-time', '5', '--unix-socket', socketPath,
      '-H', `Authorization: Bearer ${key}`, '-H', 'Content-Type: application/json',
      '-d', JSON.stringify(chatBody(content)), '-w', '\n%{http_code}',
      'http://localhost/v1/chat/completions']);
    assert.equal(r.code, 0, `curl failed: ${r.stderr}`);
    const nl = r.stdout.lastIndexOf('\n');
    return { status: Number(r.stdout.slice(nl + 1)), json: JSON.parse(r.stdout.slice(0, nl)) };
  }

  test('LISTEN_MODE=BOTH serves the same API over the socket (curl --unix-socket) and over TCP', async () => {
    const dir = await tempDir();
    const socketPath = path.join(dir, 'lowart.sock');
    const gw = await startGateway({ dir, config: mockConfig(), env: { LISTEN_MODE: 'BOTH', LOWART_UDS_PATH: socketPath } });
    const viaSocket = await curlChat(socketPath, gw.masterKey, 'over the socket');
    assert.equal(viaSocket.status, 200);
    assert.equal(viaSocket.json.choices[0].message.content, 'mock reply: over the socket');
    const viaTcp = await gw.client(gw.masterKey).chat.completions.create(chatBody('over tcp'));
    assert.equal(viaTcp.choices[0].message.content, 'mock reply: over tcp');
    const ready = await rawRequest({ socketPath, path: '/readyz' });
    assert.equal(ready.status, 200);
  });

  test('LISTEN_MODE=UDS serves only the socket: the TCP address is not listening', async () => {
    const dir = await tempDir();
    const socketPath = path.join(dir, 'only.sock');
    const gw = await startGateway({ dir, config: mockConfig(), env: { LISTEN_MODE: 'UDS', LOWART_UDS_PATH: socketPath } });
    const viaSocket = await curlChat(socketPath, gw.masterKey, 'socket only');
    assert.equal(viaSocket.status, 200);
    assert.equal(viaSocket.json.choices[0].message.content, 'mock reply: socket only');
    assert.equal(await canConnect(gw.port), false, `something listens on TCP port ${gw.port}`);
  });
});

describe('usage records and persistence', () => {
  test('after N requests and SIGTERM, usage_records holds exactly N rows with model, deployment, status and tokens', async () => {
    // A long write-behind interval: the rows must come from the flush at shutdown.
    const gw = await startGateway({
      config: mockConfig({ 'gpt-demo': 'mock-model', 'fails-500': 'mock-fail-500' },
        { storage: { usage_flush_ms: 600000 } }),
    });
    const user = await createKey(gw, { name: 'metered' });
    const calls = [
      { body: chatBody('one two three'), status: 200, stream: 0, prompt: 3, completion: 5 },
      { body: chatBody('alpha beta', { stream: true }), status: 200, stream: 1, prompt: 2, completion: 4 },
      { body: chatBody('x', { stream: true, stream_options: { include_usage: true } }), status: 200, stream: 1, prompt: 1, completion: 3 },
      { body: { model: 'fails-500', messages: [{ role: 'user', content: 'boom' }] }, status: 500, stream: 0, prompt: 0, completion: 0 },
    ];
    const ids = [];
    for (const c of calls) {
      const r = await api(gw, 'POST', '/v1/chat/completions', { key: user.key, body: c.body });
      assert.equal(r.status, c.status, r.text);
      ids.push(r.headers.get('x-request-id'));
    }
    await gw.stop('SIGTERM');

    const rows = await sqliteQuery(gw.dbPath,
      'SELECT request_id, key_id, route, model, deployment, status, stream, prompt_tokens, completion_tokens' +
      ' FROM usage_records ORDER BY id');
    assert.equal(rows.length, calls.length, JSON.stringify(rows));
    for (const [i, c] of calls.entries()) {
      const row = rows.find((r) => r.request_id === ids[i]);
      assert.ok(row, `no usage record for request ${ids[i]}`);
      assert.deepEqual(
        { key_id: row.key_id, route: row.route, model: row.model, deployment: row.deployment, status: row.status,
          stream: row.stream, prompt: row.prompt_tokens, completion: row.completion_tokens },
        { key_id: user.id, route: 'chat', model: c.body.model,
          deployment: c.body.model === 'fails-500' ? 'mock/mock-fail-500' : 'mock/mock-model',
          status: c.status, stream: c.stream, prompt: c.prompt, completion: c.completion },
        `usage record of call ${i}`);
    }
  });

  test('keys survive a restart on the same database; revoked keys stay revoked', async () => {
    const dir = await tempDir();
    const config = mockConfig();
    const first = await startGateway({ dir, config });
    const kept = await createKey(first, { name: 'survivor', models: ['gpt-demo'] });
    const revoked = await createKey(first, { name: 'gone' });
    assert.equal((await api(first, 'DELETE', `/admin/keys/${revoked.id}`)).status, 200);
    await first.stop('SIGTERM');

    const second = await startGateway({ dir, config }); // same directory, same lowart.db, new master key
    const r = await api(second, 'POST', '/v1/chat/completions', { key: kept.key, body: chatBody('still here') });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.choices[0].message.content, 'mock reply: still here');
    assert.equal((await api(second, 'POST', '/v1/chat/completions', { key: revoked.key, body: chatBody('no') })).status, 401);
    const listed = (await api(second, 'GET', '/admin/keys')).json.data;
    assert.deepEqual(listed.map((k) => k.name).sort(), ['gone', 'survivor']);
    assert.equal((await api(second, 'GET', '/admin/keys', { key: first.masterKey })).status, 401,
      'the old master key is not stored anywhere');
  });
});

describe('graceful shutdown', () => {
  /** Starts a streamed chat with node:http; resolves `firstData` at the first body bytes. */
  function startStream(gw, body) {
    let onFirst;
    const firstData = new Promise((r) => { onFirst = r; });
    const done = new Promise((resolve, reject) => {
      const payload = JSON.stringify(body);
      const req = http.request({
        host: '127.0.0.1', port: gw.port, method: 'POST', path: '/v1/chat/completions', agent: false,
        headers: { authorization: `Bearer ${gw.masterKey}`, 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) },
      }, (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (d) => { text += d; onFirst(); });
        res.on('end', () => resolve({ status: res.statusCode, text, complete: res.complete }));
        res.on('error', reject);
        res.on('aborted', () => reject(new Error(`stream aborted after: ${text}`)));
      });
      req.setTimeout(10000 * TIME_SCALE, () => req.destroy(new Error(`stream did not finish within ${10 * TIME_SCALE} s`)));
      req.on('error', reject);
      req.end(payload);
    });
    return { firstData, done };
  }

  test('SIGTERM mid-stream: the stream completes in full, lowart exits 0 and refuses new connections', async () => {
    const gw = await startGateway({ config: mockConfig({ 'gpt-demo': 'mock-slow-200' }) });
    // Reply "mock reply: a b c d" = 6 words; 200 ms between events: about 2 s in all.
    const stream = startStream(gw, chatBody('a b c d', { stream: true }));
    await stream.firstData;
    const signalledAt = Date.now();
    gw.proc.kill('SIGTERM');

    await gw.waitForLog((l) => l.msg === 'shutting down');
    // A draining gateway stops accepting new connections at once (the stream still runs).
    await waitFor(async () => !(await canConnect(gw.port)),
      { timeoutMs: 100, intervalMs: 10, what: 'the draining gateway to refuse new connections' });

    const { status, text, complete } = await stream.done;
    assert.equal(status, 200);
    assert.ok(complete, 'the chunked body must end properly');
    const events = sseData(text);
    assert.equal(events.at(-1), '[DONE]', `stream did not end with [DONE]:\n${text}`);
    const content = events.slice(0, -1).map((e) => JSON.parse(e).choices[0]?.delta?.content ?? '').join('');
    assert.equal(content, 'mock reply: a b c d');
    assert.ok(Date.now() - signalledAt > 600, 'the stream was still running when SIGTERM arrived');

    const exit = await gw.stop(null, 5000 * TIME_SCALE); // already signalled: wait up to 5 s, then SIGKILL
    assert.equal(exit.forced, false, `lowart did not exit within ${5 * TIME_SCALE} s of SIGTERM`);
    assert.equal(exit.code, 0);
    assert.equal(await canConnect(gw.port), false);
    assert.ok(gw.logs().some((l) => l.msg === 'stopped'));
  });

  test('SIGTERM on an idle gateway exits 0 promptly', async () => {
    const gw = await startGateway({ config: mockConfig() });
    assert.equal((await api(gw, 'POST', '/v1/chat/completions', { body: chatBody('before') })).status, 200);
    const t0 = Date.now();
    const exit = await gw.stop('SIGTERM', 5000 * TIME_SCALE);
    assert.equal(exit.forced, false, `lowart did not exit within ${5 * TIME_SCALE} s of SIGTERM`);
    assert.equal(exit.code, 0);
    assert.ok(Date.now() - t0 < 3000 * TIME_SCALE, `exit took ${Date.now() - t0} ms`);
  });
});
