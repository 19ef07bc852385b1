// A request is sent upstream once: a pooled connection is retried on a fresh one only
// when the upstream cannot have read the request (it had closed or reset the idle
// connection before the request was written), never after the upstream read it; and a
// half-open breaker probe that got no answer (the request's deadline, the client gone)
// does not close the breaker. The upstream is a hand-made HTTP/1.1 server on node:net, so
// each test decides what happens to each request and to each idle connection.

import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { api, cleanupAll, sleep, startGateway, waitFor, REQUEST_TIMEOUT_MS } from './harness.mjs';

const servers = [];
after(async () => {
  for (const s of servers) s.close();
  await cleanupAll();
});

const completion = JSON.stringify({
  id: 'chatcmpl-once', object: 'chat.completion', created: 0, model: 'up-model',
  choices: [{ index: 0, message: { role: 'assistant', content: 'once' }, finish_reason: 'stop' }],
  usage: { prompt_tokens: 3, completion_tokens: 1, total_tokens: 4 },
});
const chunk = (text) => `data: ${JSON.stringify({
  id: 'chatcmpl-once', object: 'chat.completion.chunk', created: 0, model: 'up-model',
  choices: [{ index: 0, delta: { content: text }, finish_reason: null }],
})}\n\n`;

/**
 * The upstream. Each request read whole takes the next of `up.actions` ('ok' when none are
 * left): 'ok' answers a chat completion and keeps the connection; 'reset' resets the
 * connection (RST) once the request is read; 'fail' answers 500; 'hang' never answers;
 * 'trickle' starts an SSE stream and sends a chunk every 50 ms until the connection closes.
 * `up.idle = { ms, how: 'end' | 'reset' }` closes a connection that long after its answer.
 * `up.calls` lists every request read: { conn, action }.
 */
async function startUpstream() {
  const up = { calls: [], actions: [], idle: null, connections: 0, closed: 0 };
  const server = net.createServer((sock) => {
    const conn = ++up.connections;
    let buf = Buffer.alloc(0);
    let timer = null;
    sock.on('error', () => {});
    sock.on('close', () => { up.closed++; clearInterval(timer); clearTimeout(timer); });
    sock.on('data', (d) => {
      buf = Buffer.concat([buf, d]);
      for (;;) {
        const end = buf.indexOf('\r\n\r\n');
        if (end < 0) return;
        const head = buf.subarray(0, end).toString('latin1');
        const length = Number(/\r\ncontent-length:\s*(\d+)/i.exec(head)?.[1] ?? 0);
        if (buf.length < end + 4 + length) return;
        buf = buf.subarray(end + 4 + length);
        const action = up.actions.shift() ?? 'ok';
        up.calls.push({ conn, action });
        clearTimeout(timer);
        if (action === 'reset') return sock.resetAndDestroy();
        if (action === 'hang') return;
        if (action === 'trickle') {
          sock.write('HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n');
          const send = () => { const c = chunk('drip '); sock.write(`${Buffer.byteLength(c).toString(16)}\r\n${c}\r\n`); };
          send();
          timer = setInterval(send, 50);
          return;
        }
        const [status, body] = action === 'fail'
          ? ['500 Internal Server Error', '{"error":{"message":"upstream failure","type":"server_error"}}']
          : ['200 OK', completion];
        sock.write(`HTTP/1.1 ${status}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
        if (up.idle) {
          const { ms, how } = up.idle;
          timer = setTimeout(() => (how === 'reset' ? sock.resetAndDestroy() : sock.end()), ms);
        }
      }
    });
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  servers.push(server);
  up.url = `http://127.0.0.1:${server.address().port}/v1`;
  return up;
}

/** Upstream connections are pooled per I/O thread: one thread, so a request finds the pooled one. */
const gateway = (toml) => startGateway({ config: toml, env: { LOWART_IO_THREADS: '1' } });

function config(up, { breaker = '', model = '' } = {}) {
  return `[server]
listen = "127.0.0.1:3000"
${breaker}
[[providers]]
name = "up"
kind = "openai"
base_url = "${up.url}"

[[models]]
name = "m"
${model}
[[models.deployments]]
provider = "up"
model = "up-model"
`;
}

async function chat(gw, { stream = false, signal } = {}) {
  const res = await fetch(`${gw.url}/v1/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${gw.masterKey}`, 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'm', messages: [{ role: 'user', content: 'run me once' }], stream }),
    signal: signal ?? AbortSignal.timeout(REQUEST_TIMEOUT_MS),
  });
  return stream ? res : { status: res.status, text: await res.text() };
}

test('a request the upstream read and then reset, on a connection idle over a second, is not sent again', async () => {
  const up = await startUpstream();
  const gw = await gateway(config(up));
  assert.equal((await chat(gw)).status, 200); // leaves a pooled connection
  await sleep(1200);
  up.actions.push('reset');
  const r = await chat(gw);
  assert.equal(r.status, 502, r.text);
  assert.deepEqual(up.calls, [{ conn: 1, action: 'ok' }, { conn: 1, action: 'reset' }],
    'the request reached the upstream once, on the pooled connection');
  await gw.stop();
});

test('an idle connection the upstream closed before the request: the request goes out on a fresh one', async () => {
  for (const how of ['end', 'reset']) {
    const up = await startUpstream();
    up.idle = { ms: 100, how };
    const gw = await gateway(config(up));
    assert.equal((await chat(gw)).status, 200);
    await sleep(1200); // idle over a second: peeked before use, the close is seen there
    const r = await chat(gw);
    assert.equal(r.status, 200, `${how}: ${r.text}`);
    assert.deepEqual(up.calls, [{ conn: 1, action: 'ok' }, { conn: 2, action: 'ok' }], how);
    await gw.stop();
  }
});

test('an idle connection the upstream reset within the second: the failed write is retried on a fresh one', async () => {
  const up = await startUpstream();
  up.idle = { ms: 50, how: 'reset' };
  const gw = await gateway(config(up));
  assert.equal((await chat(gw)).status, 200);
  await sleep(400); // under a second: used without a peek, the write finds the reset
  const r = await chat(gw);
  assert.equal(r.status, 200, r.text);
  assert.deepEqual(up.calls, [{ conn: 1, action: 'ok' }, { conn: 2, action: 'ok' }]);
  await gw.stop();
});

// --- half-open probes that get no answer -------------------------------------------------------

const BREAKER = `[breaker]
window_s = 10
failure_rate = 0.5
min_requests = 2
open_ms = 300
half_open_probes = 1
`;

async function breakerState(gw) {
  const r = await api(gw, 'GET', '/admin/breakers');
  assert.equal(r.status, 200, r.text);
  return r.json.data.find((d) => d.deployment === 'up/up-model')?.state;
}

/** A gateway whose breaker for the upstream is half-open (opened by two 500s). */
async function halfOpen(up) {
  const gw = await gateway(config(up, { breaker: BREAKER, model: 'timeout_ms = 600' }));
  up.actions.push('fail', 'fail');
  assert.equal((await chat(gw)).status, 500);
  assert.equal((await chat(gw)).status, 500);
  await waitFor(async () => (await breakerState(gw)) === 'half_open', { what: 'the breaker half-open' });
  return gw;
}

const closings = (gw) => gw.logs().filter((l) => l.msg === 'breaker transition' && l.to === 'closed');

test('a half-open probe cut short by the request deadline leaves the breaker half-open', async () => {
  const up = await startUpstream();
  const gw = await halfOpen(up);
  up.actions.push('hang');
  const r = await chat(gw);
  assert.equal(r.status, 504, r.text);
  assert.equal(await breakerState(gw), 'half_open', 'a probe without an answer decides nothing');
  assert.equal(up.calls.length, 3);
  // The probe's place was given back: the next request probes, and its answer closes the breaker.
  assert.equal((await chat(gw)).status, 200);
  await waitFor(async () => (await breakerState(gw)) === 'closed', { what: 'the breaker closed' });
  await waitFor(() => closings(gw).length === 1, { what: 'one closing, by the answered probe' }); // logs are batched
  await gw.stop();
});

test('a half-open probe whose client went away leaves the breaker half-open', async () => {
  const up = await startUpstream();
  const gw = await halfOpen(up);
  up.actions.push('trickle');
  const ctl = new AbortController();
  const res = await chat(gw, { stream: true, signal: ctl.signal });
  assert.equal(res.status, 200);
  const reader = res.body.getReader();
  await reader.read(); // the stream has started
  ctl.abort();
  await waitFor(() => up.closed >= 1, { what: 'lowart to drop the upstream stream' });
  await sleep(100);
  assert.equal(await breakerState(gw), 'half_open', 'the upstream never finished its answer');
  assert.deepEqual(closings(gw), []);
  assert.equal((await chat(gw)).status, 200);
  await waitFor(async () => (await breakerState(gw)) === 'closed', { what: 'the breaker closed' });
  await gw.stop();
});
