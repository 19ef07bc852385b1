// The downstream connection as a client's bytes reach it: requests pipelined in one
// write, a request larger than one read, a head and body trickled in pieces, and slow
// readers of a large static file. lowart reads a new request into a per-thread scratch
// buffer and keeps only leftovers, and writes static files by reference: these tests
// hold it to what a plain HTTP/1.1 server does (RFC 9112), and the slow-reader test to
// its memory staying flat however many clients stall on a large file.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import fsp from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { getEncoding } from 'js-tiktoken';
import { api, cleanupAll, renderConfig, sleep, startGateway, startMock, tempDir, TIME_SCALE } from './harness.mjs';

let gw;
let big; // the large console file's bytes
const BIG_BYTES = 3 * 1024 * 1024;

before(async () => {
  const mock = await startMock();
  const ui = await tempDir('lowart-ui-');
  await fsp.mkdir(path.join(ui, 'assets'));
  await fsp.writeFile(path.join(ui, 'index.html'), '<!doctype html><title>t</title>');
  big = Buffer.from(randomBytes(BIG_BYTES / 4 * 3).toString('base64'));
  await fsp.writeFile(path.join(ui, 'assets', 'big.js'), big);
  gw = await startGateway({
    // A small send buffer: the kernel takes little of a large answer, so lowart's own
    // asynchronous write carries most of it.
    config: renderConfig({
      server: { send_buffer_bytes: 4096, idle_timeout_ms: 8000 },
      providers: [{ name: 'mock', base_url: `${mock.url}/v1` }],
      models: [{ name: 'gpt-demo', deployments: [{ provider: 'mock', model: 'mock-model' }] },
        // 400 events of 1,000 bytes written as fast as lowart reads: bursts far larger than
        // its 4 KiB stream read buffer.
        { name: 'gpt-4o', deployments: [{ provider: 'mock', model: 'mock-flood-400' }] }],
    }),
    env: { LOWART_UI_DIR: ui },
  });
});

after(cleanupAll);

function connect() {
  return new Promise((resolve, reject) => {
    const s = net.connect(gw.port, '127.0.0.1');
    s.once('connect', () => resolve(s));
    s.once('error', reject);
  });
}

/** Parses complete HTTP/1.1 responses (Content-Length framed) off the front of `buf`. */
function parseResponses(buf) {
  const out = [];
  let at = 0;
  for (;;) {
    const end = buf.indexOf('\r\n\r\n', at);
    if (end < 0) break;
    const head = buf.subarray(at, end).toString('latin1').split('\r\n');
    const status = Number(head[0].split(' ')[1]);
    const headers = {};
    for (const line of head.slice(1)) {
      const i = line.indexOf(':');
      headers[line.slice(0, i).toLowerCase()] = line.slice(i + 1).trim();
    }
    const len = Number(headers['content-length'] ?? 0);
    if (buf.length < end + 4 + len) break;
    out.push({ status, headers, body: buf.subarray(end + 4, end + 4 + len) });
    at = end + 4 + len;
  }
  return { responses: out, rest: buf.subarray(at) };
}

/** Sends `chunks` (with `gapMs` between them) on one connection; resolves the first `count` responses. */
async function exchange(chunks, count, { gapMs = 0, timeoutMs = 10000 } = {}) {
  const s = await connect();
  let buf = Buffer.alloc(0);
  const done = new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`only ${parseResponses(buf).responses.length} of ${count} answers`)),
      timeoutMs * TIME_SCALE);
    s.on('data', (d) => {
      buf = Buffer.concat([buf, d]);
      const { responses } = parseResponses(buf);
      if (responses.length >= count) { clearTimeout(timer); resolve(responses); }
    });
    s.on('error', reject);
  });
  for (const c of chunks) {
    s.write(c);
    if (gapMs) await sleep(gapMs);
  }
  try { return await done; } finally { s.destroy(); }
}

function chatRequest(id, content = 'hi', extra = '') {
  const body = JSON.stringify({ model: 'gpt-demo', messages: [{ role: 'user', content }] });
  return `POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${gw.masterKey}\r\n` +
    `Content-Type: application/json\r\nx-request-id: ${id}\r\nContent-Length: ${Buffer.byteLength(body)}\r\n${extra}\r\n${body}`;
}

test('requests pipelined in one write are each answered once, in order', async () => {
  const wire = chatRequest('pipe-1') + 'GET /healthz HTTP/1.1\r\nHost: x\r\nx-request-id: pipe-2\r\n\r\n' +
    chatRequest('pipe-3') + chatRequest('pipe-4');
  const answers = await exchange([wire], 4);
  assert.deepEqual(answers.map((a) => a.headers['x-request-id']), ['pipe-1', 'pipe-2', 'pipe-3', 'pipe-4']);
  assert.deepEqual(answers.map((a) => a.status), [200, 200, 200, 200]);
  assert.equal(JSON.parse(answers[1].body).status, 'ok');
});

test('a request larger than one read and one trickled in pieces parse to what one write gives', async () => {
  // The reference: the same bodies sent by fetch in one go.
  const long = 'lorem ipsum dolor sit amet, '.repeat(4000); // ~110 KB, far beyond the 16 KiB scratch
  const ref = await api(gw, 'POST', '/v1/chat/completions', {
    body: { model: 'gpt-demo', messages: [{ role: 'user', content: long }] },
  });
  assert.equal(ref.status, 200);
  const [whole] = await exchange([chatRequest('big-1', long)], 1);
  assert.equal(whole.status, 200);
  assert.equal(JSON.parse(whole.body).usage.prompt_tokens, ref.json.usage.prompt_tokens);

  // Split at every kind of place: inside the request line, a header name, the blank line
  // and the body, with pauses between, then a second request on the same connection.
  const wire = chatRequest('split-1', long);
  const cuts = [5, 60, wire.indexOf('\r\n\r\n') + 2, wire.indexOf('\r\n\r\n') + 100, wire.length - 7];
  const pieces = [];
  let at = 0;
  for (const c of cuts) { pieces.push(wire.slice(at, c)); at = c; }
  pieces.push(wire.slice(at) + chatRequest('split-2'));
  const answers = await exchange(pieces, 2, { gapMs: 60 });
  assert.deepEqual(answers.map((a) => [a.status, a.headers['x-request-id']]), [[200, 'split-1'], [200, 'split-2']]);
  assert.equal(JSON.parse(answers[0].body).usage.prompt_tokens, ref.json.usage.prompt_tokens);
});

async function rssKb() {
  const status = await fsp.readFile(`/proc/${gw.proc.pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+)/.exec(status)[1]);
}

test('slow readers of a large static file get it whole, and lowart holds no copy for them', async () => {
  const want = createHash('sha256').update(big).digest('hex');
  const readers = 24;
  const before = await rssKb();
  const sockets = [];
  for (let i = 0; i < readers; i++) {
    const s = await connect();
    s.chunks = [];
    s.on('data', (d) => s.chunks.push(d));
    s.write('GET /ui/assets/big.js HTTP/1.1\r\nHost: x\r\n\r\n');
    s.pause(); // stalls: the kernel buffers fill, the rest waits in lowart's write
    sockets.push(s);
  }
  await sleep(800);
  const during = await rssKb();
  // Copied per reader, 24 readers of 3 MiB would be ~72 MiB more.
  assert.ok(during - before < 24 * 1024, `RSS rose ${during - before} KiB with ${readers} stalled readers`);
  const bodies = await Promise.all(sockets.map((s) => new Promise((resolve, reject) => {
    s.on('error', reject);
    const check = () => {
      const { responses } = parseResponses(Buffer.concat(s.chunks));
      if (responses.length) { s.destroy(); resolve(responses[0]); }
    };
    s.on('data', check);
    s.resume();
  })));
  for (const r of bodies) {
    assert.equal(r.status, 200);
    assert.equal(Number(r.headers['content-length']), big.length);
    assert.equal(createHash('sha256').update(r.body).digest('hex'), want);
  }
});

test('a HEAD of a large file is followed by the next answer on the same connection, no body between', async () => {
  const s = await connect();
  let buf = Buffer.alloc(0);
  s.on('data', (d) => { buf = Buffer.concat([buf, d]); });
  s.write('HEAD /ui/assets/big.js HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n');
  const deadline = Date.now() + 5000 * TIME_SCALE;
  while (Date.now() < deadline && buf.indexOf('{"status":"ok"}') < 0) await sleep(20);
  s.destroy();
  const text = buf.toString('latin1');
  const heads = text.split('HTTP/1.1 ').filter(Boolean);
  assert.equal(heads.length, 2, text.slice(0, 400));
  assert.match(heads[0], new RegExp(`Content-Length: ${big.length}\r\n`));
  assert.ok(heads[0].endsWith('\r\n\r\n'), 'the HEAD answer carries no body');
  assert.match(heads[1], /\{"status":"ok"\}$/);
});

test('a stream arriving in bursts larger than the read buffer is relayed whole and counted exactly', async () => {
  const res = await fetch(`${gw.url}/v1/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${gw.masterKey}`, 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'gpt-4o', stream: true, stream_options: { include_usage: true },
      messages: [{ role: 'user', content: 'flood me' }] }),
  });
  assert.equal(res.status, 200);
  const text = await res.text();
  let content = '';
  let usage;
  for (const line of text.split('\n')) {
    if (!line.startsWith('data: ') || line === 'data: [DONE]') continue;
    const ev = JSON.parse(line.slice(6));
    content += ev.choices?.[0]?.delta?.content ?? '';
    if (ev.usage) usage = ev.usage;
  }
  assert.ok(text.trimEnd().endsWith('data: [DONE]'));
  let filler = '';
  while (filler.length < 1000) filler += 'flood ';
  assert.equal(content, filler.repeat(400));
  // The reference count of the whole text (js-tiktoken), not lowart's own.
  assert.equal(usage.completion_tokens, getEncoding('o200k_base').encode(content).length);
});

test('client sockets get the configured send buffer ([server] send_buffer_bytes)', async () => {
  const s = await connect();
  try {
    await exchange(['GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n'], 1); // the gateway has accepted by now
    // The kernel's own view of lowart's end of the connection: skmem's tb is the send buffer.
    const { execFileSync } = await import('node:child_process');
    const out = execFileSync('ss', ['-tmnH', 'state', 'established', `( sport = :${gw.port} and dport = :${s.localPort} )`]).toString();
    const tb = Number(/\btb(\d+)/.exec(out)?.[1]);
    // SO_SNDBUF 4096 is doubled by the kernel (and raised to its minimum); autotuning starts at 16 KiB and grows.
    assert.ok(tb > 0 && tb <= 2 * 4096 + 512, `lowart's send buffer is ${tb} bytes:\n${out}`);
  } finally { s.destroy(); }
});
