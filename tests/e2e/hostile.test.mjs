// Clients that trickle: a request head sent a byte at a time is cut off after
// server.header_timeout_ms, and other clients are served meanwhile.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { api, cleanupAll, renderConfig, startGateway, startMock } from './harness.mjs';

let gw;

before(async () => {
  const mock = await startMock();
  gw = await startGateway({
    config: renderConfig({
      server: { header_timeout_ms: 800 },
      providers: [{ name: 'mock', base_url: `${mock.url}/v1` }],
      models: [{ name: 'gpt-demo', deployments: [{ provider: 'mock', model: 'mock-model' }] }],
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
  await Promise.race([closed, new Promise((_, reject) => setTimeout(() => reject(new Error('not cut off within 5 s')), 5000))]);
  clearInterval(drip);
  const ms = Date.now() - t0;
  assert.ok(ms >= 700 && ms < 3000, `cut off after ${ms} ms (header_timeout_ms 800)`);
  assert.ok(i < head.length, 'the head was still incomplete when the gateway closed');
});
