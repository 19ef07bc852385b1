// Shared helpers for lowart's end-to-end tests: start the real `lowart` and `lowart-mock`
// binaries on 127.0.0.1, talk to them over HTTP (or a Unix socket), and clean up after.
//
// Every wait here is bounded. Every process started through this module is tracked and
// killed by cleanupAll() (call it from an after() hook) and, as a last resort, with
// SIGKILL when the test process exits.

import { spawn, execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import OpenAI from 'openai';

const here = path.dirname(fileURLToPath(import.meta.url));
export const LOWART_BIN = process.env.LOWART_BIN || path.resolve(here, '../../build/lowart');
export const LOWART_MOCK_BIN = process.env.LOWART_MOCK_BIN || path.resolve(here, '../../build/lowart-mock');

/**
 * Sanitizer builds run many times slower: `make tsan` sets LOWART_TIME_SCALE so every
 * bound here (and in tests that use TIME_SCALE) stretches by that factor.
 */
export const TIME_SCALE = Math.max(1, Number(process.env.LOWART_TIME_SCALE) || 1);

/** Default bound for a single HTTP exchange made by a test. */
export const REQUEST_TIMEOUT_MS = 5000 * TIME_SCALE;

// --- bookkeeping ------------------------------------------------------------------------------

const live = new Set(); // { proc, stop }
const tempDirs = new Set();

process.on('exit', () => {
  for (const p of live) {
    try { p.proc.kill('SIGKILL'); } catch { /* already gone */ }
  }
});

// --- PostgreSQL mode ----------------------------------------------------------------------------
//
// With LOWART_E2E_POSTGRES=1 every gateway stores its data in PostgreSQL instead of SQLite:
// one real server per test file (tests/e2e/services.mjs), one fresh database per gateway
// directory (a restarted gateway with the same `dir` finds its data again), and
// sqliteQuery() asks that database. scripts/test.sh runs the storage-heavy suites once
// more this way, so the same tests prove both backends.

export const POSTGRES_MODE = process.env.LOWART_E2E_POSTGRES === '1';
let pgServer = null;
const pgDatabases = new Map(); // dbPath -> postgresql:// URL

async function postgresFor(dbPath) {
  if (!pgServer) {
    const { startPostgres } = await import('./services.mjs');
    pgServer = await startPostgres();
  }
  if (!pgDatabases.has(dbPath)) {
    const name = `lw_${randomBytes(6).toString('hex')}`;
    await pgServer.psql(`CREATE DATABASE ${name}`);
    pgDatabases.set(dbPath, pgServer.url.replace(/\/[^/]*$/, `/${name}`));
  }
  return pgDatabases.get(dbPath);
}

/** Stops every process this module started (SIGTERM, then SIGKILL) and removes temp dirs. */
export async function cleanupAll() {
  await Promise.allSettled([...live].map((p) => p.stop('SIGTERM', 3000)));
  if (pgServer) {
    const { cleanupServices } = await import('./services.mjs');
    await cleanupServices();
    pgServer = null;
    pgDatabases.clear();
  }
  for (const dir of tempDirs) {
    await fsp.rm(dir, { recursive: true, force: true }).catch(() => {});
  }
  tempDirs.clear();
}

export async function tempDir(prefix = 'lowart-e2e-') {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), prefix));
  tempDirs.add(dir);
  return dir;
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Runs `total` jobs with at most `concurrency` at a time; returns their results in order. */
export async function pool(total, concurrency, job) {
  const results = new Array(total);
  let next = 0;
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (next < total) {
      const i = next++;
      results[i] = await job(i);
    }
  }));
  return results;
}

/** A TCP port that was free a moment ago (bind port 0, read it, close). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/** Resolves true when something accepts TCP connections on 127.0.0.1:port. */
export function canConnect(port, timeoutMs = 1000) {
  return new Promise((resolve) => {
    const sock = net.connect({ host: '127.0.0.1', port });
    const done = (ok) => { sock.destroy(); resolve(ok); };
    sock.setTimeout(timeoutMs, () => done(false));
    sock.once('connect', () => done(true));
    sock.once('error', () => done(false));
  });
}

/** Polls `fn` until it returns a truthy value or `timeoutMs` passes (then throws). */
export async function waitFor(fn, { timeoutMs = 5000, intervalMs = 50, what = 'condition' } = {}) {
  timeoutMs *= TIME_SCALE;
  const deadline = Date.now() + timeoutMs;
  let lastError;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (e) {
      if (e && e.fatal) throw e;
      lastError = e;
    }
    if (Date.now() >= deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}` +
        (lastError ? ` (last error: ${lastError.message})` : ''));
    }
    await sleep(intervalMs);
  }
}

// --- processes --------------------------------------------------------------------------------

/**
 * Spawns a binary, collects its stdout and stderr, and tracks it for cleanup.
 * `stop(signal, ms)` signals it, waits up to `ms`, then SIGKILLs; it resolves with
 * { code, signal, forced } where `forced` tells whether SIGKILL was needed.
 */
function launch(bin, args, { env = {}, cwd } = {}) {
  const proc = spawn(bin, args, {
    cwd,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const out = { stdout: '', stderr: '' };
  proc.stdout.setEncoding('utf8').on('data', (d) => { out.stdout += d; });
  proc.stderr.setEncoding('utf8').on('data', (d) => { out.stderr += d; });
  const exited = new Promise((resolve) => {
    proc.once('exit', (code, signal) => resolve({ code, signal }));
    proc.once('error', (err) => resolve({ code: null, signal: null, error: err }));
  });
  let result = null;
  const handle = {
    proc,
    out,
    exited,
    get running() { return proc.exitCode === null && proc.signalCode === null && !result; },
    async stop(signal = 'SIGTERM', timeoutMs = 5000) {
      if (!handle.running) {
        live.delete(handle);
        return result ?? { ...(await exited), forced: false };
      }
      if (signal) proc.kill(signal); // null: only wait (the caller signalled already)
      let timer;
      const timedOut = new Promise((r) => { timer = setTimeout(() => r('timeout'), timeoutMs); });
      let r = await Promise.race([exited, timedOut]);
      clearTimeout(timer);
      let forced = false;
      if (r === 'timeout') {
        forced = true;
        proc.kill('SIGKILL');
        r = await exited;
      }
      live.delete(handle);
      result = { ...r, forced };
      return result;
    },
  };
  live.add(handle);
  exited.then(() => live.delete(handle));
  return handle;
}

/** Waits until `handle.out[stream]` matches `re`; rejects early if the process exits. */
async function waitForOutput(handle, stream, re, timeoutMs, name) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const m = handle.out[stream].match(re);
    if (m) return m;
    if (!handle.running) {
      throw new Error(`${name} exited before it was ready:\n${handle.out.stdout}\n${handle.out.stderr}`);
    }
    await sleep(20);
  }
  throw new Error(`${name} was not ready within ${timeoutMs} ms:\n${handle.out.stdout}\n${handle.out.stderr}`);
}

/**
 * Starts build/lowart-mock. Listens on `port` (default: 0, the kernel picks one and the
 * mock prints it). Resolves once it printed "lowart-mock listening on".
 */
export async function startMock({ tls, args = [], port = 0 } = {}) {
  const argv = ['--listen', `127.0.0.1:${port}`];
  if (tls) argv.push('--tls-cert', tls.cert, '--tls-key', tls.key);
  argv.push(...args);
  const h = launch(LOWART_MOCK_BIN, argv);
  const m = await waitForOutput(h, 'stdout', /lowart-mock listening on [^\s]*:(\d+)/, 5000, 'lowart-mock');
  const boundPort = Number(m[1]);
  const scheme = tls ? 'https' : 'http';
  const host = tls ? 'localhost' : '127.0.0.1';
  return {
    port: boundPort,
    url: `${scheme}://${host}:${boundPort}`,
    proc: h.proc,
    stop: (signal = 'SIGTERM', ms = 3000) => h.stop(signal, ms),
  };
}

/** GET /mock/stats of a plain-HTTP mock. */
export async function mockStats(mock) {
  const res = await fetch(`http://127.0.0.1:${mock.port}/mock/stats`, { signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) });
  if (res.status !== 200) throw new Error(`/mock/stats answered ${res.status}`);
  return res.json();
}

export async function mockReset(mock) {
  const res = await fetch(`http://127.0.0.1:${mock.port}/mock/reset`, { method: 'POST', signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) });
  if (res.status !== 200) throw new Error(`/mock/reset answered ${res.status}`);
}

// --- configuration ----------------------------------------------------------------------------

function tomlValue(v) {
  if (typeof v === 'string') return JSON.stringify(v); // JSON strings are valid TOML basic strings
  if (typeof v === 'number' || typeof v === 'boolean') return String(v);
  if (Array.isArray(v)) return `[${v.map(tomlValue).join(', ')}]`;
  throw new Error(`unsupported TOML value: ${v}`);
}

function tomlTable(header, obj) {
  let s = `${header}\n`;
  for (const [k, v] of Object.entries(obj)) {
    if (v === undefined) continue;
    s += `${k} = ${tomlValue(v)}\n`;
  }
  return s;
}

/**
 * Renders a lowart.toml from plain objects:
 *   { server: {...}, storage: {...}, providers: [{name, base_url, ...}],
 *     models: [{name, deployments: [{provider, model, priority?, weight?}]}] }
 */
export function renderConfig({ server = {}, storage, providers = [], models = [] }) {
  let s = tomlTable('[server]', { listen: '127.0.0.1:3000', ...server });
  if (storage) s += tomlTable('\n[storage]', storage);
  for (const p of providers) s += tomlTable('\n[[providers]]', { kind: 'openai', ...p });
  for (const m of models) {
    s += tomlTable('\n[[models]]', { name: m.name });
    for (const d of m.deployments) s += tomlTable('[[models.deployments]]', { priority: 0, weight: 1, ...d });
  }
  return s;
}

// --- the gateway ------------------------------------------------------------------------------

/**
 * One HTTP exchange over TCP (`port`) or a Unix socket (`socketPath`) with node:http.
 * Resolves { status, headers, body } (body as text); bounded by `timeoutMs`.
 */
export function rawRequest({ port, socketPath, method = 'GET', path: p = '/', headers = {}, body, timeoutMs = REQUEST_TIMEOUT_MS }) {
  return new Promise((resolve, reject) => {
    const req = http.request({
      host: '127.0.0.1', port, socketPath, method, path: p, agent: false,
      headers: body !== undefined ? { 'content-length': Buffer.byteLength(body), ...headers } : headers,
    }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d) => { text += d; });
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: text }));
      res.on('error', reject);
    });
    req.setTimeout(timeoutMs, () => req.destroy(new Error(`${method} ${p}: no answer within ${timeoutMs} ms`)));
    req.on('error', reject);
    if (body !== undefined) req.write(body);
    req.end();
  });
}

/**
 * Starts `build/lowart serve --config <dir>/lowart.toml` and waits for GET /readyz == 200
 * (polled every 50 ms, 10 s at most). Options:
 *   config      TOML text
 *   env         extra environment (LISTEN_MODE, LOWART_UDS_PATH, provider keys, ...)
 *   dir         reuse this directory (and so its lowart.db) instead of a fresh temp dir
 *   masterKey   reuse a master key (default: a fresh random "sk-master-...")
 */
export async function startGateway({ config, env = {}, dir, masterKey } = {}) {
  dir = dir ?? await tempDir();
  const configPath = path.join(dir, 'lowart.toml');
  await fsp.writeFile(configPath, config);
  masterKey = masterKey ?? `sk-master-${randomBytes(16).toString('hex')}`;
  // freePort() can race with another process grabbing the port: retry on a bind failure.
  for (let attempt = 1; ; attempt++) {
    const port = await freePort();
    try {
      return await launchGateway({ configPath, env, dir, masterKey, port });
    } catch (e) {
      if (attempt >= 3 || env.LOWART_LISTEN || !/cannot listen on 127/.test(e.message)) throw e;
    }
  }
}

async function launchGateway({ configPath, env, dir, masterKey, port }) {
  const dbPath = path.join(dir, 'lowart.db');
  const fullEnv = {
    LOWART_MASTER_KEY: masterKey,
    LOWART_DB: dbPath,
    LOWART_LISTEN: `127.0.0.1:${port}`,
    ...env,
  };
  if (POSTGRES_MODE && !fullEnv.LOWART_DATABASE_URL) fullEnv.LOWART_DATABASE_URL = await postgresFor(dbPath);
  const h = launch(LOWART_BIN, ['serve', '--config', configPath], { env: fullEnv, cwd: dir });
  const mode = (fullEnv.LISTEN_MODE || 'TCP').toUpperCase();
  const socketPath = mode !== 'TCP' ? fullEnv.LOWART_UDS_PATH : undefined;

  const gw = {
    port,
    url: `http://127.0.0.1:${port}`,
    socketPath,
    proc: h.proc,
    dir,
    dbPath,
    configPath,
    masterKey,
    env: fullEnv,
    /** Everything the gateway printed so far (stdout then stderr). */
    rawLogs: () => h.out.stdout + h.out.stderr,
    /** The JSON log lines printed so far, parsed; other lines as { raw }. */
    logs: () => (h.out.stdout + h.out.stderr).split('\n').filter((l) => l.trim()).map((l) => {
      try { return JSON.parse(l); } catch { return { raw: l }; }
    }),
    /** Waits (bounded) for a log line matching `pred`; the log writer batches every ~50 ms. */
    waitForLog: (pred, timeoutMs = 3000) =>
      waitFor(() => gw.logs().find(pred), { timeoutMs, what: 'a matching log line' }),
    /** Signals the gateway (unless signal is null) and waits for it (ms, then SIGKILL): { code, signal, forced }. */
    stop: (signal = 'SIGTERM', ms = 5000) => h.stop(signal, ms),
    exited: h.exited,
    get running() { return h.running; },
    /** An OpenAI client for this gateway. */
    client: (apiKey, opts = {}) => new OpenAI({
      baseURL: `${gw.url}/v1`, apiKey, maxRetries: 0, timeout: REQUEST_TIMEOUT_MS, ...opts,
    }),
  };

  const readyTarget = mode === 'UDS' ? { socketPath } : { port };
  try {
    await waitFor(async () => {
      if (!h.running) throw Object.assign(new Error('lowart exited'), { fatal: true });
      const r = await rawRequest({ ...readyTarget, path: '/readyz', timeoutMs: 1000 });
      return r.status === 200;
    }, { timeoutMs: 10000, intervalMs: 50, what: 'GET /readyz == 200' });
  } catch (e) {
    await h.stop('SIGKILL', 1000);
    throw new Error(`lowart did not become ready: ${e.message}\n--- output ---\n${gw.rawLogs()}`);
  }
  return gw;
}

/**
 * JSON request to the gateway with the master key (or `key`; null: none); resolves
 * { status, headers, json, text }. `redirect: 'manual'` answers a redirect as it is.
 */
export async function api(gw, method, p, { body, key = gw.masterKey, headers = {}, redirect } = {}) {
  const res = await fetch(gw.url + p, {
    method,
    redirect,
    headers: {
      ...(key ? { authorization: `Bearer ${key}` } : {}),
      ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
      ...headers,
    },
    body: body === undefined ? undefined : (typeof body === 'string' ? body : JSON.stringify(body)),
    signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
  }).catch((e) => {
    // undici hides the interesting part (e.g. an unparsable response head) in `cause`.
    throw new Error(`${method} ${p} failed: ${e.message}${e.cause ? ` (${e.cause.code ?? ''} ${e.cause.message})` : ''}`);
  });
  const text = await res.text();
  let json;
  try { json = JSON.parse(text); } catch { json = undefined; }
  return { status: res.status, headers: res.headers, json, text };
}

/** POST /admin/keys with the master key; returns the created key's JSON (throws unless 201). */
export async function createKey(gw, body) {
  const r = await api(gw, 'POST', '/admin/keys', { body });
  if (r.status !== 201) throw new Error(`POST /admin/keys answered ${r.status}: ${r.text}`);
  return r.json;
}

/** Runs a command (optionally feeding `input` on stdin); resolves { code, stdout, stderr }, bounded by timeoutMs. */
export function run(cmd, args, { timeoutMs = 10000, env, input } = {}) {
  return new Promise((resolve) => {
    const child = execFile(cmd, args,
      { timeout: timeoutMs, killSignal: 'SIGKILL', env: env ? { ...process.env, ...env } : process.env, maxBuffer: 16 << 20 },
      (err, stdout, stderr) => {
        resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr, error: err });
      });
    child.stdin.on('error', () => {}); // the command may exit without reading everything
    child.stdin.end(input ?? '');
  });
}

/** Runs a query with the sqlite3 CLI in JSON mode; returns the rows. */
export async function sqliteQuery(dbPath, sql) {
  if (pgDatabases.has(dbPath)) { // PostgreSQL mode: the same rows, as JSON, from that database
    const r = await run('psql', ['-X', '-At', '-q', '-v', 'ON_ERROR_STOP=1', '-d', pgDatabases.get(dbPath),
      '-c', `SELECT COALESCE(json_agg(t), '[]') FROM (${sql}) t`]);
    if (r.code !== 0) throw new Error(`psql failed (${r.code}): ${r.stderr}`);
    return JSON.parse(r.stdout.trim());
  }
  const r = await run('sqlite3', ['-json', dbPath, sql]);
  if (r.code !== 0) throw new Error(`sqlite3 failed (${r.code}): ${r.stderr}`);
  return r.stdout.trim() ? JSON.parse(r.stdout) : [];
}

/** Parses a server-sent-events body into its `data:` payloads (strings). */
export function sseData(text) {
  return text.split(/\r?\n\r?\n/).map((ev) => ev.split(/\r?\n/)
    .filter((l) => l.startsWith('data:'))
    .map((l) => l.slice(5).replace(/^ /, ''))
    .join('\n')).filter((d) => d !== '');
}

/** Parses Prometheus text format into [{ name, labels, value }]. */
export function parseMetrics(text) {
  const out = [];
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = line.match(/^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/);
    if (!m) continue;
    const labels = {};
    if (m[2]) for (const l of m[2].matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]] = l[2];
    out.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return out;
}

/** Sum of the samples named `name` whose labels include `labels`. */
export function metricValue(samples, name, labels = {}) {
  return samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))
    .reduce((a, s) => a + s.value, 0);
}

/** Asserts that `json` is an OpenAI error envelope {"error":{"message","type","param","code"}}. */
export function isOpenAIErrorEnvelope(json) {
  return json && typeof json === 'object' && json.error && typeof json.error === 'object' &&
    typeof json.error.message === 'string' && json.error.message.length > 0 &&
    typeof json.error.type === 'string' && 'param' in json.error && 'code' in json.error;
}

/** Writes a self-signed certificate for "localhost" into `dir` with the openssl CLI. */
export async function selfSignedCert(dir) {
  const cert = path.join(dir, 'cert.pem');
  const key = path.join(dir, 'key.pem');
  const r = await run('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=localhost',
    '-addext', 'subjectAltName=DNS:localhost', '-days', '1', '-keyout', key, '-out', cert], { timeoutMs: 20000 });
  if (r.code !== 0 || !fs.existsSync(cert)) throw new Error(`openssl failed: ${r.stderr}`);
  return { cert, key };
}
