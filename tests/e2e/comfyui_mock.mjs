// A mock ComfyUI server for lowart's end-to-end tests: the HTTP API (/prompt, /queue,
// /history, /interrupt, /view, /system_stats, /object_info) and the /ws event stream, close
// enough to the real thing that a real client works against it. Images are tiny valid PNGs
// kept in memory. Node builtins only; the WebSocket server side is written by hand.
//
// As a process:  node comfyui_mock.mjs --port 0 [--step-ms 20] [--concurrency 1] [--name a] [--own-prompt-ids]
//   --own-prompt-ids: POST /prompt ignores the client's prompt_id and queues the prompt under an
//   id of its own, as ComfyUI releases before client ids were honoured do (and proxies in front
//   of ComfyUI); the answer's prompt_id is the only name of the prompt from then on.
//   prints "comfyui-mock listening on 127.0.0.1:<port>" once listening; exits on SIGTERM/SIGINT.
//   --exit-on-stdin-close also exits when stdin reaches EOF (spawnComfyMock uses it so that a
//   mock never outlives a test runner that was killed outright).
// As a module:   startComfyMock(opts) runs it in-process; spawnComfyMock(opts) as a child.
//
// Test-control endpoints (not ComfyUI): GET /mock/stats, POST /mock/config, POST /mock/reset.
// /mock/stats counts runs by prompt id (`executions`) and by the client_id the prompt was sent
// with (`runs_by_client`: with --own-prompt-ids every hand-over gets a new prompt id, so this is
// how a test sees one job run twice; `prompt_requests` counts POST /prompt bodies received, before
// latency_ms delays the answer). /mock/config `lose_prompts: true` answers POST /prompt as
// usual but forgets the prompt at once (a backend that restarted right after accepting it).
// Every route is also served under /api/... as newer ComfyUI versions do.

import http from 'node:http';
import crypto from 'node:crypto';
import fs from 'node:fs';
import zlib from 'node:zlib';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const THIS_FILE = fileURLToPath(import.meta.url);
const OUTPUT_NODES = new Set(['SaveImage', 'SaveAnimatedWEBP', 'PreviewImage']);
const SAMPLER_NODES = new Set(['KSampler', 'KSamplerAdvanced']);
const LATENT_NODES = new Set(['EmptyLatentImage', 'EmptySD3LatentImage']);
const MAX_BODY = 16 << 20; // request bodies above this are refused with 413
const MAX_WS_PAYLOAD = 1 << 20; // client frames above this close the socket with 1009
const WS_GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';
const READY_RE = /comfyui-mock listening on [\d.]+:(\d+)/;

const isObj = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);

// --- PNG ------------------------------------------------------------------------------------

const PNG_SIG = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

function crc32(buf) {
  let c = 0xffffffff;
  for (const b of buf) c = CRC_TABLE[(c ^ b) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function pngChunk(type, data) {
  const out = Buffer.alloc(12 + data.length);
  out.writeUInt32BE(data.length, 0);
  out.write(type, 4, 'latin1');
  data.copy(out, 8);
  out.writeUInt32BE(crc32(out.subarray(4, 8 + data.length)), 8 + data.length); // CRC covers type + data
  return out;
}

// tEXt is Latin-1 only: escape everything outside printable ASCII so the JSON stays valid.
const asciiJson = (v) => JSON.stringify(v ?? null).replace(/[\u007f-\uffff]/g,
  (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);

/** An 8x8 8-bit RGB PNG filled with one colour, with tEXt chunks from `text`. */
function makePng([r, g, b], text, size = 8) {
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(size, 0);
  ihdr.writeUInt32BE(size, 4);
  ihdr[8] = 8; // bit depth
  ihdr[9] = 2; // colour type RGB; compression, filter and interlace stay 0
  const row = Buffer.alloc(1 + size * 3); // leading 0 = filter type "None"
  for (let x = 0; x < size; x++) row.set([r, g, b], 1 + x * 3);
  const idat = zlib.deflateSync(Buffer.concat(Array(size).fill(row)));
  const texts = Object.entries(text).map(([k, v]) => pngChunk('tEXt', Buffer.from(`${k}\0${v}`, 'latin1')));
  return Buffer.concat([PNG_SIG, pngChunk('IHDR', ihdr), ...texts, pngChunk('IDAT', idat), pngChunk('IEND', Buffer.alloc(0))]);
}

/** The pixel colour of batch image `index` for `seed`: the first 3 bytes of sha256("<seed>:<index>"). */
function seedColour(seed, index) {
  const h = crypto.createHash('sha256').update(`${seed}:${index}`).digest();
  return [h[0], h[1], h[2]];
}

// --- WebSocket (server side of RFC 6455, just enough for ComfyUI's event stream) -------------

function wsFrame(opcode, payload) {
  const len = payload.length;
  let head;
  if (len < 126) {
    head = Buffer.from([0x80 | opcode, len]); // FIN + opcode; server frames are never masked
  } else if (len < 65536) {
    head = Buffer.alloc(4);
    head[1] = 126;
    head.writeUInt16BE(len, 2);
  } else {
    head = Buffer.alloc(10);
    head[1] = 127;
    head.writeBigUInt64BE(BigInt(len), 2);
  }
  head[0] = 0x80 | opcode;
  return Buffer.concat([head, payload]);
}

/**
 * Wraps an upgraded socket. Answers pings, echoes a close frame and ends the socket on a
 * client close, ignores data frames. `onGone` runs once when the socket is finished.
 */
function wsAttach(socket, head, onGone) {
  let buf = Buffer.from(head ?? []);
  let closing = false;
  let gone = false;
  const finish = () => { if (!gone) { gone = true; onGone(); } };
  const ws = {
    get open() { return !closing && socket.writable; },
    send(text) { if (ws.open) socket.write(wsFrame(0x1, Buffer.from(text))); },
    close(code = 1000) {
      if (closing) return;
      closing = true;
      const p = Buffer.alloc(2);
      p.writeUInt16BE(code, 0);
      if (socket.writable) socket.end(wsFrame(0x8, p));
      setTimeout(() => socket.destroy(), 1000).unref(); // bounded wait for the peer to hang up
      finish();
    },
    destroy() { closing = true; socket.destroy(); finish(); },
  };
  socket.on('data', (d) => {
    buf = buf.length ? Buffer.concat([buf, d]) : d;
    while (!closing && buf.length >= 2) {
      const opcode = buf[0] & 0x0f;
      const masked = (buf[1] & 0x80) !== 0;
      let len = buf[1] & 0x7f;
      let off = 2;
      if (len === 126) {
        if (buf.length < 4) return;
        len = buf.readUInt16BE(2);
        off = 4;
      } else if (len === 127) {
        if (buf.length < 10) return;
        const big = buf.readBigUInt64BE(2);
        len = big > BigInt(MAX_WS_PAYLOAD) ? Infinity : Number(big);
        off = 10;
      }
      if (len > MAX_WS_PAYLOAD) return ws.close(1009);
      if (!masked) return ws.close(1002); // RFC 6455 5.1: clients must mask
      if (buf.length < off + 4 + len) return; // wait for the rest of the frame
      const mask = buf.subarray(off, off + 4);
      const payload = Buffer.from(buf.subarray(off + 4, off + 4 + len));
      for (let i = 0; i < len; i++) payload[i] ^= mask[i & 3];
      buf = buf.subarray(off + 4 + len);
      if (opcode === 0x8) return ws.close(payload.length >= 2 ? payload.readUInt16BE(0) : 1000);
      if (opcode === 0x9 && socket.writable) socket.write(wsFrame(0xa, payload)); // ping -> pong
      // text, binary, continuation and pong frames are ignored
    }
  });
  socket.on('close', finish);
  socket.on('error', () => socket.destroy());
  return ws;
}

// --- the mock server -------------------------------------------------------------------------

/**
 * Starts a mock ComfyUI on 127.0.0.1. Resolves with { port, url, close() } once listening.
 * `stepMs` is the time one sampler step takes; `concurrency` how many prompts run at once.
 */
export async function startComfyMock({
  port = 0, stepMs = 20, concurrency = 1, name = 'a', host = '127.0.0.1', ownPromptIds = false,
} = {}) {
  const initialConfig = { step_ms: stepMs, concurrency, refuse_prompts: false, latency_ms: 0, lose_prompts: false };
  let config = { ...initialConfig };
  let pending = []; // queue entries: [number, prompt_id, prompt, extra_data, outputs_to_execute]
  const running = new Set(); // run records, see startRun()
  const history = new Map(); // prompt_id -> { prompt, outputs, status, meta }, oldest first
  const images = new Map(); // `${type}\0${subfolder}\0${filename}` -> PNG bytes
  const clients = new Set(); // { ws, clientId }
  const sleepers = new Set(); // latency timers, cleared by close()
  let number = 0;
  let fileCounter = 0;
  let lastStatus = -1;
  let closed = false;
  const freshStats = () => ({
    submitted: 0, executions: {}, runs_by_client: {}, lost: 0, completed: 0, failed: 0, interrupted: 0, deleted: 0,
    max_concurrent_seen: 0, view_requests: 0, history_requests: 0, queue_requests: 0,
    interrupt_requests: 0, ws_connects: 0, prompt_requests: 0,
  });
  let stats = freshStats();

  // ComfyUI counts running prompts as "remaining" too.
  const queueRemaining = () => pending.length + running.size;
  const statusMsg = (sid) => JSON.stringify({
    type: 'status', data: { status: { exec_info: { queue_remaining: queueRemaining() } }, ...(sid ? { sid } : {}) },
  });

  function broadcastStatus() {
    if (queueRemaining() === lastStatus) return;
    lastStatus = queueRemaining();
    const msg = statusMsg();
    for (const c of clients) c.ws.send(msg);
  }

  // Execution events go only to the sockets whose clientId is the prompt's client_id.
  function emit(run, type, data) {
    if (!run.clientId) return;
    const msg = JSON.stringify({ type, data });
    for (const c of clients) if (c.clientId === run.clientId) c.ws.send(msg);
  }

  // Starting a prompt moves it from pending to running, which leaves queue_remaining alone, so
  // the status goes out first (as ComfyUI sends it on queue changes, before execution_start).
  function pump() {
    broadcastStatus();
    while (!closed && running.size < config.concurrency && pending.length) startRun(pending.shift());
  }

  const intInput = (node, key, dflt) => {
    const v = Number(node?.inputs?.[key]); // links ([node, slot]) and junk give NaN -> default
    return Number.isFinite(v) && v >= 0 ? Math.floor(v) : dflt;
  };
  const hasFailText = (v) => (typeof v === 'string' ? v.includes('MOCK_FAIL')
    : v && typeof v === 'object' ? Object.values(v).some(hasFailText) : false);

  function startRun(entry) {
    const [, id, prompt, extra] = entry;
    const nodes = Object.entries(prompt);
    const sampler = nodes.find(([, n]) => SAMPLER_NODES.has(n.class_type));
    const failNode = nodes.find(([, n]) => n.class_type === 'MockFail') ?? nodes.find(([, n]) => hasFailText(n.inputs));
    const [nodeId, node] = sampler ?? nodes[0];
    const run = {
      entry, id, prompt, clientId: extra.client_id, steps: intInput(sampler?.[1], 'steps', 20), step: 0,
      nodeId, nodeType: node.class_type, failNode, timer: null, messages: [],
    };
    running.add(run);
    stats.executions[id] = (stats.executions[id] ?? 0) + 1;
    const client = extra.client_id ?? '';
    stats.runs_by_client[client] = (stats.runs_by_client[client] ?? 0) + 1;
    stats.max_concurrent_seen = Math.max(stats.max_concurrent_seen, running.size);
    const timestamp = Date.now();
    run.messages.push(['execution_start', { prompt_id: id, timestamp }]);
    emit(run, 'execution_start', { prompt_id: id, timestamp });
    emit(run, 'execution_cached', { nodes: [], prompt_id: id, timestamp });
    emit(run, 'executing', { node: nodeId, display_node: nodeId, prompt_id: id });
    run.timer = setTimeout(() => tick(run), config.step_ms);
  }

  // One sampler step. step_ms is re-read each step so /mock/config applies to running prompts.
  function tick(run) {
    run.timer = null;
    if (run.steps > 0) {
      run.step++;
      emit(run, 'progress', { value: run.step, max: run.steps, prompt_id: run.id, node: run.nodeId });
    }
    if (run.failNode && run.step >= Math.floor(run.steps / 2)) {
      return finishError(run, run.failNode[0], run.failNode[1].class_type, 'mock failure requested');
    }
    if (run.step >= run.steps) return finishSuccess(run);
    run.timer = setTimeout(() => tick(run), config.step_ms);
  }

  function finish(run, status, outputs) {
    clearTimeout(run.timer);
    running.delete(run);
    history.delete(run.id); // a re-run of the same prompt_id replaces the entry and moves it last
    history.set(run.id, { prompt: run.entry, outputs, status, meta: {} });
    emit(run, 'executing', { node: null, prompt_id: run.id }); // ComfyUI sends this after every prompt
    pump();
  }

  function finishError(run, nodeId, nodeType, message) {
    const data = {
      prompt_id: run.id, node_id: nodeId, node_type: nodeType, executed: [], exception_message: message,
      exception_type: 'RuntimeError', traceback: [], current_inputs: {}, current_outputs: {}, timestamp: Date.now(),
    };
    emit(run, 'execution_error', data);
    stats.failed++;
    finish(run, { status_str: 'error', completed: false, messages: [...run.messages, ['execution_error', data]] }, {});
  }

  function interruptRun(run) {
    const data = { prompt_id: run.id, node_id: run.nodeId, node_type: run.nodeType, executed: [], timestamp: Date.now() };
    emit(run, 'execution_interrupted', data);
    stats.interrupted++;
    finish(run, { status_str: 'error', completed: false, messages: [...run.messages, ['execution_interrupted', data]] }, {});
  }

  function finishSuccess(run) {
    const nodes = Object.entries(run.prompt);
    const first = (set) => nodes.find(([, n]) => set.has(n.class_type))?.[1];
    const latent = first(LATENT_NODES);
    const sampler = first(SAMPLER_NODES);
    const batch = Math.min(Math.max(intInput(latent, 'batch_size', 1), 1), 64);
    const size = `${intInput(latent, 'width', 512)}x${intInput(latent, 'height', 512)}`;
    const seed = sampler?.inputs?.seed ?? sampler?.inputs?.noise_seed ?? 0;
    const text = first(new Set(['CLIPTextEncode']))?.inputs?.text;
    // Like ComfyUI, a filename_prefix "a/b" saves "b_00001_.png" in subfolder "a"; ".." is refused.
    const saves = [];
    for (const [nodeId, node] of nodes) {
      if (!OUTPUT_NODES.has(node.class_type)) continue;
      const temp = node.class_type === 'PreviewImage';
      const prefix = temp ? `ComfyUI_temp_${crypto.randomBytes(3).toString('hex').slice(0, 5)}`
        : String(node.inputs?.filename_prefix ?? 'ComfyUI');
      const parts = prefix.replace(/\\/g, '/').split('/').filter((p) => p && p !== '.');
      if (parts.includes('..') || prefix.startsWith('/') || !parts.length) {
        return finishError(run, nodeId, node.class_type, 'Saving image outside the output folder is not allowed.');
      }
      saves.push({ nodeId, type: temp ? 'temp' : 'output', subfolder: parts.slice(0, -1).join('/'), base: parts.at(-1) });
    }
    const outputs = {};
    for (const s of saves) {
      const list = [];
      for (let i = 0; i < batch; i++) {
        const filename = `${s.base}_${String(++fileCounter).padStart(5, '0')}_.png`;
        const png = makePng(seedColour(seed, i), {
          prompt: asciiJson(text), prompt_id: run.id, seed: String(seed), size, batch_index: String(i), mock: name,
        });
        images.set(`${s.type}\0${s.subfolder}\0${filename}`, png);
        list.push({ filename, subfolder: s.subfolder, type: s.type });
      }
      outputs[s.nodeId] = { images: list };
      emit(run, 'executing', { node: s.nodeId, display_node: s.nodeId, prompt_id: run.id });
      emit(run, 'executed', { node: s.nodeId, display_node: s.nodeId, output: { images: list }, prompt_id: run.id });
    }
    const timestamp = Date.now();
    emit(run, 'execution_success', { prompt_id: run.id, timestamp });
    stats.completed++;
    finish(run, {
      status_str: 'success', completed: true, messages: [
        ...run.messages, ['execution_cached', { nodes: [], prompt_id: run.id, timestamp: run.messages[0][1].timestamp }],
        ['execution_success', { prompt_id: run.id, timestamp }],
      ],
    }, outputs);
  }

  // --- HTTP ---

  const promptError = (type, message, details = '') => ({ error: { type, message, details, extra_info: {} }, node_errors: {} });

  function reply(res, status, body, headers = {}) {
    if (res.destroyed || res.headersSent) return;
    let buf = Buffer.alloc(0);
    if (Buffer.isBuffer(body)) buf = body;
    else if (typeof body === 'string') { buf = Buffer.from(body); headers['content-type'] ??= 'text/plain; charset=utf-8'; }
    else if (body !== undefined) { buf = Buffer.from(JSON.stringify(body)); headers['content-type'] ??= 'application/json'; }
    res.writeHead(status, { ...headers, 'content-length': buf.length, 'x-comfyui-mock': name });
    res.end(buf);
  }

  function readBody(req) {
    return new Promise((resolve, reject) => {
      const chunks = [];
      let total = 0;
      req.on('data', (c) => {
        total += c.length;
        if (total > MAX_BODY) { req.pause(); reject(Object.assign(new Error('body too large'), { status: 413 })); }
        else chunks.push(c);
      });
      req.on('end', () => resolve(Buffer.concat(chunks)));
      req.on('error', reject);
    });
  }

  const sleep = (ms) => new Promise((resolve) => {
    const t = setTimeout(() => { sleepers.delete(t); resolve(); }, ms);
    sleepers.add(t);
  });

  function postPrompt(body) {
    if (config.refuse_prompts) return [503, 'comfyui-mock: refusing prompts (refuse_prompts is set)'];
    const { prompt } = body;
    if (prompt === undefined || prompt === null) return [400, promptError('no_prompt', 'No prompt provided', 'No prompt provided')];
    if (!isObj(prompt)) return [400, promptError('invalid_prompt', 'Invalid prompt', 'The prompt must be an object keyed by node id')];
    for (const [id, node] of Object.entries(prompt)) {
      if (!isObj(node) || typeof node.class_type !== 'string') {
        return [400, promptError('invalid_prompt', 'Cannot execute because a node is missing the class_type property.', `Node ID '#${id}'`)];
      }
    }
    const outputs = Object.keys(prompt).filter((id) => OUTPUT_NODES.has(prompt[id].class_type));
    if (!outputs.length) return [400, promptError('prompt_no_outputs', 'Prompt has no outputs')];
    const honoured = !ownPromptIds && typeof body.prompt_id === 'string' && body.prompt_id;
    const id = honoured ? body.prompt_id : crypto.randomUUID();
    const extra = isObj(body.extra_data) ? { ...body.extra_data } : {};
    if (typeof body.client_id === 'string') extra.client_id = body.client_id;
    const entry = [number++, id, prompt, extra, outputs]; // no dedupe by prompt_id, like ComfyUI
    stats.submitted++;
    if (config.lose_prompts) stats.lost++;
    else if (body.front === true) pending.unshift(entry);
    else pending.push(entry);
    pump();
    return [200, { prompt_id: id, number: entry[0], node_errors: {} }];
  }

  function postConfig(body) {
    const num = (k, min) => body[k] === undefined || (typeof body[k] === 'number' && Number.isFinite(body[k]) && body[k] >= min);
    const flag = (k) => body[k] === undefined || typeof body[k] === 'boolean';
    if (!num('step_ms', 0) || !num('latency_ms', 0) || !num('concurrency', 1) || !flag('refuse_prompts') || !flag('lose_prompts')) {
      return [400, { error: 'step_ms, latency_ms: numbers >= 0; concurrency: integer >= 1; refuse_prompts, lose_prompts: booleans' }];
    }
    for (const k of Object.keys(initialConfig)) if (body[k] !== undefined) config[k] = body[k];
    config.concurrency = Math.floor(config.concurrency);
    pump(); // a higher concurrency may start waiting prompts now
    return [200, config];
  }

  function reset() {
    for (const run of running) clearTimeout(run.timer);
    running.clear();
    pending = [];
    history.clear();
    images.clear();
    number = 0;
    fileCounter = 0;
    stats = freshStats();
    config = { ...initialConfig };
    broadcastStatus();
  }

  function route(method, path, q, body) {
    const get = method === 'GET' || method === 'HEAD';
    if (path === '/prompt' && get) return [200, { exec_info: { queue_remaining: queueRemaining() } }];
    if (path === '/prompt' && method === 'POST') return postPrompt(body);
    if (path === '/queue' && get) {
      stats.queue_requests++;
      return [200, { queue_running: [...running].map((r) => r.entry), queue_pending: [...pending] }];
    }
    if (path === '/queue' && method === 'POST') {
      const before = pending.length;
      if (body.clear === true) pending = [];
      if (Array.isArray(body.delete)) pending = pending.filter((e) => !body.delete.includes(e[1]));
      stats.deleted += before - pending.length;
      broadcastStatus();
      return [200];
    }
    if (path === '/history' && get) {
      stats.history_requests++;
      const n = Number.parseInt(q.get('max_items') ?? '', 10);
      const all = [...history];
      return [200, Object.fromEntries(Number.isInteger(n) && n >= 0 ? all.slice(all.length - Math.min(n, all.length)) : all)];
    }
    if (path === '/history' && method === 'POST') {
      if (body.clear === true) history.clear();
      if (Array.isArray(body.delete)) for (const id of body.delete) history.delete(id);
      return [200];
    }
    if (path.startsWith('/history/') && get) {
      stats.history_requests++;
      const id = decodeURIComponent(path.slice('/history/'.length));
      return [200, history.has(id) ? { [id]: history.get(id) } : {}];
    }
    if (path === '/interrupt' && method === 'POST') {
      stats.interrupt_requests++;
      const only = typeof body.prompt_id === 'string' ? body.prompt_id : null;
      // Copy first: finishing one may start the next pending prompt, which must not be hit.
      for (const run of [...running]) if (only === null || run.id === only) interruptRun(run);
      return [200];
    }
    if (path === '/view' && get) {
      stats.view_requests++;
      const filename = q.get('filename') ?? '';
      const subfolder = q.get('subfolder') ?? '';
      const type = q.get('type') || 'output';
      if (filename.includes('..') || filename.includes('/') || filename.includes('\\') || subfolder.split(/[/\\]/).includes('..')) {
        return [400, { error: 'invalid filename' }];
      }
      const png = images.get(`${type}\0${subfolder}\0${filename}`);
      if (!png) return [404, { error: 'not found' }];
      return [200, png, { 'content-type': 'image/png', 'content-disposition': `filename="${filename}"` }];
    }
    if (path === '/system_stats' && get) {
      return [200, { system: { os: 'posix', comfyui_version: 'mock', python_version: 'mock', mock_name: name, own_prompt_ids: ownPromptIds }, devices: [] }];
    }
    if ((path === '/object_info' || path.startsWith('/object_info/')) && get) return [200, {}];
    if (path === '/ws' && get) return [400, { error: 'expected a WebSocket upgrade' }];
    if (path === '/mock/stats' && get) {
      const progress = Object.fromEntries([...running].map((r) => [r.id, { value: r.step, max: r.steps }]));
      return [200, {
        name, own_prompt_ids: ownPromptIds, ...stats, running: [...running].map((r) => r.id), pending: pending.map((e) => e[1]),
        progress, ws_clients: clients.size, config,
      }];
    }
    if (path === '/mock/config' && method === 'POST') return postConfig(body);
    if (path === '/mock/reset' && method === 'POST') { reset(); return [200, { ok: true }]; }
    const known = ['/prompt', '/queue', '/history', '/interrupt', '/view', '/system_stats', '/object_info', '/ws',
      '/mock/stats', '/mock/config', '/mock/reset'];
    if (known.includes(path) || path.startsWith('/history/')) return [405, { error: `method ${method} not allowed` }];
    return [404, { error: `not found: ${path}` }];
  }

  // Newer ComfyUI serves every route under /api as well.
  const stripApi = (p) => (p === '/api' || p.startsWith('/api/') ? p.slice(4) || '/' : p);

  async function handle(req, res) {
    const u = new URL(req.url, 'http://localhost');
    const path = stripApi(u.pathname);
    let raw;
    try {
      raw = await readBody(req);
    } catch (e) {
      return reply(res, e.status ?? 400, { error: e.message }, { connection: 'close' });
    }
    // A POST /prompt whose whole body arrived, counted before latency_ms: a test can tell a
    // request that reached the backend from one its client never finished sending.
    if (path === '/prompt' && req.method === 'POST') stats.prompt_requests++;
    // The control endpoints skip latency_ms so tests can always turn it off promptly.
    if (config.latency_ms > 0 && !path.startsWith('/mock/')) await sleep(config.latency_ms);
    if (closed) return;
    let body = {};
    if (req.method === 'POST' && raw.length) {
      try {
        body = JSON.parse(raw.toString('utf8'));
      } catch (e) {
        return reply(res, 400, { error: { type: 'invalid_json', message: `invalid JSON body: ${e.message}`, details: '', extra_info: {} } });
      }
      if (!isObj(body)) return reply(res, 400, { error: { type: 'invalid_json', message: 'the body must be a JSON object', details: '', extra_info: {} } });
    }
    const [status, out, headers] = route(req.method, path, u.searchParams, body);
    reply(res, status, out, headers);
  }

  const server = http.createServer((req, res) => {
    handle(req, res).catch((e) => reply(res, 500, { error: String(e?.stack ?? e) }));
  });
  server.keepAliveTimeout = 60_000; // lowart keeps connections open between polls
  server.headersTimeout = 65_000;

  server.on('upgrade', (req, socket, head) => {
    const u = new URL(req.url, 'http://localhost');
    const key = req.headers['sec-websocket-key'];
    const refuse = (status) => socket.end(`HTTP/1.1 ${status}\r\nconnection: close\r\ncontent-length: 0\r\n\r\n`);
    if (closed) return socket.destroy();
    if (stripApi(u.pathname) !== '/ws') return refuse('404 Not Found');
    if (String(req.headers.upgrade).toLowerCase() !== 'websocket' || !key) return refuse('400 Bad Request');
    if (req.headers['sec-websocket-version'] !== '13') {
      return socket.end('HTTP/1.1 426 Upgrade Required\r\nsec-websocket-version: 13\r\nconnection: close\r\ncontent-length: 0\r\n\r\n');
    }
    const accept = crypto.createHash('sha1').update(key + WS_GUID).digest('base64');
    socket.setTimeout(0);
    socket.setNoDelay(true);
    socket.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n\r\n`);
    // Like ComfyUI: no clientId means the server makes one up and reports it as "sid".
    const clientId = u.searchParams.get('clientId') || crypto.randomUUID().replace(/-/g, '');
    const client = { clientId };
    client.ws = wsAttach(socket, head, () => clients.delete(client));
    clients.add(client);
    stats.ws_connects++;
    client.ws.send(statusMsg(clientId));
  });

  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => { server.off('error', reject); resolve(); });
  });
  const bound = server.address().port;

  return {
    port: bound,
    url: `http://${host}:${bound}`,
    async close() {
      if (closed) return;
      closed = true;
      for (const run of running) clearTimeout(run.timer);
      running.clear();
      pending = [];
      for (const t of sleepers) clearTimeout(t);
      for (const c of [...clients]) c.ws.destroy(); // upgraded sockets are not the server's anymore
      await new Promise((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
    },
  };
}

// --- as a child process ----------------------------------------------------------------------

const children = new Set();
let exitHookInstalled = false;

/**
 * Runs this file as a child process and resolves once it is listening (at most 5 s).
 * `stop(signal, ms)` signals it, waits up to `ms` for it to exit, then SIGKILLs it; it
 * resolves with { code, signal, forced }. Children left running die with the test process.
 */
export async function spawnComfyMock({ port = 0, stepMs = 20, concurrency = 1, name = 'a', ownPromptIds = false } = {}) {
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    process.on('exit', () => { for (const c of children) { try { c.kill('SIGKILL'); } catch { /* gone */ } } });
  }
  const args = [THIS_FILE, '--port', String(port), '--step-ms', String(stepMs), '--concurrency', String(concurrency),
    '--name', String(name), '--exit-on-stdin-close', ...(ownPromptIds ? ['--own-prompt-ids'] : [])];
  const proc = spawn(process.execPath, args, { stdio: ['pipe', 'pipe', 'pipe'] });
  children.add(proc);
  const out = { stdout: '', stderr: '' };
  let result = null;
  const exited = new Promise((resolve) => {
    const done = (r) => { children.delete(proc); result ??= r; resolve(result); };
    proc.once('exit', (code, signal) => done({ code, signal }));
    proc.once('error', (error) => done({ code: null, signal: null, error }));
  });
  proc.stdin.on('error', () => {}); // EPIPE once the child is gone
  proc.stdout.setEncoding('utf8');
  proc.stderr.setEncoding('utf8').on('data', (d) => { out.stderr += d; });

  let boundPort;
  try {
    boundPort = await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`comfyui-mock was not listening within 5 s\n${out.stderr}`)), 5000);
      proc.stdout.on('data', (d) => {
        out.stdout += d;
        const m = out.stdout.match(READY_RE);
        if (m) { clearTimeout(timer); resolve(Number(m[1])); }
      });
      exited.then((r) => {
        clearTimeout(timer);
        reject(new Error(`comfyui-mock exited before listening (${JSON.stringify(r)})\n${out.stderr}`));
      });
    });
  } catch (e) {
    proc.kill('SIGKILL');
    await exited;
    throw e;
  }

  return {
    port: boundPort,
    url: `http://127.0.0.1:${boundPort}`,
    proc,
    out,
    exited,
    async stop(signal = 'SIGTERM', ms = 3000) {
      if (result) return { ...result, forced: false };
      proc.kill(signal);
      let timer;
      const r = await Promise.race([exited, new Promise((res) => { timer = setTimeout(() => res(null), ms); })]);
      clearTimeout(timer);
      if (r) return { ...r, forced: false };
      proc.kill('SIGKILL');
      return { ...(await exited), forced: true };
    },
  };
}

// --- command line ----------------------------------------------------------------------------

function parseArgs(argv) {
  const opts = { port: 0, stepMs: 20, concurrency: 1, name: 'a', exitOnStdinClose: false, ownPromptIds: false };
  const num = (flag, v, min, max) => {
    const n = Number(v);
    if (v === undefined || v === '' || !Number.isFinite(n) || n < min || n > max) throw new Error(`${flag}: expected a number in [${min}, ${max}], got ${v}`);
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    let [flag, value] = argv[i].split(/=(.*)/s);
    const take = () => value ?? argv[++i];
    if (flag === '--port') opts.port = Math.floor(num(flag, take(), 0, 65535));
    else if (flag === '--step-ms') opts.stepMs = num(flag, take(), 0, 1e7);
    else if (flag === '--concurrency') opts.concurrency = Math.floor(num(flag, take(), 1, 1e4));
    else if (flag === '--name') opts.name = take() ?? 'a';
    else if (flag === '--exit-on-stdin-close') opts.exitOnStdinClose = true;
    else if (flag === '--own-prompt-ids') opts.ownPromptIds = true;
    else throw new Error(`unknown argument: ${argv[i]}`);
  }
  return opts;
}

async function main() {
  let opts;
  try {
    opts = parseArgs(process.argv.slice(2));
  } catch (e) {
    process.stderr.write(`comfyui-mock: ${e.message}\n`);
    process.exit(2);
  }
  const mock = await startComfyMock(opts);
  const stop = () => {
    setTimeout(() => process.exit(0), 2000).unref(); // bounded: never hang on shutdown
    mock.close().then(() => process.exit(0));
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
  if (opts.exitOnStdinClose) {
    process.stdin.on('end', stop).on('error', stop).resume();
  }
  process.stdout.write(`comfyui-mock listening on 127.0.0.1:${mock.port}\n`);
}

const isMain = (() => {
  try {
    return !!process.argv[1] && fs.realpathSync(process.argv[1]) === fs.realpathSync(THIS_FILE);
  } catch {
    return false;
  }
})();
if (isMain) {
  main().catch((e) => {
    process.stderr.write(`comfyui-mock: ${e?.stack ?? e}\n`);
    process.exit(1);
  });
}
