// Hostile clients on loopback: a head trickled a byte at a time, a body that never
// ends, oversized headers, thousands of idle connections and more connections than
// server.max_connections. Each is cut off by a timeout or a limit, its resources are
// freed (gateway_connections_open comes back down), and other clients keep being served.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import {
  api, cleanupAll, metricValue, parseMetrics, renderConfig, sleep, startGateway, startMock, waitFor, TIME_SCALE,
} from './harness.mjs';

// Upper bounds stretch by LOWART_TIME_SCALE (sanitizer builds); lower bounds, which
// prove a wait of the gateway's own timeouts, stay as they are.

let gw;

before(async () => {
  const mock = await startMock();
  gw = await startGateway({
    config: renderConfig({
      server: { header_timeout_ms: 800, idle_timeout_ms: 1500, max_connections: 1500, max_header_bytes: 8192 },
      providers: [{ name: 'mock', base_url: `${mock.url}/v1` }],
      models: [{ name: 'gpt-demo', deployments: [{ provider: 'mock', model: 'mock-model' }] },
        { name: 'flood', deployments: [{ provider: 'mock', model: 'mock-flood-200000' }] }],
    }),
  });
});

after(cleanupAll);

test('a head trickled a byte at a time is cut off after header_timeout_ms; others are served', async () => {
  const head = 'POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nX-Padding: ' + 'a'.repeat(200);
  const socket = net.connect(gw.port, '127.0.0.1');
  await new Promise((resolve) => socket.once('connect', resolve));
  const t0 = Date.now();
  let i = 0;
  const drip = setInterval(() => { if (i < head.length && !socket.destroyed) socket.write(head[i++]); }, 50);
  const closed = new Promise((resolve) => socket.once('close', resolve));
  socket.on('error', () => {});
  socket.resume();
  // Meanwhile a normal client gets its answer.
  const r = await api(gw, 'POST', '/v1/chat/completions', { body: { model: 'gpt-demo', messages: [{ role: 'user', content: 'hi' }] } });
  assert.equal(r.status, 200);
  await Promise.race([closed, new Promise((_, reject) =>
    setTimeout(() => reject(new Error(`not cut off within ${5 * TIME_SCALE} s`)), 5000 * TIME_SCALE))]);
  clearInterval(drip);
  const ms = Date.now() - t0;
  assert.ok(ms >= 700 && ms < 3000 * TIME_SCALE, `cut off after ${ms} ms (header_timeout_ms 800)`);
  assert.ok(i < head.length, 'the head was still incomplete when the gateway closed');
});

const chat = () => api(gw, 'POST', '/v1/chat/completions', { body: { model: 'gpt-demo', messages: [{ role: 'user', content: 'hi' }] } });

function open() {
  return new Promise((resolve, reject) => {
    const s = net.connect(gw.port, '127.0.0.1');
    s.once('connect', () => resolve(s));
    s.once('error', reject);
  });
}

/** Resolves when `socket` closes; rejects after `ms` (scaled by TIME_SCALE). */
const closedWithin = (socket, ms) => Promise.race([
  new Promise((resolve) => (socket.destroyed ? resolve() : socket.once('close', resolve))),
  new Promise((_, reject) =>
    setTimeout(() => reject(new Error(`not closed within ${ms * TIME_SCALE} ms`)), ms * TIME_SCALE)),
]);

async function openConnections() {
  const m = parseMetrics((await api(gw, 'GET', '/metrics')).text);
  return metricValue(m, 'gateway_connections_open');
}

test('a body that never ends is cut off after header_timeout_ms', async () => {
  for (const head of [
    'POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{"model":',
    'POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{"mod\r\n',
  ]) {
    const s = await open();
    s.on('error', () => {});
    s.resume();
    s.write(head);
    const t0 = Date.now();
    assert.equal((await chat()).status, 200, 'others are served meanwhile');
    await closedWithin(s, 5000);
    assert.ok(Date.now() - t0 < 3000 * TIME_SCALE, `closed after ${Date.now() - t0} ms (header_timeout_ms 800)`);
  }
});

test('oversized headers get 431 and the connection is closed', async () => {
  const s = await open();
  let text = '';
  s.on('data', (d) => { text += d; });
  s.on('error', () => {});
  s.write(`GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ${'b'.repeat(20000)}\r\n\r\n`);
  await closedWithin(s, 5000);
  assert.match(text, /^HTTP\/1\.1 431/);
  assert.equal((await chat()).status, 200);
});

test('thousands of idle connections are closed after idle_timeout_ms; others are served meanwhile', async () => {
  const idle = [];
  for (let i = 0; i < 1000; i++) idle.push(await open());
  for (const s of idle) { s.on('error', () => {}); s.resume(); }
  const t0 = Date.now();
  assert.equal((await chat()).status, 200);
  assert.ok(Date.now() - t0 < 1000 * TIME_SCALE, 'a normal request is not slowed down by 1000 idle connections');
  assert.ok(await openConnections() >= 1000);
  await Promise.all(idle.map((s) => closedWithin(s, 6000)));
  await waitFor(async () => (await openConnections()) <= 2, { timeoutMs: 3000, what: 'connections freed' });
});

test('exactly the connections over server.max_connections are closed at once; the gateway recovers', async () => {
  // A gateway of its own with a long idle timeout: no connection here can close by idling.
  const mock = await startMock();
  const small = await startGateway({
    config: renderConfig({
      server: { idle_timeout_ms: 60000, header_timeout_ms: 60000, max_connections: 200 },
      providers: [{ name: 'mock', base_url: `${mock.url}/v1` }],
      models: [{ name: 'gpt-demo', deployments: [{ provider: 'mock', model: 'mock-model' }] }],
    }),
  });
  const connect = () => new Promise((resolve, reject) => {
    const s = net.connect(small.port, '127.0.0.1');
    s.once('connect', () => resolve(s));
    s.once('error', reject);
  });
  const held = [];
  for (let i = 0; i < 230; i++) {
    const s = await connect();
    s.on('error', () => {});
    s.resume();
    s.closedAt = null;
    s.once('close', () => { s.closedAt = Date.now(); });
    held.push(s);
  }
  const t0 = Date.now();
  await waitFor(() => held.filter((s) => s.closedAt).length >= 30, { timeoutMs: 1000, what: 'the 30 over the limit closed' });
  await sleep(500 * TIME_SCALE); // and no more than those
  const closed = held.map((s, i) => (s.closedAt ? i : -1)).filter((i) => i >= 0);
  assert.equal(closed.length, 30, `${closed.length} closed`);
  assert.ok(closed.every((i) => i >= 200), `a connection under the limit was closed: ${closed.filter((i) => i < 200)}`);
  // At once: long before any timeout (60 s) could have closed them.
  const last = Math.max(...held.filter((s) => s.closedAt).map((s) => s.closedAt));
  assert.ok(last - t0 < 1000 * TIME_SCALE, `the last of them closed ${last - t0} ms after the 230th connected`);
  // A held connection under the limit still gets answered.
  held[0].write('GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n');
  const answer = await new Promise((resolve) => held[0].once('data', (d) => resolve(String(d))));
  assert.match(answer, /^HTTP\/1.1 200/);
  for (const s of held) s.destroy();
  await waitFor(async () => {
    try { return (await api(small, 'GET', '/healthz')).status === 200; } catch { return false; }
  }, { timeoutMs: 5000, what: 'service after the flood' });
  await small.stop();
});

test('a client that stops reading a stream is cut off after idle_timeout_ms; the upstream is let go', async () => {
  const s = await open();
  s.on('error', () => {});
  const body = JSON.stringify({ model: 'flood', stream: true, messages: [{ role: 'user', content: 'x' }] });
  let received = 0;
  s.on('data', (d) => { received += d.length; if (received > 64 * 1024) s.pause(); });
  s.write(`POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${gw.masterKey}\r\n` +
    `Content-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
  // 200 MB would follow; the client reads 64 KB and stops. lowart's write then waits,
  // times out after idle_timeout_ms (1.5 s), and ends both connections.
  const line = await gw.waitForLog((l) => l.msg === 'request' && l.model === 'flood', 10000);
  assert.equal(line.status, 499, JSON.stringify(line));
  assert.ok(received < 50 * 1024 * 1024, `the client got ${received} bytes`);
  assert.equal((await chat()).status, 200, 'others are served');
  s.destroy();
  await waitFor(async () => (await openConnections()) <= 2, { timeoutMs: 3000, what: 'connections freed' });
});
