// Chaos: a few hundred A2A tasks (by name and by skill; pull workers as processes, push
// agents as HTTP servers here; sent as raw JSON-RPC and through @a2a-js/sdk) and a few dozen
// ComfyUI jobs over two mock ComfyUI processes (one of them choosing its own prompt ids,
// --own-prompt-ids), while a driver SIGKILLs workers, backends and lowart itself at random
// (seeded, a bounded number of kills, each target restarted after a short delay; lowart on
// the same database and port). Then every task and job must be terminal, none lost, none
// run more often than the protocol allows, and the dead letters must hold exactly the
// tasks that ran out of attempts. A failure prints the seed, the kill plan, the kills as
// they happened, and the agents' events and lowart's log lines for the tasks and jobs at
// fault.
//
//   CHAOS_SEED=n     the first round's seed (default: random)
//   CHAOS_ROUNDS=n   rounds, each with a fresh gateway and seed+i (default 1; `make chaos`: 10)
//   CHAOS_TASKS, CHAOS_JOBS, CHAOS_WINDOW_MS   size of one round (300, 36, 20000)
//   CHAOS_LOG_DIR=dir  keep every lowart log, the agents' events and the hand-overs there
//
// What is counted, and where:
// - A task *runs* when an agent holds it: a pull worker (a2a_agent.mjs, LOG_EVENTS=1) got
//   it from a poll and its ack was answered 200; a push agent answered the push 2xx (the
//   push is its ack). Each ack and report is logged by the agent with the time it was sent,
//   the time of the answer and its status (0: lowart unreachable).
// - A job is *handed over* when a POST /prompt for it reaches a backend: each backend sits
//   behind an HTTP proxy in this process (WebSocket upgrades are tunnelled) that records
//   every POST /prompt (the job id is in the workflow's filename_prefix), its answer and
//   the prompt id in it, across the backend's kills. Runs on a backend come from its
//   /mock/stats, polled every 250 ms.
// - "lowart was killed while an exchange was in flight": a kill before the exchange's
//   answer (+ COMMIT_GRACE_MS), and lowart not up again before the request arrived here.
//
// The rules asserted:
// Tasks (at-least-once: a task is delivered again only when its holder's lease ran out):
//   1. A task runs again only when no agent held a lease on it any more: its next run starts
//      at least lease_ms after the sending time of the last acknowledged (2xx) ack or report
//      of any earlier run — lowart counts a lease from when it processed that report, which
//      is no earlier than when it was sent. A worker killed mid-task stops reporting, so its
//      lease runs out: that is how a kill leads to a second run (a lowart restart is not: a
//      held task keeps its lease). lowart answers acks and reports once it has written them,
//      so every 2xx counts, except a push agent's: its 2xx is its ack, which lowart may not
//      have recorded when it was killed while the push was in flight (the lost
//      acknowledgement the protocol delivers again after).
//   2. A task never runs again once an agent's "completed" was answered 2xx, and its final
//      state is then "completed" (a 2xx is durable).
//   3. Every task terminal: completed (by an agent that ran it, with that agent's result),
//      or failed as a dead letter ("gave up after max_attempts deliveries"). No other end: a
//      task never strands until its deadline here, since every agent comes back within
//      seconds.
//   4. The dead letters (GET /admin/agents/dead-letters) are exactly the failed tasks, each
//      with attempts = max_attempts; every task sent to the sinks (an agent that acks and
//      never reports, a push endpoint that always answers 500) is among them, after exactly
//      max_attempts deliveries when lowart was not killed meanwhile.
//   5. None lost: every task whose send was answered, and every task an agent was given,
//      is found by tasks/get.
// Jobs:
//   6. Every job terminal: succeeded (its files are PNGs made from its own prompt by one of
//      its hand-overs) or failed with lowart's reason; none lost (every job answered 202,
//      listed for the key, or seen at a backend is found by GET /v1/jobs/{id}).
//   7. Hand-overs per job <= submit_attempts, and a job is handed over again only when the
//      earlier hand-over's backend was killed after it, or lowart did not get a 200 for it
//      (refused, or lowart stopped waiting: request_timeout_ms), or lowart was killed while
//      it was in flight (the backend's prompt id may not have been stored). A hand-over
//      lowart stopped waiting for may still have been taken, and then the job runs on two
//      backends: allowed by this rule, counted in the summary line.
//   8. A backend runs a prompt at most once per hand-over it accepted.

import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHmac, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { A2AClient } from '@a2a-js/sdk/client';
import { LOWART_BIN, TIME_SCALE, api, cleanupAll, createKey, freePort, sleep, tempDir } from './harness.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const AGENT_JS = path.join(here, 'a2a_agent.mjs');
const MOCK_JS = path.join(here, 'comfyui_mock.mjs');
const EXAMPLES = path.resolve(here, '../../config/scripts');

const ROUNDS = Math.max(1, Number(process.env.CHAOS_ROUNDS) || 1);
const FIRST_SEED = process.env.CHAOS_SEED ? Number(process.env.CHAOS_SEED) >>> 0 : (Math.random() * 2 ** 32) >>> 0;
const N_TASKS = Number(process.env.CHAOS_TASKS) || 300;
const N_JOBS = Number(process.env.CHAOS_JOBS) || 36;
const WINDOW_MS = Number(process.env.CHAOS_WINDOW_MS) || 20000;
const KILLS = { lowart: 3, pull: 6, push: 4, backend: 4 }; // per round
const SETTLE_MS = 45000 * TIME_SCALE;
const COMMIT_GRACE_MS = 250 * TIME_SCALE;
const SECRET = 'chaos-push-secret';

// Small values, so that leases run out, retries come and dead letters fill within seconds
// (stretched by LOWART_TIME_SCALE for sanitizer builds).
const ms = (v) => v * TIME_SCALE;
const A2A = {
  ack_timeout_ms: ms(1000), lease_ms: ms(1500), max_attempts: 5, max_wait_ms: ms(2000), live_ms: ms(1000),
  handout_ms: ms(1000), task_deadline_ms: ms(30000), retry_backoff_ms: ms(100), retry_max_backoff_ms: ms(800),
  request_timeout_ms: ms(3000),
};
const JOBS = { poll_ms: 100, submit_attempts: 4, retry_backoff_ms: ms(200), unreachable_ms: ms(5000), request_timeout_ms: ms(1500) };

const PULL = { p1: ['work', 'any'], p2: ['work', 'any'], p3: ['work'], p4: ['work'] };
const PUSH = { h1: ['push-work', 'any'], h2: ['push-work'] };
const TERMINAL = new Set(['completed', 'failed', 'canceled', 'rejected']);

// mulberry32: small, seeded, good enough to pick kill times and task mixes.
function prng(seed) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  next.int = (lo, hi) => lo + Math.floor(next() * (hi - lo + 1));
  next.pick = (list) => list[Math.floor(next() * list.length)];
  return next;
}

const refused = (e) => {
  for (let c = e; c; c = c.cause) if (c.code === 'ECONNREFUSED') return true;
  return false;
};

/** The tEXt chunks of a PNG as an object; null when it is not a PNG. */
function pngText(buf) {
  if (buf.length < 8 || buf.readUInt32BE(0) !== 0x89504e47) return null;
  const out = {};
  for (let off = 8; off + 8 <= buf.length;) {
    const len = buf.readUInt32BE(off);
    const type = buf.toString('latin1', off + 4, off + 8);
    if (type === 'tEXt') {
      const data = buf.toString('latin1', off + 8, off + 8 + len);
      const nul = data.indexOf('\0');
      out[data.slice(0, nul)] = data.slice(nul + 1);
    }
    off += 12 + len;
  }
  return out;
}

const children = new Set();
process.on('exit', () => { for (const c of children) { try { c.kill('SIGKILL'); } catch { /* gone */ } } });

function spawnChild(bin, args, { env = {}, cwd } = {}) {
  const proc = spawn(bin, args, { cwd, env: { ...process.env, ...env }, stdio: ['pipe', 'pipe', 'pipe'] });
  children.add(proc);
  proc.stdin.on('error', () => {});
  proc.exited = new Promise((r) => proc.once('exit', (code, signal) => { children.delete(proc); r({ code, signal }); }));
  return proc;
}

/** One chaos round: sets everything up, runs the load and the kills, checks, tears down. */
async function chaosRound(round, seed) {
  const rng = prng(seed);
  const live = prng(seed ^ 0x9e3779b9); // decisions made while the load runs (push refusals)
  const t0 = Date.now();
  const rel = (t) => `${((t - t0) / 1000).toFixed(3)}s`;
  const dir = await tempDir('lowart-chaos-');
  await fsp.mkdir(path.join(dir, 'scripts'));
  for (const f of ['comfyui_txt2img.lua', 'txt2img.json']) await fsp.copyFile(path.join(EXAMPLES, f), path.join(dir, 'scripts', f));
  const port = await freePort();
  const listen = `127.0.0.1:${port}`;
  const GW = `http://${listen}`;
  const kills = [];     // { kind, target, at, up }
  const gateways = [];  // every lowart incarnation (for its log)
  const events = [];    // agents' events: { agent, pid, ev, ... }
  const handovers = []; // POST /prompt seen by a backend: { backend, inc, job, reqId, respId, sent, at, status }
  const runsOn = {};    // `${backend}#${inc}` -> { prompt id -> runs }
  const notes = [];     // things worth printing on failure
  const refusedAnswers = {}; // JSON-RPC errors answered to sends (no task made), by message
  let gw;

  // --- ComfyUI backends behind recording proxies --------------------------------------------
  const mockSource = fs.readFileSync(MOCK_JS, 'utf8');
  // The mode in which the backend picks its own prompt ids, when the mock has one.
  const ownIdFlag = mockSource.match(/flag === '(--[\w-]*(?:own|server|backend|random)[\w-]*id[\w-]*)'/i)?.[1];
  const ownIds = ownIdFlag && process.env.CHAOS_OWN_PROMPT_IDS !== '0';
  const backends = ['a', 'b'].map((name, i) => ({ name, flags: i === 1 && ownIds ? [ownIdFlag] : [], inc: 0 }));
  notes.push(`backends: ${backends.map((b) => `${b.name}${b.flags.length ? ` (${b.flags.join(' ')})` : ''}`).join(', ')}`);

  async function startBackend(b) {
    const proc = spawnChild(process.execPath, [MOCK_JS, '--port', '0', '--step-ms', '10', '--concurrency', '2', '--name', b.name,
      '--exit-on-stdin-close', ...b.flags]);
    let out = '';
    const mockPort = await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`comfyui-mock ${b.name} not listening within 5 s: ${out}`)), 5000);
      proc.stdout.setEncoding('utf8').on('data', (d) => {
        out += d;
        const m = out.match(/comfyui-mock listening on [\d.]+:(\d+)/);
        if (m) { clearTimeout(timer); resolve(Number(m[1])); }
      });
      proc.stderr.setEncoding('utf8').on('data', (d) => { out += d; });
    });
    b.proc = proc;
    b.inc++;
    b.target = { port: mockPort, inc: b.inc, agent: new http.Agent({ keepAlive: true, maxSockets: 32 }) };
    await proxyUp(b);
  }

  async function proxyUp(b) {
    b.sockets ??= new Set();
    const server = http.createServer((req, res) => forward(b, req, res));
    server.keepAliveTimeout = 60000;
    server.on('connection', (s) => { b.sockets.add(s); s.once('close', () => b.sockets.delete(s)); });
    server.on('upgrade', (req, socket, head) => tunnel(b, req, socket, head));
    await new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen(b.port ?? 0, '127.0.0.1', () => { server.off('error', reject); resolve(); });
    });
    b.port = server.address().port;
    b.server = server;
  }

  function proxyDown(b) {
    b.server?.close();
    b.server = null;
    for (const s of b.sockets) s.destroy();
    b.target?.agent.destroy();
    b.target = null;
  }

  function forward(b, req, res) {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const t = b.target;
      if (!t) return req.socket.destroy();
      const body = Buffer.concat(chunks);
      const p = req.url.split('?')[0].replace(/^\/api(?=\/)/, '');
      let h = null;
      if (req.method === 'POST' && p === '/prompt') {
        let job = null;
        let reqId = null;
        try {
          const j = JSON.parse(body);
          reqId = j.prompt_id ?? null;
          for (const node of Object.values(j.prompt ?? {})) {
            const m = String(node?.inputs?.filename_prefix ?? '').match(/^lowart_(job_[0-9a-f]+)/);
            if (m) job = m[1];
          }
        } catch { /* not ours */ }
        h = { backend: b.name, inc: t.inc, job, reqId, respId: null, sent: Date.now(), at: 0, status: 0, answered: false };
        handovers.push(h);
        res.once('finish', () => { h.answered = true; }); // the answer reached lowart (it had not given up)
      }
      const up = http.request({ host: '127.0.0.1', port: t.port, method: req.method, path: req.url, headers: req.headers, agent: t.agent }, (ur) => {
        const out = [];
        ur.on('data', (c) => out.push(c));
        ur.on('end', () => {
          const data = Buffer.concat(out);
          if (h) {
            h.status = ur.statusCode;
            h.at = Date.now();
            try { h.respId = JSON.parse(data).prompt_id ?? null; } catch { /* no JSON */ }
          }
          if (!res.destroyed) res.writeHead(ur.statusCode, ur.headers).end(data);
        });
        ur.on('error', () => req.socket.destroy());
      });
      up.on('error', () => { if (h) h.at = Date.now(); req.socket.destroy(); });
      up.end(body);
    });
  }

  function tunnel(b, req, socket, head) {
    const t = b.target;
    if (!t) return socket.destroy();
    b.sockets.add(socket);
    const up = net.connect(t.port, '127.0.0.1', () => {
      let raw = `${req.method} ${req.url} HTTP/1.1\r\n`;
      for (let i = 0; i < req.rawHeaders.length; i += 2) raw += `${req.rawHeaders[i]}: ${req.rawHeaders[i + 1]}\r\n`;
      up.write(`${raw}\r\n`);
      if (head?.length) up.write(head);
      up.pipe(socket);
      socket.pipe(up);
    });
    const close = () => { up.destroy(); socket.destroy(); b.sockets.delete(socket); };
    for (const s of [up, socket]) { s.on('error', close); s.on('close', close); }
  }

  // Runs per prompt id on each backend incarnation (the last answer before a kill counts).
  const statsTimer = setInterval(() => {
    for (const b of backends) {
      const t = b.target;
      if (!t) continue;
      fetch(`http://127.0.0.1:${t.port}/mock/stats`, { signal: AbortSignal.timeout(1000) })
        .then((r) => r.json()).then((s) => { runsOn[`${b.name}#${t.inc}`] = s.executions; }).catch(() => {});
    }
  }, 250);
  statsTimer.unref();

  async function killBackend(b) {
    b.proc.kill('SIGKILL');
    proxyDown(b);
    await b.proc.exited;
  }

  // --- lowart ----------------------------------------------------------------------------------
  const config = `
[scripts]
dir = "${path.join(dir, 'scripts')}"
[a2a]
${Object.entries(A2A).map(([k, v]) => `${k} = ${v}`).join('\n')}
push_secret = "${SECRET}"
[jobs]
dir = "${path.join(dir, 'jobs')}"
${Object.entries(JOBS).map(([k, v]) => `${k} = ${v}`).join('\n')}
`;
  const fullConfig = () => `${config}
${backends.map((b) => `[[providers]]\nname = "comfy-${b.name}"\nkind = "comfyui"\nbase_url = "http://127.0.0.1:${b.port}"\n`).join('')}
[[models]]
name = "sdxl"
script = "comfyui_txt2img.lua"
workflow = "txt2img.json"
${backends.map((b) => `[[models.deployments]]\nprovider = "comfy-${b.name}"\nmodel = "sdxl"\n`).join('')}`;

  // Always on the same port and database (the harness's startGateway picks a new port).
  const masterKey = `sk-master-${randomBytes(16).toString('hex')}`;
  async function startLowart() {
    const configPath = path.join(dir, 'lowart.toml');
    await fsp.writeFile(configPath, fullConfig());
    for (let attempt = 1; ; attempt++) {
      const proc = spawnChild(LOWART_BIN, ['serve', '--config', configPath], {
        env: { LOWART_MASTER_KEY: masterKey, LOWART_DB: path.join(dir, 'lowart.db'), LOWART_LISTEN: listen }, cwd: dir,
      });
      const g = { proc, url: GW, masterKey, log: '', exited: proc.exited };
      g.rawLogs = () => g.log;
      proc.stdout.setEncoding('utf8').on('data', (d) => { g.log += d; });
      proc.stderr.setEncoding('utf8').on('data', (d) => { g.log += d; });
      gateways.push(g);
      const readyBy = Date.now() + 10000 * TIME_SCALE;
      let gone = false;
      proc.exited.then(() => { gone = true; });
      while (!gone && Date.now() < readyBy) {
        const ok = await fetch(`${GW}/readyz`, { signal: AbortSignal.timeout(1000) }).then((r) => r.status === 200, () => false);
        if (ok) { gw = g; return; }
        await sleep(50);
      }
      proc.kill('SIGKILL');
      await proc.exited;
      if (attempt >= 5) throw new Error(`lowart did not become ready:\n${g.log}`);
      await sleep(300);
    }
  }

  // --- agents -----------------------------------------------------------------------------------
  const keys = {};
  const workers = {}; // pull agent name -> { proc, mode }

  function startWorker(name, mode = 'echo') {
    const proc = spawnChild(process.execPath, [AGENT_JS], { env: { GW, KEY: keys[name].key, AGENT: name, MODE: mode, LOG_EVENTS: '1' } });
    let buf = '';
    proc.stdout.setEncoding('utf8').on('data', (d) => {
      buf += d;
      let nl;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        if (line.startsWith('{')) { try { events.push(JSON.parse(line)); } catch { /* partial */ } }
      }
    });
    proc.stderr.resume();
    workers[name] = { proc, mode };
  }

  async function killWorker(name) {
    const { proc } = workers[name];
    proc.kill('SIGKILL');
    await proc.exited;
    events.push({ agent: name, pid: proc.pid, ev: 'killed', at: Date.now() });
  }

  // Push agents: HTTP servers in this process. "Killing" one drops its connections, leaves
  // the tasks it holds unreported, and resets every push until it is "restarted".
  const pushers = {};
  async function startPusher(name, { sink = false } = {}) {
    const p = { name, up: true, epoch: 0, sockets: new Set() };
    p.server = http.createServer((req, res) => {
      const taskId = req.headers['x-lowart-task-id'];
      if (!p.up) {
        events.push({ agent: name, ev: 'push-refused', task: taskId, at: Date.now(), why: 'down' });
        return req.socket.destroy();
      }
      let body = '';
      req.on('data', (d) => { body += d; });
      req.on('end', () => {
        const ts = req.headers['x-lowart-timestamp'];
        const mac = createHmac('sha256', SECRET).update(`${ts}.${body}`).digest('hex');
        if (req.headers['x-lowart-signature'] !== `sha256=${mac}`) {
          events.push({ agent: name, ev: 'bad-signature', task: taskId, at: Date.now() });
          return res.writeHead(401).end();
        }
        if (!p.up) return req.socket.destroy();
        if (sink || live() < 0.05) {
          res.writeHead(sink ? 500 : 503).end();
          events.push({ agent: name, ev: 'push-refused', task: taskId, at: Date.now(), why: sink ? 'sink' : 'busy' });
          return;
        }
        const { task } = JSON.parse(body);
        res.writeHead(202).end();
        const at = Date.now();
        const text = (task.history.filter((m) => m.role === 'user').at(-1)?.parts ?? []).map((x) => x.text).join(' ');
        events.push({ agent: name, pid: `push-${p.epoch}`, ev: 'got', task: task.id, at, text });
        events.push({ agent: name, pid: `push-${p.epoch}`, ev: 'post', path: `tasks/${task.id}/ack`, state: 'ack', sent: at, at, status: 200, push: true });
        work(p, p.epoch, task.id, text).catch(() => {});
      });
    });
    p.server.on('connection', (s) => { p.sockets.add(s); s.once('close', () => p.sockets.delete(s)); });
    await new Promise((r) => p.server.listen(0, '127.0.0.1', r));
    p.url = `http://127.0.0.1:${p.server.address().port}/push`;
    pushers[name] = p;
    return p;
  }

  async function pushPost(p, epoch, id, body) {
    const sent = Date.now();
    let status = 0;
    try {
      const r = await fetch(`${GW}/v1/agents/${p.name}/tasks/${id}/status`, {
        method: 'POST', headers: { authorization: `Bearer ${keys[p.name].key}`, 'content-type': 'application/json' },
        body: JSON.stringify(body), signal: AbortSignal.timeout(5000),
      });
      status = r.status;
      await r.arrayBuffer();
    } catch { /* lowart down */ }
    events.push({ agent: p.name, pid: `push-${epoch}`, ev: 'post', path: `tasks/${id}/status`, state: body.state, sent, at: Date.now(), status });
  }

  async function work(p, epoch, id, text) {
    const alive = () => p.up && p.epoch === epoch;
    await sleep(5);
    if (!alive()) return;
    await pushPost(p, epoch, id, { state: 'working', message: `${p.name} is on it` });
    await sleep(Number(text.match(/\bwork=(\d+)\b/)?.[1] ?? 0));
    if (!alive()) return;
    await pushPost(p, epoch, id, { state: 'completed', message: `${p.name}: ${text.toUpperCase()}` });
  }

  function killPusher(name) {
    const p = pushers[name];
    p.up = false;
    p.epoch++;
    for (const s of p.sockets) s.destroy();
    events.push({ agent: name, pid: `push-${p.epoch - 1}`, ev: 'killed', at: Date.now() });
  }

  async function register(name, skills, extra = {}) {
    keys[name] ??= await createKey(gw, { name: `agent-${name}` });
    const r = await api(gw, 'POST', '/admin/agents', { body: { name, skills, key_id: keys[name].id, ...extra } });
    assert.ok(r.status === 201 || r.status === 200, r.text);
  }

  const plan = [];
  const specs = []; // the tasks to send: { tag, to | skill, text, via, at, ids, ambiguous, refusals }
  const jobSpecs = [];
  const describePlan = () => plan.map((k) => `  +${k.at}ms ${k.kind} ${k.target} down ${k.down}ms`).join('\n');
  const describeKills = () => kills.map((k) => `  ${rel(k.at)} ${k.kind} ${k.target} killed, up at ${k.up ? rel(k.up) : '-'}`).join('\n');
  let failure = null;
  try {
    // --- set-up ------------------------------------------------------------------------------------
    for (const b of backends) await startBackend(b);
    await startLowart();
    const sender = await createKey(gw, { name: 'chaos-sender' });
    for (const [name, skills] of Object.entries(PULL)) await register(name, skills);
    await register('sink-pull', ['sink-pull']);
    for (const [name, skills] of Object.entries(PUSH)) await register(name, skills, { push_url: (await startPusher(name)).url });
    await register('sink-push', ['sink-push'], { push_url: (await startPusher('sink-push', { sink: true })).url });
    for (const name of Object.keys(PULL)) startWorker(name);
    startWorker('sink-pull', 'ack-only');

    const authFetch = (url, init = {}) => fetch(url, { ...init, headers: { ...(init.headers ?? {}), authorization: `Bearer ${sender.key}` } });
    const sdk = { '': await A2AClient.fromCardUrl(`${GW}/.well-known/agent-card.json`, { fetchImpl: authFetch }) };
    for (const name of [...Object.keys(PULL), ...Object.keys(PUSH)]) {
      sdk[name] = await A2AClient.fromCardUrl(`${GW}/a2a/${name}/.well-known/agent-card.json`, { fetchImpl: authFetch });
    }

    // --- the load and the kill plan (all from the seed) --------------------------------------------
    const mix = [
      [0.30, () => ({ to: rng.pick(Object.keys(PULL)) })],
      [0.25, () => ({ skill: 'work' })],
      [0.15, () => ({ to: rng.pick(Object.keys(PUSH)) })],
      [0.12, () => ({ skill: 'push-work' })],
      [0.18, () => ({ skill: 'any' })],
    ];
    const sinks = Math.max(2, Math.round(N_TASKS * 0.02));
    for (let i = 0; i < N_TASKS; i++) {
      let target;
      if (i < 2 * sinks) {
        target = { to: i % 2 ? 'sink-push' : 'sink-pull' };
      } else {
        let r = rng();
        target = mix.find(([share]) => (r -= share) < 0)?.[1]() ?? mix[0][1]();
      }
      const work = rng() < 0.15 ? rng.int(600, 1100) : rng.int(10, 200);
      const tag = `r${round}-t${i}`;
      specs.push({
        tag, ...target, text: `chaos ${tag} work=${work}`, via: rng() < 0.33 ? 'sdk' : 'rpc',
        at: Math.floor((i < 2 * sinks ? 0.4 : 1) * rng() * WINDOW_MS),
        ids: [], ambiguous: [], refusals: 0,
      });
    }
    jobSpecs.push(...Array.from({ length: N_JOBS }, (_, i) => ({
      tag: `r${round}-j${i}`, at: Math.floor(rng() * WINDOW_MS), steps: rng.int(10, 80), n: rng.int(1, 2),
      ids: [], ambiguous: [], refusals: 0,
    })));
    for (const [kind, n] of Object.entries(KILLS)) {
      for (let i = 0; i < n; i++) {
        const target = kind === 'lowart' ? 'lowart'
          : kind === 'pull' ? rng.pick(Object.keys(PULL))
            : kind === 'push' ? rng.pick(Object.keys(PUSH)) : rng.pick(backends).name;
        plan.push({ kind, target, at: rng.int(1000, WINDOW_MS - 500), down: rng.int(200, kind === 'lowart' ? 1000 : 1500) });
      }
    }
    plan.sort((x, y) => x.at - y.at);

    // --- sending -------------------------------------------------------------------------------------
    const message = (s) => ({
      role: 'user', kind: 'message', messageId: `${s.tag}-${s.ids.length + s.ambiguous.length + s.refusals}`,
      parts: [{ kind: 'text', text: s.text }], ...(s.skill ? { metadata: { skill: s.skill } } : {}),
    });
    async function sendTask(s) {
      const deadline = Date.now() + 15000;
      for (;;) {
        let answer;
        try {
          if (s.via === 'sdk' && sdk[s.to ?? '']) {
            answer = await sdk[s.to ?? ''].sendMessage({ message: message(s), configuration: { blocking: false } });
          } else {
            const r = await fetch(`${GW}/a2a${s.to ? `/${s.to}` : ''}`, {
              method: 'POST', headers: { authorization: `Bearer ${sender.key}`, 'content-type': 'application/json' },
              body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'message/send', params: { message: message(s), configuration: { blocking: false } } }),
              signal: AbortSignal.timeout(5000),
            });
            answer = await r.json().catch(() => ({ error: { message: `HTTP ${r.status}` } }));
          }
        } catch (e) {
          if (refused(e) && Date.now() < deadline) { s.refusals++; await sleep(150); continue; }
          s.ambiguous.push(`${e.message}${e.cause?.code ? ` (${e.cause.code})` : ''}`); // it may exist: found through the agents' logs
          return;
        }
        if (answer.result?.id) { s.ids.push(answer.result.id); return; }
        // Refused without a task (e.g. the bus still loading its agents after a restart).
        notes.push(`${s.tag}: send refused: ${JSON.stringify(answer.error ?? answer)}`);
        const why = answer.error?.message ?? 'other';
        refusedAnswers[why] = (refusedAnswers[why] ?? 0) + 1;
        if (Date.now() > deadline) return;
        s.refusals++;
        await sleep(150);
      }
    }
    async function sendJob(j) {
      const deadline = Date.now() + 15000;
      for (;;) {
        let r;
        try {
          r = await fetch(`${GW}/v1/jobs`, {
            method: 'POST', headers: { authorization: `Bearer ${sender.key}`, 'content-type': 'application/json' },
            body: JSON.stringify({ model: 'sdxl', input: { prompt: `chaos-job ${j.tag}`, steps: j.steps, n: j.n, seed: j.steps } }),
            signal: AbortSignal.timeout(5000),
          });
        } catch (e) {
          if (refused(e) && Date.now() < deadline) { j.refusals++; await sleep(150); continue; }
          j.ambiguous.push(`${e.message}${e.cause?.code ? ` (${e.cause.code})` : ''}`);
          return;
        }
        const text = await r.text();
        if (r.status === 202) { j.ids.push(JSON.parse(text).id); return; }
        notes.push(`${j.tag}: job refused: ${r.status} ${text}`);
        if (r.status < 500 || Date.now() > deadline) return;
        j.refusals++;
        await sleep(150);
      }
    }

    const start = Date.now();
    const sends = [...specs.map((s) => ({ at: s.at, go: () => sendTask(s) })), ...jobSpecs.map((j) => ({ at: j.at, go: () => sendJob(j) }))]
      .sort((x, y) => x.at - y.at);
    const sending = (async () => {
      const inflight = [];
      for (const s of sends) {
        const wait = start + s.at - Date.now();
        if (wait > 0) await sleep(wait);
        inflight.push(s.go());
      }
      await Promise.all(inflight);
    })();

    // --- the driver -----------------------------------------------------------------------------------
    const down = new Set(); // targets down now
    const restarts = [];
    const driving = (async () => {
      for (const k of plan) {
        const wait = start + k.at - Date.now();
        if (wait > 0) await sleep(wait);
        // One outage per target at a time; never both backends at once (jobs would fail for want
        // of any backend, which proves nothing).
        const other = k.kind === 'backend' ? backends.find((b) => b.name !== k.target).name : null;
        for (let i = 0; i < 100 && (down.has(k.target) || (other && down.has(other))); i++) await sleep(50);
        if (down.has(k.target) || (other && down.has(other))) { notes.push(`kill of ${k.target} at +${k.at}ms skipped: still down`); continue; }
        down.add(k.target);
        const rec = { kind: k.kind, target: k.target, at: Date.now(), up: 0 };
        kills.push(rec);
        if (k.kind === 'lowart') { gw.proc.kill('SIGKILL'); await gw.exited; }
        else if (k.kind === 'pull') await killWorker(k.target);
        else if (k.kind === 'push') killPusher(k.target);
        else await killBackend(backends.find((b) => b.name === k.target));
        restarts.push((async () => {
          await sleep(k.down);
          if (k.kind === 'lowart') await startLowart();
          else if (k.kind === 'pull') startWorker(k.target);
          else if (k.kind === 'push') pushers[k.target].up = true;
          else await startBackend(backends.find((b) => b.name === k.target));
          rec.up = Date.now();
          down.delete(k.target);
        })());
      }
    })();

    await Promise.all([sending, driving]);
    await Promise.all(restarts);
    const loadDone = Date.now();

    // --- settle: every task and job terminal --------------------------------------------------------
    const rpc = async (method, params) => {
      const r = await api(gw, 'POST', '/a2a', { key: sender.key, body: { jsonrpc: '2.0', id: 1, method, params } });
      return r.json ?? {};
    };
    const taskOf = new Map(); // task id -> spec
    for (const s of specs) for (const id of s.ids) taskOf.set(id, s);
    const tagOf = (text) => text?.match(/chaos (r\d+-t\d+)/)?.[1];
    const byTag = new Map(specs.map((s) => [s.tag, s]));
    const known = () => {
      for (const e of events) if (e.ev === 'got' && !taskOf.has(e.task) && byTag.has(tagOf(e.text))) taskOf.set(e.task, byTag.get(tagOf(e.text)));
      return [...taskOf.keys()];
    };
    const finals = new Map();
    const settleBy = Date.now() + SETTLE_MS;
    for (;;) {
      for (const id of known()) {
        if (TERMINAL.has(finals.get(id)?.status?.state)) continue;
        const r = await rpc('tasks/get', { id });
        finals.set(id, r.result ?? { missing: r.error });
      }
      const open = [...finals.values()].filter((t) => !TERMINAL.has(t.status?.state)).length;
      if (open === 0 || Date.now() > settleBy) break;
      await sleep(500);
    }
    // Tasks whose send was cut off and that no agent ran: the open list and the dead letters
    // name them by their text.
    const openList = (await api(gw, 'GET', '/admin/agents/tasks')).json.data;
    const dead = (await api(gw, 'GET', '/admin/agents/dead-letters')).json.data;
    for (const d of [...dead, ...openList]) {
      const tag = tagOf(d.task.history?.[0]?.parts?.[0]?.text);
      if (byTag.has(tag) && !taskOf.has(d.task.id)) {
        taskOf.set(d.task.id, byTag.get(tag));
        finals.set(d.task.id, (await rpc('tasks/get', { id: d.task.id })).result);
      }
    }
    const jobOf = new Map();
    for (const j of jobSpecs) for (const id of j.ids) jobOf.set(id, j);
    // Jobs made whose answer was cut off: the key's job list has them (a fresh database).
    const jobByTag = new Map(jobSpecs.map((j) => [`chaos-job ${j.tag}`, j]));
    for (const j of (await api(gw, 'GET', '/v1/jobs?limit=1000', { key: sender.key })).json?.data ?? []) {
      if (!jobOf.has(j.id)) jobOf.set(j.id, jobByTag.get(j.input?.prompt) ?? null);
    }
    for (const h of handovers) if (h.job && !jobOf.has(h.job)) jobOf.set(h.job, null);
    const jobs = new Map();
    for (;;) {
      for (const id of jobOf.keys()) {
        if (['succeeded', 'failed', 'cancelled'].includes(jobs.get(id)?.status)) continue;
        const r = await api(gw, 'GET', `/v1/jobs/${id}`, { key: sender.key });
        jobs.set(id, r.status === 200 ? r.json : { missing: r.status });
      }
      const open = [...jobs.values()].filter((j) => !['succeeded', 'failed', 'cancelled'].includes(j.status)).length;
      if (open === 0 || Date.now() > settleBy) break;
      await sleep(500);
    }
    const settled = Date.now();

    // --- the checks -------------------------------------------------------------------------------
    const problems = [];
    const lowartKills = kills.filter((k) => k.kind === 'lowart').map((k) => k.at);
    // Was lowart killed while this exchange (received here at `sent`, answered at `at`) was
    // in flight? True when a kill came before the answer (+ COMMIT_GRACE_MS) and lowart was
    // not up again before the request arrived (so the killed lowart had sent it).
    const maybeLost = (p) => kills.some((k) => k.kind === 'lowart' && k.at <= (p.at || p.sent) + COMMIT_GRACE_MS
      && (!k.up || k.up >= p.sent));
    // A push's 2xx reaches lowart only after the agent wrote it; a kill then loses it. Acks
    // and reports are answered once written: a 2xx an agent got is never lost.
    const lostAck = (p) => p.push && maybeLost(p);
    // Runs per task: a pull agent's "got" followed by its ack answered 200 (posts until the
    // same process's next "got" belong to it); a push agent's accepted push.
    const runs = new Map(); // task id -> [{ agent, pid, start, posts }]
    const current = new Map(); // pid -> run
    for (const e of events) {
      if (e.ev === 'got') {
        const r = { agent: e.agent, pid: e.pid, task: e.task, start: e.at, posts: [] };
        current.set(e.pid, r);
        if (!runs.has(e.task)) runs.set(e.task, []);
        runs.get(e.task).push(r);
      } else if (e.ev === 'post') {
        const r = current.get(e.pid);
        if (r && e.path.startsWith(`tasks/${r.task}/`)) r.posts.push(e);
      }
    }
    for (const [id, list] of runs) runs.set(id, list.filter((r) => r.posts[0]?.state === 'ack' && r.posts[0].status === 200));
    const completedOk = (r) => r.posts.find((p) => p.state === 'completed' && p.status === 200);

    let reruns = 0;
    for (const [id, list] of runs) {
      list.sort((x, y) => x.start - y.start);
      for (let k = 1; k < list.length; k++) {
        const cur = list[k];
        reruns++;
        const earlier = list.slice(0, k);
        const done = earlier.map(completedOk).find((p) => p && p.at < cur.start);
        if (done) problems.push(`task ${id} (${taskOf.get(id)?.tag}) ran again at ${rel(cur.start)} on ${cur.agent} after ${done.agent ?? 'an agent'}'s completed was answered 200 at ${rel(done.at)}`);
        const durable = earlier.flatMap((r) => r.posts).filter((p) => p.status >= 200 && p.status < 300 && p.sent < cur.start && !lostAck(p));
        const last = durable.reduce((m, p) => Math.max(m, p.sent), -Infinity);
        if (cur.start < last + A2A.lease_ms) {
          problems.push(`task ${id} (${taskOf.get(id)?.tag}) ran again on ${cur.agent} at ${rel(cur.start)}, ${cur.start - last} ms after an acknowledged report of an earlier run (lease ${A2A.lease_ms} ms): ${earlier.map((r) => `${r.agent}/${r.pid} from ${rel(r.start)} [${r.posts.map((p) => `${p.state}:${p.status}@${rel(p.sent)}-${rel(p.at)}`).join(' ')}]`).join('; ')}`);
        }
      }
    }

    const gaveUp = new RegExp(`gave up after ${A2A.max_attempts} deliveries`);
    const deadIds = new Set(dead.filter((d) => taskOf.has(d.task.id)).map((d) => d.task.id));
    const states = {};
    for (const [id, spec] of taskOf) {
      const t = finals.get(id);
      const label = `task ${id} (${spec.tag}, ${spec.to ? `to ${spec.to}` : `skill ${spec.skill}`})`;
      if (!t || t.missing) { problems.push(`${label} is lost: tasks/get says ${JSON.stringify(t?.missing)}`); continue; }
      const state = t.status?.state;
      states[state] = (states[state] ?? 0) + 1;
      const text = t.status?.message?.parts?.map((p) => p.text).join(' ') ?? '';
      const mine = runs.get(id) ?? [];
      if (!TERMINAL.has(state)) problems.push(`${label} is not terminal: ${state} at ${t.metadata?.agent} after ${SETTLE_MS / 1000} s`);
      else if (state === 'completed') {
        const by = mine.filter((r) => r.agent === t.metadata?.agent);
        if (!by.length) problems.push(`${label} completed by ${t.metadata?.agent}, which never ran it`);
        if (text !== `${t.metadata?.agent}: ${spec.text.toUpperCase()}`) problems.push(`${label} completed with "${text}"`);
      } else if (state === 'failed') {
        if (!gaveUp.test(text)) problems.push(`${label} failed other than as a dead letter: "${text}"`);
        if (!deadIds.has(id)) problems.push(`${label} gave up but is not in the dead letters`);
      } else problems.push(`${label} ended ${state}`);
      for (const r of mine) {
        const ok = completedOk(r);
        if (ok && state !== 'completed') problems.push(`${label}: ${r.agent}'s completed was answered 200 at ${rel(ok.at)}, yet the task is ${state}`);
      }
      if (spec.to?.startsWith('sink-') && !deadIds.has(id)) problems.push(`${label}: a task to a sink is not a dead letter (${state})`);
    }
    for (const d of dead) {
      if (!taskOf.has(d.task.id)) continue;
      if (d.attempts !== A2A.max_attempts) problems.push(`dead letter ${d.task.id} has attempts ${d.attempts}`);
      if (finals.get(d.task.id)?.status?.state !== 'failed') problems.push(`dead letter ${d.task.id} is ${finals.get(d.task.id)?.status?.state}`);
      const spec = taskOf.get(d.task.id);
      if (!spec.to?.startsWith('sink-')) continue;
      // The sinks are never killed: each delivery is seen there.
      const seen = spec.to === 'sink-push'
        ? events.filter((e) => e.agent === 'sink-push' && e.ev === 'push-refused' && e.task === d.task.id)
        : events.filter((e) => e.agent === 'sink-pull' && e.ev === 'got' && e.task === d.task.id);
      const span = seen.length ? [seen[0].at, seen.at(-1).at] : [0, 0];
      const restarted = lowartKills.some((k) => k >= span[0] - 1000 && k <= span[1]);
      if (restarted ? seen.length < A2A.max_attempts : seen.length !== A2A.max_attempts) {
        problems.push(`dead letter ${d.task.id} (${spec.tag}) was delivered ${seen.length} times to ${spec.to}${restarted ? ' (lowart restarted meanwhile)' : ''}`);
      }
    }
    for (const e of events) if (e.ev === 'bad-signature') problems.push(`push to ${e.agent} for ${e.task}: bad signature`);

    // Jobs.
    const jobStates = {};
    const lateAnswers = []; // handed over again after a backend took it but lowart had given up waiting
    const byJob = new Map();
    for (const h of handovers) if (h.job) (byJob.get(h.job) ?? byJob.set(h.job, []).get(h.job)).push(h);
    for (const [id, spec] of jobOf) {
      const j = jobs.get(id);
      const label = `job ${id} (${spec?.tag ?? 'answer lost'})`;
      if (!j || j.missing) { problems.push(`${label} is lost: GET /v1/jobs/${id} answered ${j?.missing}`); continue; }
      jobStates[j.status] = (jobStates[j.status] ?? 0) + 1;
      const hs = (byJob.get(id) ?? []).sort((x, y) => x.sent - y.sent);
      if (j.status === 'succeeded') {
        const promptIds = new Set(hs.flatMap((h) => [h.reqId, h.respId]).filter(Boolean));
        if (!j.files?.length) problems.push(`${label} succeeded without files`);
        for (const f of j.files ?? []) {
          const res = await fetch(GW + f.url, { headers: { authorization: `Bearer ${sender.key}` } });
          const png = Buffer.from(await res.arrayBuffer());
          const text = pngText(png);
          if (res.status !== 200 || !text) problems.push(`${label}: ${f.name} is not a PNG (${res.status})`);
          else if (spec && !text.prompt?.includes(`chaos-job ${spec.tag}`)) problems.push(`${label}: ${f.name} was not made from its prompt (${text.prompt})`);
          else if (!promptIds.has(text.prompt_id)) problems.push(`${label}: ${f.name} comes from prompt ${text.prompt_id}, not one of its hand-overs (${[...promptIds]})`);
        }
      } else if (j.status === 'failed') {
        if (!/no ComfyUI backend took the job|unreachable for/.test(j.error ?? '')) problems.push(`${label} failed: ${j.error}`);
      } else problems.push(`${label} is ${j.status} after ${SETTLE_MS / 1000} s`);
      if (hs.length > JOBS.submit_attempts) problems.push(`${label} was handed over ${hs.length} times (submit_attempts ${JOBS.submit_attempts})`);
      const listed = `${hs.slice(0, 8).map((h) => `${h.backend}#${h.inc}@${rel(h.sent)}:${h.status}`).join(' ')}${hs.length > 8 ? ' ...' : ''}`;
      for (let k = 1; k < hs.length; k++) {
        const prev = hs[k - 1];
        const cur = hs[k];
        const backendKilled = kills.some((x) => x.kind === 'backend' && x.target === prev.backend && x.at >= prev.sent && x.at <= cur.sent);
        if (!backendKilled && prev.status === 200 && !prev.answered) lateAnswers.push(`${label}: ${listed}`);
        if (!backendKilled && prev.status === 200 && prev.answered && !maybeLost(prev)) {
          problems.push(`${label} handed over again at ${rel(cur.sent)} to ${cur.backend} though ${prev.backend} took it at ${rel(prev.sent)} and was not killed since (hand-overs: ${listed})`);
          break; // one line per job
        }
      }
    }
    for (const [where, execs] of Object.entries(runsOn)) {
      const [backend, inc] = where.split('#');
      for (const [pid, n] of Object.entries(execs ?? {})) {
        const accepted = handovers.filter((h) => h.backend === backend && h.inc === Number(inc) && h.status === 200 && (h.respId ?? h.reqId) === pid).length;
        if (n > Math.max(accepted, 1)) problems.push(`backend ${where} ran prompt ${pid} ${n} times for ${accepted} hand-over(s)`);
      }
    }

    const cutOff = {};
    for (const x of [...specs, ...jobSpecs]) for (const why of x.ambiguous) cutOff[why] = (cutOff[why] ?? 0) + 1;
    const retried = [...specs, ...jobSpecs].reduce((n, x) => n + x.refusals, 0);
    const summary = `seed ${seed}: ${taskOf.size} tasks (${JSON.stringify(states)}, ${reruns} runs again, ${deadIds.size} dead letters), `
      + `${jobOf.size} jobs (${JSON.stringify(jobStates)}, ${handovers.length} hand-overs, ${lateAnswers.length} again after an answer lowart did not wait for), ${kills.length} kills `
      + `(${kills.filter((k) => k.kind === 'lowart').length} of lowart), ${retried} sends retried (refusals: ${JSON.stringify(refusedAnswers)}), cut off: ${JSON.stringify(cutOff)}; `
      + `load ${((loadDone - start) / 1000).toFixed(1)} s, settled ${((settled - loadDone) / 1000).toFixed(1)} s`;
    console.log(`# chaos round ${round}: ${summary}`);
    if (problems.length) {
      const ids = new Set(problems.flatMap((p) => p.match(/[0-9a-f]{8}-[0-9a-f-]{27}|job_[0-9a-f]+/g) ?? []));
      const logLines = gateways.flatMap((g, i) => g.rawLogs().split('\n').filter((l) => [...ids].some((id) => l.includes(id))).map((l) => `  [lowart#${i}] ${l}`));
      const agentLines = events.filter((e) => ids.has(e.task)).map((e) => `  ${rel(e.at)} ${JSON.stringify(e)}`);
      failure = new Error(`chaos round ${round} failed (CHAOS_SEED=${seed}):\n${problems.slice(0, 30).join('\n')}`
        + `${problems.length > 30 ? `\n... ${problems.length - 30} more` : ''}\n${summary}\nkill plan:\n${describePlan()}\nkills:\n${describeKills()}`
        + `\nnotes:\n  ${notes.slice(0, 20).join('\n  ')}\nagent events:\n${agentLines.slice(0, 80).join('\n')}\nlowart log:\n${logLines.slice(0, 80).join('\n')}`);
    }
  } catch (e) {
    failure = new Error(`chaos round ${round} (CHAOS_SEED=${seed}) broke: ${e.stack}\nkill plan:\n${describePlan()}\nkills:\n${describeKills()}`);
  } finally {
    if (process.env.CHAOS_LOG_DIR) { // everything, for a closer look
      const out = path.join(process.env.CHAOS_LOG_DIR, `seed-${seed}`);
      await fsp.mkdir(out, { recursive: true });
      for (const [i, g] of gateways.entries()) await fsp.writeFile(path.join(out, `lowart-${i}.log`), g.log);
      await fsp.writeFile(path.join(out, 'events.jsonl'), events.map((e) => JSON.stringify(e)).join('\n'));
      await fsp.writeFile(path.join(out, 'handovers.json'), JSON.stringify({ kills, handovers, runsOn, notes, t0 }, null, 1));
      await fsp.writeFile(path.join(out, 'sends.json'), JSON.stringify({ specs, jobSpecs }, null, 1));
    }
    clearInterval(statsTimer);
    for (const { proc } of Object.values(workers)) proc.kill('SIGKILL');
    for (const b of backends) { b.proc?.kill('SIGKILL'); proxyDown(b); }
    for (const p of Object.values(pushers)) { p.server.close(); for (const s of p.sockets) s.destroy(); }
    if (gw) {
      gw.proc.kill('SIGTERM');
      const t = setTimeout(() => gw.proc.kill('SIGKILL'), 3000);
      await gw.exited;
      clearTimeout(t);
    }
  }
  if (failure) throw failure;
}

after(cleanupAll);

for (let round = 0; round < ROUNDS; round++) {
  const seed = (FIRST_SEED + round) >>> 0;
  test(`chaos round ${round + 1}/${ROUNDS} (CHAOS_SEED=${seed}): kills at random; every task and job ends once`, { timeout: 170000 * TIME_SCALE }, () => chaosRound(round, seed));
}
