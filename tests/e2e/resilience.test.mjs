// Resilience: fallback between deployments and models, retries with retry-after, per-model
// timeouts, circuit breakers (open, half-open, closed), the held-back stream preamble and
// the balancing policies, through the real gateway to real mock upstreams.
//
// The mock picks its fault from the upstream model name ("mock-fail-500", "mock-hang", ...);
// any other name ("mock-model-b", ...) is answered normally, which gives distinct deployments
// on one mock whose traffic /mock/stats counts separately (by_model).

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import {
  api, canConnect, cleanupAll, freePort, isOpenAIErrorEnvelope, metricValue, mockReset, mockStats, parseMetrics,
  pool, sqliteQuery, sseData, startGateway, startMock, waitFor, REQUEST_TIMEOUT_MS, TIME_SCALE,
} from './harness.mjs';

after(cleanupAll);

// Timing bounds: an upper bound stretches by LOWART_TIME_SCALE (sanitizer builds), but an
// upper bound that proves lowart did not wait W (a retry-after, a stalled upstream) never
// stretches past W, or it would pass the very wait it rules out. Lower bounds, which prove
// a wait, stay as they are.
const within = (ms, ruledOut = Infinity) => Math.min(ms * TIME_SCALE, ruledOut);

// --- helpers ------------------------------------------------------------------------------------

// harness.renderConfig only writes a model's name and deployments (no per-model keys, no
// arrays, no [breaker] table): this file renders its own TOML.
function tomlValue(v) {
  if (Array.isArray(v)) return `[${v.map(tomlValue).join(', ')}]`;
  if (typeof v === 'string') return JSON.stringify(v);
  if (typeof v === 'number' || typeof v === 'boolean') return String(v);
  throw new Error(`unsupported TOML value: ${v}`);
}
function tomlTable(header, obj) {
  let s = `${header}\n`;
  for (const [k, v] of Object.entries(obj)) if (v !== undefined) s += `${k} = ${tomlValue(v)}\n`;
  return s;
}
/** { breaker, providers: [{name, base_url, ...}], models: [{name, ...keys, deployments: [...]}] } */
function resilienceConfig({ breaker, providers, models }) {
  let s = tomlTable('[server]', { listen: '127.0.0.1:3000' });
  if (breaker) s += tomlTable('\n[breaker]', breaker);
  for (const p of providers) s += tomlTable('\n[[providers]]', { kind: 'openai', ...p });
  for (const { deployments, ...m } of models) {
    s += tomlTable('\n[[models]]', m);
    for (const d of deployments) s += tomlTable('[[models.deployments]]', { priority: 0, weight: 1, ...d });
  }
  return s;
}

const chatBody = (model, content = 'hello there', extra = {}) =>
  ({ model, messages: [{ role: 'user', content }], ...extra });

/** POST /v1/chat/completions with the master key: { status, headers, json, text, ms, deployment, fallbacks }. */
async function chat(gw, model, { content, body, timeoutMs = REQUEST_TIMEOUT_MS } = {}) {
  const t0 = performance.now();
  const res = await fetch(`${gw.url}/v1/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${gw.masterKey}`, 'content-type': 'application/json' },
    body: JSON.stringify(body ?? chatBody(model, content)),
    signal: AbortSignal.timeout(timeoutMs),
  });
  const text = await res.text();
  const ms = performance.now() - t0;
  let json;
  try { json = JSON.parse(text); } catch { json = undefined; }
  return {
    status: res.status, headers: res.headers, json, text, ms,
    deployment: res.headers.get('x-lowart-deployment'),
    fallbacks: res.headers.get('x-lowart-fallbacks'),
  };
}

async function metrics(gw) {
  const res = await fetch(`${gw.url}/metrics`, { signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) });
  assert.equal(res.status, 200);
  return parseMetrics(await res.text());
}

/** The /admin/breakers entry of one deployment ("provider/model"). */
async function breakerOf(gw, deployment) {
  const r = await api(gw, 'GET', '/admin/breakers');
  assert.equal(r.status, 200, r.text);
  const entry = r.json.data.find((d) => d.deployment === deployment);
  assert.ok(entry, `no breaker for ${deployment} in ${r.text}`);
  return entry;
}

const waitForBreaker = (gw, deployment, state, timeoutMs = 3000) =>
  waitFor(async () => (await breakerOf(gw, deployment)).state === state,
    { timeoutMs, intervalMs: 20, what: `breaker of ${deployment} to be ${state}` });

/** Transition log lines of one deployment, as "from>to". */
const transitions = (gw, deployment) => gw.logs()
  .filter((l) => l.msg === 'breaker transition' && l.deployment === deployment)
  .map((l) => `${l.from}>${l.to}`);

// --- one gateway for fallback, retries, timeouts, streams and balancing -------------------------
//
// Its breakers never open (min_requests is out of reach), so the tests do not disturb each other.

let mock;
let gw;
let client;

before(async () => {
  mock = await startMock();
  const closedPort = await freePort(); // nothing listens there: connection refused
  gw = await startGateway({
    config: resilienceConfig({
      breaker: { min_requests: 1000000 },
      providers: [
        { name: 'mock', base_url: `${mock.url}/v1` },
        { name: 'dead', base_url: `http://127.0.0.1:${closedPort}/v1`, connect_timeout_ms: 2000 },
      ],
      models: [
        { name: 'primary-500', deployments: [
          { provider: 'mock', model: 'mock-fail-500', priority: 0 },
          { provider: 'mock', model: 'mock-model-backup', priority: 1 }] },
        { name: 'primary-refused', deployments: [
          { provider: 'dead', model: 'mock-model', priority: 0 },
          { provider: 'mock', model: 'mock-model-backup', priority: 1 }] },
        { name: 'primary-reset', deployments: [
          { provider: 'mock', model: 'mock-reset', priority: 0 },
          { provider: 'mock', model: 'mock-model-backup', priority: 1 }] },
        { name: 'all-fail', fallbacks: ['rescue'], deployments: [
          { provider: 'dead', model: 'mock-model', priority: 0 },
          { provider: 'mock', model: 'mock-fail-500', priority: 1 }] },
        { name: 'rescue', deployments: [{ provider: 'mock', model: 'mock-model-rescue' }] },
        { name: 'all-fail-transport-last', deployments: [
          { provider: 'mock', model: 'mock-fail-500', priority: 0 },
          { provider: 'mock', model: 'mock-fail-429', priority: 1 },
          { provider: 'dead', model: 'mock-model', priority: 2 }] },
        { name: 'all-fail-429-last', deployments: [
          { provider: 'dead', model: 'mock-model', priority: 0 },
          { provider: 'mock', model: 'mock-fail-500', priority: 1 },
          { provider: 'mock', model: 'mock-fail-429', priority: 2 }] },
        { name: 'primary-4xx', deployments: [
          { provider: 'mock', model: 'mock-model-first', priority: 0 },
          { provider: 'mock', model: 'mock-model-backup', priority: 1 }] },
        { name: 'primary-429', deployments: [
          { provider: 'mock', model: 'mock-fail-429', priority: 0 },
          { provider: 'mock', model: 'mock-model-backup', priority: 1 }] },
        { name: 'only-429-wait', retries: 1, max_retry_wait_ms: 2000, retry_backoff_ms: 10,
          deployments: [{ provider: 'mock', model: 'mock-fail-429' }] },
        { name: 'only-429-nowait', retries: 1, max_retry_wait_ms: 500, retry_backoff_ms: 10,
          deployments: [{ provider: 'mock', model: 'mock-fail-429' }] },
        { name: 'retry-500', retries: 2, retry_backoff_ms: 20,
          deployments: [{ provider: 'mock', model: 'mock-fail-500' }] },
        { name: 'primary-hangs', first_byte_timeout_ms: 300, deployments: [
          { provider: 'mock', model: 'mock-hang', priority: 0 },
          { provider: 'mock', model: 'mock-model-backup', priority: 1 }] },
        { name: 'deadline', timeout_ms: 400, deployments: [{ provider: 'mock', model: 'mock-hang' }] },
        { name: 'deadline-with-backup', timeout_ms: 400, deployments: [
          { provider: 'mock', model: 'mock-hang', priority: 0 },
          { provider: 'mock', model: 'mock-delay-50', priority: 1 }] },
        { name: 'stream-slow-first', first_byte_timeout_ms: 300, deployments: [
          { provider: 'mock', model: 'mock-slow-1500', priority: 0 },
          { provider: 'mock', model: 'mock-model-backup', priority: 1 }] },
        { name: 'stream-breaks', deployments: [{ provider: 'mock', model: 'mock-reset' }] },
        { name: 'weighted', balancing: 'weighted', deployments: [
          { provider: 'mock', model: 'mock-model-heavy', weight: 3 },
          { provider: 'mock', model: 'mock-model-light', weight: 1 }] },
        { name: 'latency-aware', balancing: 'latency', deployments: [
          { provider: 'mock', model: 'mock-delay-60', priority: 0 },
          { provider: 'mock', model: 'mock-model-quick', priority: 0 }] },
        { name: 'least-inflight', balancing: 'least_inflight', deployments: [
          { provider: 'mock', model: 'mock-delay-300' },
          { provider: 'mock', model: 'mock-model-fast' }] },
      ],
    }),
  });
  client = gw.client(gw.masterKey);
});

describe('fallback to the next candidate', () => {
  test('an upstream 500 from the primary is served by the priority-1 backup', async () => {
    await mockReset(mock);
    const r = await chat(gw, 'primary-500', { content: 'fall back please' });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.choices[0].message.content, 'mock reply: fall back please');
    assert.equal(r.deployment, 'mock/mock-model-backup');
    assert.equal(r.fallbacks, '1');
    assert.deepEqual((await mockStats(mock)).by_model, { 'mock-fail-500': 1, 'mock-model-backup': 1 });

    // The same through the openai client, which sees nothing of the failure.
    const { data, response } = await client.chat.completions.create(chatBody('primary-500', 'via sdk')).withResponse();
    assert.equal(data.choices[0].message.content, 'mock reply: via sdk');
    assert.equal(response.headers.get('x-lowart-deployment'), 'mock/mock-model-backup');
  });

  test('a refused connection to the primary is served by the backup', async () => {
    await mockReset(mock);
    const r = await chat(gw, 'primary-refused');
    assert.equal(r.status, 200, r.text);
    assert.equal(r.deployment, 'mock/mock-model-backup');
    assert.equal(r.fallbacks, '1');
    // connect_timeout_ms is 2000: a refused connection must not wait for it.
    assert.ok(r.ms < within(2000, 2000), `took ${r.ms} ms; a refused connection fails at once`);
    assert.deepEqual((await mockStats(mock)).by_model, { 'mock-model-backup': 1 });
  });

  test('a primary that resets the connection (non-streaming) is served by the backup', async () => {
    await mockReset(mock);
    const r = await chat(gw, 'primary-reset');
    assert.equal(r.status, 200, r.text);
    assert.equal(r.deployment, 'mock/mock-model-backup');
    assert.equal(r.fallbacks, '1');
    const seen = (await mockStats(mock)).by_model;
    assert.equal(seen['mock-model-backup'], 1);
    assert.equal(seen['mock-reset'], 1, JSON.stringify(seen)); // never sent twice
  });

  test('an upstream that resets after reading the request is not sent the request again (retries = 0)', async () => {
    await chat(gw, 'rescue'); // leaves an idle pooled connection to the mock
    await mockReset(mock);
    const r = await chat(gw, 'primary-reset');
    assert.equal(r.status, 200, r.text);
    assert.deepEqual((await mockStats(mock)).by_model, { 'mock-reset': 1, 'mock-model-backup': 1 });
  });

  test('when every deployment of a model fails, its fallback model serves', async () => {
    await mockReset(mock);
    const before = metricValue(await metrics(gw), 'gateway_fallbacks_total', { model: 'all-fail' });
    const r = await chat(gw, 'all-fail', { content: 'rescue me' });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.choices[0].message.content, 'mock reply: rescue me');
    assert.equal(r.deployment, 'mock/mock-model-rescue');
    assert.equal(r.fallbacks, '2');
    assert.deepEqual((await mockStats(mock)).by_model, { 'mock-fail-500': 1, 'mock-model-rescue': 1 });
    const m = await metrics(gw);
    assert.equal(metricValue(m, 'gateway_fallbacks_total', { model: 'all-fail' }) - before, 2);
    assert.ok(metricValue(m, 'gateway_upstream_requests_total', { deployment: 'dead/mock-model', status: 'connect_error' }) >= 1);
    assert.ok(metricValue(m, 'gateway_upstream_requests_total', { deployment: 'mock/mock-model-rescue', status: '200' }) >= 1);
    assert.ok(metricValue(m, 'gateway_upstream_duration_seconds_count', { deployment: 'mock/mock-model-rescue' }) >= 1);
  });

  test('when every candidate fails the client gets the last upstream answer, or 502 for a transport failure', async () => {
    await mockReset(mock);
    // fail-500, then fail-429, then a refused connection: the last word is a transport failure.
    const r = await chat(gw, 'all-fail-transport-last');
    assert.equal(r.status, 502, r.text);
    assert.ok(isOpenAIErrorEnvelope(r.json), r.text);
    assert.equal(r.fallbacks, '2');
    assert.deepEqual((await mockStats(mock)).by_model, { 'mock-fail-500': 1, 'mock-fail-429': 1 });

    // A refused connection, then fail-500, then fail-429: the 429 reaches the client as sent, retry-after included.
    const limited = await chat(gw, 'all-fail-429-last');
    assert.equal(limited.status, 429, limited.text);
    assert.equal(limited.headers.get('retry-after'), '1');
    assert.equal(limited.json.error.type, 'rate_limit_error');
    assert.equal(limited.deployment, 'mock/mock-fail-429');
    assert.equal(limited.fallbacks, '2');

    // Only a 500 deployment (retry-500 retries it twice): the upstream's 500 body passes through.
    const five = await chat(gw, 'retry-500');
    assert.equal(five.status, 500, five.text);
    assert.equal(five.json.error.message, 'mock failure');
    assert.equal(five.deployment, 'mock/mock-fail-500');
  });

  test('an upstream 4xx other than 429 is passed through without fallback or retry', async () => {
    await mockReset(mock);
    // The mock answers 400 to a tool without a function name (before any fault mode); lowart
    // does not check tools, so the upstream's refusal is what comes back.
    const badTool = { messages: [{ role: 'user', content: 'x' }], tools: [{ type: 'function', function: {} }] };
    const r = await chat(gw, 'primary-4xx', { body: { model: 'primary-4xx', ...badTool } });
    assert.equal(r.status, 400, r.text);
    assert.equal(r.json.error.message, 'each tool must have a string function.name');
    assert.equal(r.deployment, 'mock/mock-model-first');
    assert.equal(r.fallbacks, '0');
    // retry-500 has retries = 2: a 400 is not retried either.
    const again = await chat(gw, 'retry-500', { body: { model: 'retry-500', ...badTool } });
    assert.equal(again.status, 400, again.text);
    assert.deepEqual((await mockStats(mock)).by_model, { 'mock-model-first': 1, 'mock-fail-500': 1 });
  });
});

describe('429 and retries', () => {
  test('a 429 from the primary moves on to the next candidate', async () => {
    await mockReset(mock);
    const r = await chat(gw, 'primary-429');
    assert.equal(r.status, 200, r.text);
    assert.equal(r.deployment, 'mock/mock-model-backup');
    assert.equal(r.fallbacks, '1');
    assert.ok(r.ms < within(900, 1000), `took ${r.ms} ms: with retries = 0 lowart must not wait for retry-after (1 s)`);
    assert.deepEqual((await mockStats(mock)).by_model, { 'mock-fail-429': 1, 'mock-model-backup': 1 });
  });

  test('retries = 1 waits for retry-after (1 s <= max_retry_wait_ms) before the second attempt', async () => {
    await mockReset(mock);
    const r = await chat(gw, 'only-429-wait');
    assert.equal(r.status, 429, r.text);
    assert.equal(r.headers.get('retry-after'), '1');
    assert.ok(r.ms >= 950 && r.ms < within(3000), `took ${r.ms} ms; expected about 1 s of retry-after`);
    assert.deepEqual((await mockStats(mock)).by_model, { 'mock-fail-429': 2 });
  });

  test('a retry-after longer than max_retry_wait_ms is not waited for: the 429 reaches the client at once', async () => {
    await mockReset(mock);
    const r = await chat(gw, 'only-429-nowait');
    assert.equal(r.status, 429, r.text);
    assert.equal(r.headers.get('retry-after'), '1');
    assert.equal(r.json.error.type, 'rate_limit_error');
    assert.ok(r.ms < within(500, 1000), `took ${r.ms} ms; retry-after 1 s exceeds max_retry_wait_ms = 500`);
    assert.deepEqual((await mockStats(mock)).by_model, { 'mock-fail-429': 1 });
    // ... and the openai client sees a RateLimitError.
    const err = await client.chat.completions.create(chatBody('only-429-nowait')).then(
      () => assert.fail('expected a 429'), (e) => e);
    assert.ok(err instanceof OpenAI.RateLimitError, `${err}`);
  });

  test('retries = 2 on a 500 makes three attempts on the same deployment', async () => {
    await mockReset(mock);
    const r = await chat(gw, 'retry-500');
    assert.equal(r.status, 500, r.text);
    assert.equal(r.fallbacks, '0');
    assert.deepEqual((await mockStats(mock)).by_model, { 'mock-fail-500': 3 });
  });
});

describe('timeouts', () => {
  test('a hanging primary is abandoned after the model\'s first_byte_timeout_ms and the backup serves', async () => {
    await mockReset(mock);
    const r = await chat(gw, 'primary-hangs');
    assert.equal(r.status, 200, r.text);
    assert.equal(r.deployment, 'mock/mock-model-backup');
    assert.equal(r.fallbacks, '1');
    assert.ok(r.ms >= 250 && r.ms < within(1000), `took ${r.ms} ms; first_byte_timeout_ms is 300`);
    assert.deepEqual((await mockStats(mock)).by_model, { 'mock-hang': 1, 'mock-model-backup': 1 });
    assert.ok(metricValue(await metrics(gw), 'gateway_upstream_requests_total',
      { deployment: 'mock/mock-hang', status: 'timeout' }) >= 1);
  });

  test('a total deadline (timeout_ms) shorter than the hang gives 504', async () => {
    await mockReset(mock);
    const r = await chat(gw, 'deadline');
    assert.equal(r.status, 504, r.text);
    assert.ok(isOpenAIErrorEnvelope(r.json), r.text);
    assert.equal(r.json.error.type, 'timeout_error');
    assert.ok(r.ms >= 350 && r.ms < within(1500), `took ${r.ms} ms; timeout_ms is 400`);
    assert.deepEqual((await mockStats(mock)).by_model, { 'mock-hang': 1 });
  });

  test('a deadline used up by a hanging primary is not passed on to the backup (nor charged to its breaker)', async () => {
    await mockReset(mock);
    const r = await chat(gw, 'deadline-with-backup');
    assert.equal(r.status, 504, r.text);
    assert.ok(r.ms >= 350 && r.ms < within(1500), `took ${r.ms} ms; timeout_ms is 400`);
    assert.deepEqual((await mockStats(mock)).by_model, { 'mock-hang': 1 }, 'the backup must not be asked');
    assert.equal((await breakerOf(gw, 'mock/mock-delay-50')).window_failures, 0);
  });
});

describe('streams', () => {
  const content = 'one two three four five six';

  test('a stream that stalls after its role chunk falls back invisibly: the held-back preamble never reaches the client', async () => {
    await mockReset(mock);
    // mock-slow-1500 sends its role chunk at once and its first word 1.5 s later; the model's
    // first_byte_timeout_ms (300) also bounds the wait for the first content.
    const t0 = performance.now();
    const { data: stream, response } = await client.chat.completions.create(
      { ...chatBody('stream-slow-first', content), stream: true }).withResponse();
    assert.equal(response.headers.get('x-lowart-deployment'), 'mock/mock-model-backup');
    assert.equal(response.headers.get('x-lowart-fallbacks'), '1');
    const chunks = [];
    for await (const chunk of stream) chunks.push(chunk);
    const took = performance.now() - t0;
    assert.ok(took < within(1400, 1500), `the backup answered before the primary's first word (${took} ms)`);
    assert.equal(chunks.map((c) => c.choices[0]?.delta?.content ?? '').join(''), `mock reply: ${content}`);
    // One role chunk, and every chunk from the backup: the primary's preamble was dropped.
    assert.equal(chunks.filter((c) => c.choices[0]?.delta?.role).length, 1, JSON.stringify(chunks));
    assert.deepEqual([...new Set(chunks.map((c) => c.model))], ['mock-model-backup']);
    assert.deepEqual((await mockStats(mock)).by_model, { 'mock-slow-1500': 1, 'mock-model-backup': 1 });
  });

  test('a stream that breaks after content ends with an error event; the openai client throws', async () => {
    const stream = await client.chat.completions.create({ ...chatBody('stream-breaks', content), stream: true });
    const received = [];
    let caught;
    try {
      for await (const chunk of stream) received.push(chunk.choices[0]?.delta?.content ?? '');
    } catch (e) {
      caught = e;
    }
    assert.ok(caught, `the stream ended cleanly after ${JSON.stringify(received.join(''))}`);
    assert.ok(received.join('').length > 0, 'content arrived before the break');
  });

  test('the raw broken stream ends with data: {"error":...} and its usage record has status 502', async () => {
    const res = await fetch(`${gw.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${gw.masterKey}`, 'content-type': 'application/json' },
      body: JSON.stringify({ ...chatBody('stream-breaks', content), stream: true }),
      signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
    });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('x-lowart-deployment'), 'mock/mock-reset');
    const requestId = res.headers.get('x-request-id');
    const events = sseData(await res.text());
    assert.ok(!events.includes('[DONE]'), `a broken stream must not end with [DONE]: ${JSON.stringify(events)}`);
    const last = JSON.parse(events.at(-1));
    assert.ok(isOpenAIErrorEnvelope(last), `last event is not an error: ${events.at(-1)}`);

    const row = await waitFor(async () => (await sqliteQuery(gw.dbPath,
      `SELECT model, deployment, status, stream FROM usage_records WHERE request_id = '${requestId}'`))[0],
    { timeoutMs: 3000, what: `the usage record of ${requestId}` });
    assert.deepEqual(row, { model: 'stream-breaks', deployment: 'mock/mock-reset', status: 502, stream: 1 });
    assert.ok(metricValue(await metrics(gw), 'gateway_upstream_requests_total',
      { deployment: 'mock/mock-reset', status: 'reset' }) >= 1);
  });
});

describe('balancing', () => {
  test('weighted balancing splits 2000 requests 3:1 (within 5 points of 75/25)', async () => {
    await mockReset(mock);
    const results = await pool(2000, 16, async () => {
      const r = await chat(gw, 'weighted', { content: 'w' });
      return r.status === 200 ? r.deployment : `status ${r.status}`;
    });
    const counts = {};
    for (const d of results) counts[d] = (counts[d] ?? 0) + 1;
    assert.deepEqual(Object.keys(counts).sort(), ['mock/mock-model-heavy', 'mock/mock-model-light'], JSON.stringify(counts));
    const heavy = counts['mock/mock-model-heavy'] / 2000;
    assert.ok(Math.abs(heavy - 0.75) <= 0.05, `heavy share ${(heavy * 100).toFixed(1)}% (${JSON.stringify(counts)})`);
    // The upstream saw exactly what the headers say.
    assert.deepEqual((await mockStats(mock)).by_model,
      { 'mock-model-heavy': counts['mock/mock-model-heavy'], 'mock-model-light': counts['mock/mock-model-light'] });
  });

  test('least_inflight sends most concurrent requests to the fast deployment, not the 300 ms one', async () => {
    await mockReset(mock);
    // 20 concurrent clients, 5 requests each. (A single burst of 20 is not enough: requests that
    // arrive before any has finished alternate between the two, as least_inflight should; measured
    // 11 to 19 of 20 on the fast one. Sustained, the slow one keeps its in-flight count and the fast
    // one gets the rest: about 90 of 100.)
    const results = await pool(100, 20, async () => (await chat(gw, 'least-inflight', { content: 'li' })).deployment);
    const fast = results.filter((d) => d === 'mock/mock-model-fast').length;
    const slow = results.filter((d) => d === 'mock/mock-delay-300').length;
    assert.equal(fast + slow, 100, JSON.stringify(results));
    assert.ok(fast / 100 > 0.6, `fast share ${fast}% (slow ${slow})`);
  });
});

describe('latency-aware balancing', () => {
  test('latency picks the deployment with the lower EWMA once both have been measured', async () => {
    // Both get traffic first (the EWMA starts unknown); provider actors fold latencies every
    // second into the EWMA /admin/breakers shows: wait until both are measured.
    for (let i = 0; i < 12; i++) await chat(gw, 'latency-aware', { content: 'warm' });
    await waitFor(async () => {
      if ((await breakerOf(gw, 'mock/mock-delay-60')).latency_ewma_seconds > 0 &&
        (await breakerOf(gw, 'mock/mock-model-quick')).latency_ewma_seconds > 0) return true;
      await chat(gw, 'latency-aware', { content: 'warm' }); // one not measured yet may need traffic
      return false;
    }, { timeoutMs: 5000, intervalMs: 100, what: 'both latency EWMAs measured' });
    const results = [];
    for (let i = 0; i < 40; i++) results.push((await chat(gw, 'latency-aware', { content: 'lat' })).deployment);
    const quick = results.filter((d) => d === 'mock/mock-model-quick').length;
    // Power of two choices among two: the faster one is always preferred when both are known.
    assert.ok(quick >= 36, `quick share ${quick}/40: ${JSON.stringify(results)}`);
  });
});

// --- breakers: each test has its own gateway with its own [breaker] settings --------------------

describe('circuit breaker', () => {
  test('opens after min_requests with failure_rate reached; an open breaker gets no traffic', async () => {
    await mockReset(mock);
    const bgw = await startGateway({
      config: resilienceConfig({
        breaker: { window_s: 10, failure_rate: 0.5, min_requests: 4, open_ms: 30000, half_open_probes: 1 },
        providers: [{ name: 'mock', base_url: `${mock.url}/v1` }],
        models: [
          { name: 'guarded', deployments: [
            { provider: 'mock', model: 'mock-fail-500', priority: 0 },
            { provider: 'mock', model: 'mock-model-backup', priority: 1 }] },
          { name: 'unguarded', deployments: [{ provider: 'mock', model: 'mock-fail-500' }] },
        ],
      }),
    });
    const primary = 'mock/mock-fail-500';
    const settings = (await api(bgw, 'GET', '/admin/breakers')).json.settings;
    assert.deepEqual({ w: settings.window_s, r: settings.failure_rate, m: settings.min_requests, o: settings.open_ms },
      { w: 10, r: 0.5, m: 4, o: 30000 });

    for (let i = 1; i <= 4; i++) {
      if (i === 4) {
        // Three failures are below min_requests: still closed, once the three reports
        // (sent asynchronously) reached the breaker.
        const b = await waitFor(async () => {
          const entry = await breakerOf(bgw, primary);
          return entry.window_requests >= 3 && entry;
        }, { timeoutMs: 2000, intervalMs: 10, what: 'three reports at the breaker' });
        assert.equal(b.state, 'closed', JSON.stringify(b));
        assert.deepEqual({ n: b.window_requests, f: b.window_failures }, { n: 3, f: 3 });
      }
      const r = await chat(bgw, 'guarded');
      assert.equal(r.status, 200, r.text);
      assert.equal(r.deployment, 'mock/mock-model-backup');
    }
    await waitForBreaker(bgw, primary, 'open');
    const stats = await mockStats(mock);
    assert.equal(stats.by_model['mock-fail-500'], 4);

    const m = await metrics(bgw);
    assert.equal(metricValue(m, 'gateway_breaker_state', { deployment: primary }), 1);
    assert.equal(metricValue(m, 'gateway_breaker_state', { deployment: 'mock/mock-model-backup' }), 0);
    assert.equal(metricValue(m, 'gateway_breaker_transitions_total', { deployment: primary, to: 'open' }), 1);
    const line = await bgw.waitForLog((l) => l.msg === 'breaker transition' && l.deployment === primary);
    assert.deepEqual({ from: line.from, to: line.to }, { from: 'closed', to: 'open' });
    assert.ok(typeof line.reason === 'string' && line.reason.length > 0, JSON.stringify(line));

    // While open: requests skip the primary (counted as a move to another candidate) and succeed.
    for (let i = 0; i < 10; i++) {
      const r = await chat(bgw, 'guarded');
      assert.equal(r.status, 200, r.text);
      assert.equal(r.deployment, 'mock/mock-model-backup');
      assert.equal(r.fallbacks, '1');
      assert.ok(r.ms < within(500), `took ${r.ms} ms`);
    }
    // A model whose only deployment is that one has nothing left: 503, no upstream request.
    const none = await chat(bgw, 'unguarded');
    assert.equal(none.status, 503, none.text);
    assert.ok(isOpenAIErrorEnvelope(none.json), none.text);
    const after = await mockStats(mock);
    assert.equal(after.by_model['mock-fail-500'], 4, 'an open breaker must send nothing to its deployment');
    assert.equal(after.by_model['mock-model-backup'], 14);
    assert.equal((await breakerOf(bgw, primary)).state, 'open');
    // The breaker counts each transition as it logs it: once the (batched) log holds as many
    // lines as the counter says, it shows them all, and there was one.
    const made = metricValue(await metrics(bgw), 'gateway_breaker_transitions_total', { deployment: primary });
    await waitFor(() => transitions(bgw, primary).length >= made, { timeoutMs: 2000, what: 'every transition logged' });
    assert.equal(made, 1);
    assert.deepEqual(transitions(bgw, primary), ['closed>open']);
  });

  test('after open_ms a half-open probe that fails re-opens; one that succeeds closes and traffic returns', async () => {
    // The primary is a second mock on a fixed port: stopped, it refuses connections; a new
    // mock on the same port is the recovered upstream.
    const backup = await startMock();
    let upstream = await startMock();
    const port = upstream.port;
    const rgw = await startGateway({
      config: resilienceConfig({
        breaker: { window_s: 10, failure_rate: 0.5, min_requests: 3, open_ms: 500, half_open_probes: 1 },
        providers: [
          { name: 'flaky', base_url: `http://127.0.0.1:${port}/v1`, connect_timeout_ms: 1000 },
          { name: 'backup', base_url: `${backup.url}/v1` },
        ],
        models: [{ name: 'recovering', deployments: [
          { provider: 'flaky', model: 'mock-model', priority: 0 },
          { provider: 'backup', model: 'mock-model', priority: 1 }] }],
      }),
    });
    const primary = 'flaky/mock-model';

    const first = await chat(rgw, 'recovering');
    assert.equal(first.deployment, primary, 'a healthy primary serves');

    await upstream.stop();
    assert.equal(await canConnect(port), false);
    // Failures (connection refused) until the breaker opens; every request still succeeds.
    await waitFor(async () => {
      const r = await chat(rgw, 'recovering');
      assert.equal(r.status, 200, r.text);
      assert.equal(r.deployment, 'backup/mock-model');
      return (await breakerOf(rgw, primary)).state === 'open';
    }, { timeoutMs: 3000, intervalMs: 0, what: 'the breaker to open' });

    // Still down after open_ms: the half-open probe fails and the breaker re-opens.
    await waitForBreaker(rgw, primary, 'half_open', 2000);
    const failedProbe = await chat(rgw, 'recovering');
    assert.equal(failedProbe.status, 200, failedProbe.text);
    assert.equal(failedProbe.deployment, 'backup/mock-model');
    await waitForBreaker(rgw, primary, 'open', 1000);

    // The upstream comes back; after open_ms the next request is the probe and closes the breaker.
    upstream = await startMock({ port });
    await waitForBreaker(rgw, primary, 'half_open', 2000);
    const probe = await chat(rgw, 'recovering', { content: 'probe' });
    assert.equal(probe.status, 200, probe.text);
    assert.equal(probe.deployment, primary);
    assert.equal(probe.fallbacks, '0');
    await waitForBreaker(rgw, primary, 'closed', 1000);
    assert.deepEqual((await mockStats(upstream)).by_model, { 'mock-model': 1 }, 'exactly one probe');

    for (let i = 0; i < 3; i++) assert.equal((await chat(rgw, 'recovering')).deployment, primary);
    assert.deepEqual((await mockStats(upstream)).by_model, { 'mock-model': 4 });

    const expected = ['closed>open', 'open>half_open', 'half_open>open', 'open>half_open', 'half_open>closed'];
    await waitFor(() => transitions(rgw, primary).length >= expected.length,
      { timeoutMs: 2000, what: 'five breaker transition log lines' });
    assert.deepEqual(transitions(rgw, primary), expected);
    const m = await metrics(rgw);
    assert.equal(metricValue(m, 'gateway_breaker_state', { deployment: primary }), 0);
    assert.equal(metricValue(m, 'gateway_breaker_transitions_total', { deployment: primary, to: 'open' }), 2);
    assert.equal(metricValue(m, 'gateway_breaker_transitions_total', { deployment: primary, to: 'half_open' }), 2);
    assert.equal(metricValue(m, 'gateway_breaker_transitions_total', { deployment: primary, to: 'closed' }), 1);
  });
});
