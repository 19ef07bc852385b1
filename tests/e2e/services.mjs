// Real backing services for lowart's end-to-end tests: a Redis server and a PostgreSQL
// server (the Debian packages `redis-server` and `postgresql`), each started on 127.0.0.1
// on a free port, in a temporary directory of its own.
//
// Every wait here is bounded. Every process started through this module is tracked:
// cleanupServices() (call it from an after() hook) stops them and removes their
// directories, and, as a last resort, everything still running is SIGKILLed when the
// test process exits.
//
// PostgreSQL refuses to run as root, and CI runs the tests as root: then every server-side
// PostgreSQL command (initdb, postgres, createdb) runs as the `postgres` OS user, through
// the uid/gid options of child_process.spawn, so the process we track (and signal) is the
// postgres process itself, not a wrapper such as runuser or su.

import { execFile, execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { freePort, sleep, TIME_SCALE } from './harness.mjs';

const REDIS_SERVER = process.env.LOWART_REDIS_SERVER || '/usr/bin/redis-server';
const REDIS_CLI = process.env.LOWART_REDIS_CLI || 'redis-cli';
/** Where Debian installs the PostgreSQL server binaries, one directory per major version. */
const PG_ROOT = '/usr/lib/postgresql';

/** Bound for a server to answer after it was started. */
const REDIS_START_MS = 10000 * TIME_SCALE;
const PG_START_MS = 30000 * TIME_SCALE; // includes crash recovery after a kill()
/** Bound for a one-shot command (redis-cli, psql, pg_isready, createdb). */
const COMMAND_MS = 10000 * TIME_SCALE;
/** Bound for initdb, the slowest step (a few seconds; more on a loaded machine). */
const INITDB_MS = 120000 * TIME_SCALE;
/** How much of a server's stdout and stderr is kept (the tail). */
const OUTPUT_LIMIT = 256 * 1024;

// --- bookkeeping ------------------------------------------------------------------------------

const services = new Set(); // the objects returned by startRedis/startPostgres
const servers = new Set(); // server process handles (see launchServer)
const commands = new Set(); // one-shot child processes still running
const tempDirs = new Set();
const exitHooks = new Set(); // synchronous last-resort cleanups, run on process exit

process.on('exit', () => {
  for (const h of servers) killTreeSync(h.proc.pid);
  for (const c of commands) {
    try { c.kill('SIGKILL'); } catch { /* already gone */ }
  }
  for (const hook of exitHooks) {
    try { hook(); } catch { /* best effort */ }
  }
  for (const dir of tempDirs) {
    try { fs.rmSync(dir, { recursive: true, force: true }); } catch { /* best effort */ }
  }
});

/**
 * Stops every server this module started (the graceful signal, then SIGKILL after 3 s)
 * and removes their temporary directories.
 */
export async function cleanupServices() {
  await Promise.allSettled([...services].map((s) => s.dispose()));
  services.clear();
  await Promise.allSettled([...servers].map((h) => h.stop('SIGTERM', 3000)));
  for (const dir of tempDirs) {
    await fsp.rm(dir, { recursive: true, force: true }).catch(() => {});
  }
  tempDirs.clear();
}

/**
 * A fresh temporary directory (mode 0700), removed by cleanupServices(). With `owner`
 * ({ uid, gid }) it is chowned to that user, and created under /tmp when os.tmpdir() is
 * not reachable by other users (e.g. TMPDIR under /root).
 */
async function makeTempDir(prefix, owner) {
  let base = os.tmpdir();
  if (owner?.uid !== undefined && !reachableByOthers(base)) base = '/tmp';
  const dir = await fsp.mkdtemp(path.join(base, prefix));
  tempDirs.add(dir);
  if (owner?.uid !== undefined) await fsp.chown(dir, owner.uid, owner.gid);
  return dir;
}

/** True when every directory from / down to `dir` can be traversed by any user. */
function reachableByOthers(dir) {
  for (let d = path.resolve(dir); ; d = path.dirname(d)) {
    try {
      if ((fs.statSync(d).mode & 0o001) === 0) return false;
    } catch {
      return false;
    }
    if (d === path.dirname(d)) return true;
  }
}

// --- process trees ----------------------------------------------------------------------------

/** Reads /proc: a Map pid -> { ppid, state } of every process visible to us (Linux only). */
function processTable() {
  const table = new Map();
  let entries;
  try { entries = fs.readdirSync('/proc'); } catch { return table; }
  for (const e of entries) {
    if (!/^\d+$/.test(e)) continue;
    let stat;
    try { stat = fs.readFileSync(`/proc/${e}/stat`, 'utf8'); } catch { continue; }
    // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    table.set(Number(e), { state: rest[0], ppid: Number(rest[1]) });
  }
  return table;
}

/** The pids of every descendant of `pid` (children, grandchildren, ...), right now. */
function descendants(pid) {
  const children = new Map();
  for (const [p, { ppid }] of processTable()) {
    if (!children.has(ppid)) children.set(ppid, []);
    children.get(ppid).push(p);
  }
  const out = [];
  const queue = [pid];
  while (queue.length) {
    for (const c of children.get(queue.shift()) ?? []) {
      out.push(c);
      queue.push(c);
    }
  }
  return out;
}

/** True while `pid` exists and is not a zombie. */
function isAlive(pid) {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    return state !== 'Z' && state !== 'X';
  } catch {
    return false;
  }
}

/** SIGKILLs `pid` and every descendant of it (snapshotted first); returns the descendants. */
function killTreeSync(pid) {
  const kids = descendants(pid);
  for (const p of [pid, ...kids]) {
    try { process.kill(p, 'SIGKILL'); } catch { /* already gone */ }
  }
  return kids;
}

/** Waits (bounded) until none of `pids` is alive; resolves whether they all went. */
async function waitGone(pids, timeoutMs = 5000 * TIME_SCALE) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const left = pids.filter(isAlive);
    if (!left.length) return true;
    if (Date.now() >= deadline) return false;
    await sleep(20);
  }
}

// --- child processes --------------------------------------------------------------------------

/**
 * Runs a command to completion (bounded by `timeoutMs`, then SIGKILL), optionally as
 * another user (`uid`/`gid`, only when we are root). Resolves { code, stdout, stderr }.
 */
function exec(cmd, args, { timeoutMs = COMMAND_MS, env, cwd, uid, gid } = {}) {
  return new Promise((resolve) => {
    const child = execFile(cmd, args, {
      timeout: timeoutMs, killSignal: 'SIGKILL', env: env ?? process.env, cwd, uid, gid, maxBuffer: 16 << 20,
    }, (err, stdout, stderr) => {
      commands.delete(child);
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr, error: err });
    });
    commands.add(child);
    child.stdin?.on('error', () => {});
    child.stdin?.end();
  });
}

/** A readable account of a failed exec() for an error message. */
function describe(cmd, args, r) {
  const why = r.error && typeof r.error.code !== 'number'
    ? (r.error.killed ? 'timed out' : r.error.message)
    : `exit code ${r.code}`;
  return `${cmd} ${args.join(' ')}: ${why}\n${r.stdout}${r.stderr}`;
}

/**
 * Spawns a long-running server, collects (the tail of) its output, and tracks it.
 *   stop(signal, ms)  signals it, waits up to `ms`, then SIGKILLs it and its descendants;
 *                     resolves { code, signal, forced }
 *   kill()            SIGKILLs it and all its descendants and waits until they are gone
 */
function launchServer(bin, args, { cwd, env, uid, gid } = {}) {
  const proc = spawn(bin, args, { cwd, env, uid, gid, stdio: ['ignore', 'pipe', 'pipe'] });
  const out = { stdout: '', stderr: '' };
  const collect = (k) => (d) => {
    out[k] += d;
    if (out[k].length > OUTPUT_LIMIT) out[k] = out[k].slice(-OUTPUT_LIMIT);
  };
  proc.stdout.setEncoding('utf8').on('data', collect('stdout'));
  proc.stderr.setEncoding('utf8').on('data', collect('stderr'));
  let spawnError = null;
  const exited = new Promise((resolve) => {
    proc.once('exit', (code, signal) => resolve({ code, signal }));
    proc.once('error', (err) => { spawnError = err; resolve({ code: null, signal: null, error: err }); });
  });
  // stdout/stderr may still hold data after 'exit'; 'close' waits for it (and for any
  // child that inherited the pipes, hence only ever awaited with a bound).
  const closed = new Promise((resolve) => { proc.once('close', resolve); proc.once('error', resolve); });
  let result = null;
  const handle = {
    proc,
    out,
    exited,
    get running() { return !spawnError && proc.exitCode === null && proc.signalCode === null && !result; },
    /** Everything the server printed (the last OUTPUT_LIMIT characters of each stream). */
    output: () => (spawnError ? `${spawnError.message}\n` : '') + out.stdout + out.stderr,
    /** Waits (at most `ms`) until the output pipes are drained. */
    drained: (ms = 500) => Promise.race([closed, sleep(ms)]),
    async stop(signal = 'SIGTERM', timeoutMs = 3000) {
      if (!handle.running) {
        servers.delete(handle);
        return result ?? { ...(await exited), forced: false };
      }
      try { proc.kill(signal); } catch { /* already gone */ }
      let timer;
      const timedOut = new Promise((r) => { timer = setTimeout(() => r('timeout'), timeoutMs); });
      let r = await Promise.race([exited, timedOut]);
      clearTimeout(timer);
      let forced = false;
      if (r === 'timeout') {
        forced = true;
        const kids = killTreeSync(proc.pid);
        r = await exited;
        await waitGone(kids);
      }
      servers.delete(handle);
      result = { ...r, forced };
      return result;
    },
    async kill() {
      if (!handle.running) return handle.stop();
      const kids = killTreeSync(proc.pid);
      const r = await exited;
      await waitGone(kids);
      servers.delete(handle);
      result = { ...r, forced: true };
      return result;
    },
  };
  servers.add(handle);
  exited.then(() => { if (!handle.running) servers.delete(handle); });
  return handle;
}

/**
 * Polls `probe` every 100 ms until it resolves true, the server exits (rejects with its
 * output; `portInUse` tells a lost race for the port) or `timeoutMs` passes (SIGKILLs it,
 * then rejects with its output).
 */
async function waitReady(handle, name, probe, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (!handle.running) {
      await handle.drained();
      const r = await handle.exited;
      const err = new Error(`${name} exited before it was ready (code ${r.code}, signal ${r.signal}):\n${handle.output()}`);
      err.portInUse = /address already in use/i.test(handle.output());
      throw err;
    }
    let ok = false;
    try { ok = await probe(); } catch { ok = false; }
    if (ok && handle.running) return;
    if (Date.now() >= deadline) {
      await handle.kill();
      await handle.drained();
      throw new Error(`${name} was not ready within ${timeoutMs} ms:\n${handle.output()}`);
    }
    await sleep(100);
  }
}

/**
 * The service object shared by Redis and PostgreSQL. `launch(port)` starts the server and
 * resolves its handle once it is ready; `afterDeath()` tidies up after the server is gone.
 */
async function manage({ name, port: requestedPort, dir, stopSignal, launch, afterDeath = async () => {} }) {
  let handle = null;
  let port;
  // The port was free a moment ago; another process may grab it first: retry a few times.
  for (let attempt = 1; ; attempt++) {
    const p = requestedPort ?? await freePort();
    try {
      handle = await launch(p);
      port = p;
      break;
    } catch (e) {
      await afterDeath();
      if (requestedPort || attempt >= 3 || !e.portInUse) throw e;
    }
  }
  const svc = {
    port,
    dir,
    /** The server's current process. */
    get proc() { return handle?.proc; },
    get running() { return !!handle?.running; },
    /** What the server printed so far (the tail). */
    output: () => handle?.output() ?? '',
    /** Stops the server (`signal`, then SIGKILL after `ms`): { code, signal, forced }. */
    async stop(signal = stopSignal, ms = 3000) {
      const r = await handle.stop(signal, ms);
      await afterDeath();
      return r;
    },
    /** SIGKILLs the server and all its processes (a crash); resolves once they are gone. */
    async kill() {
      const r = await handle.kill();
      await afterDeath();
      return r;
    },
    /** Starts the server again, on the same port and the same directory (stops it first if running). */
    async restart() {
      if (handle.running) await svc.stop();
      try {
        handle = await launch(port);
      } catch (e) {
        await afterDeath();
        throw new Error(`${name} restart on port ${port} failed: ${e.message}`);
      }
      return svc;
    },
    /** For cleanupServices(). */
    async dispose() {
      await svc.stop().catch(() => {});
      services.delete(svc);
    },
  };
  services.add(svc);
  return svc;
}

// --- Redis ------------------------------------------------------------------------------------

/**
 * @typedef {object} RedisService
 * @property {number} port
 * @property {string} url                 redis://127.0.0.1:PORT
 * @property {string} dir                 its temporary working directory
 * @property {boolean} running
 * @property {() => string} output        what redis-server printed so far
 * @property {(signal?: string, ms?: number) => Promise<object>} stop   SIGTERM, then SIGKILL after ms (3000)
 * @property {() => Promise<object>} kill SIGKILL (resolves once the process is gone)
 * @property {() => Promise<RedisService>} restart  start again, same port and directory
 * @property {(...args: string[]) => Promise<string>} cli  `redis-cli -p PORT ...args`, stdout trimmed
 *           (throws when redis-cli fails, e.g. no server; an error *reply* such as
 *           "ERR wrong number of arguments ..." is returned as text: redis-cli exits 0)
 */

/**
 * Starts /usr/bin/redis-server on 127.0.0.1 (`port`, or a free one) without persistence,
 * in a temporary directory, and waits (10 s at most) until `redis-cli ping` answers PONG
 * from this very process (INFO process_id).
 * @param {{ port?: number }} [options]
 * @returns {Promise<RedisService>}
 */
export async function startRedis({ port } = {}) {
  if (!fs.existsSync(REDIS_SERVER)) {
    throw new Error(`${REDIS_SERVER} not found (apt-get install redis-server)`);
  }
  const dir = await makeTempDir('lowart-redis-');
  const cliArgs = (p) => ['-h', '127.0.0.1', '-p', String(p)];

  const launch = async (p) => {
    const h = launchServer(REDIS_SERVER, [
      '--port', String(p), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no',
      '--dir', dir, '--daemonize', 'no', '--protected-mode', 'no',
    ], { cwd: dir });
    await waitReady(h, 'redis-server', async () => {
      const ping = await exec(REDIS_CLI, [...cliArgs(p), 'ping'], { timeoutMs: 2000 });
      if (ping.stdout.trim() !== 'PONG') return false;
      // Make sure it is our server that answered, not someone else's on that port.
      const info = await exec(REDIS_CLI, [...cliArgs(p), 'info', 'server'], { timeoutMs: 2000 });
      return Number(/process_id:(\d+)/.exec(info.stdout)?.[1]) === h.proc.pid;
    }, REDIS_START_MS);
    return h;
  };

  const svc = await manage({ name: 'redis-server', port, dir, stopSignal: 'SIGTERM', launch });
  svc.url = `redis://127.0.0.1:${svc.port}`;
  svc.cli = async (...args) => {
    const argv = [...cliArgs(svc.port), ...args.map(String)];
    const r = await exec(REDIS_CLI, argv);
    if (r.code !== 0) throw new Error(describe(REDIS_CLI, argv, r));
    return r.stdout.trim();
  };
  return svc;
}

// --- PostgreSQL -------------------------------------------------------------------------------

/**
 * @typedef {object} PostgresService
 * @property {number} port
 * @property {string} url                 postgresql://lowart@127.0.0.1:PORT/lowart
 * @property {string} dir                 its temporary directory (the Unix socket lives here)
 * @property {string} dataDir             the cluster: dir/data
 * @property {boolean} running
 * @property {() => string} output        what postgres printed so far
 * @property {(signal?: string, ms?: number) => Promise<object>} stop
 *           SIGINT (fast shutdown: SIGTERM would wait for clients to disconnect), then
 *           SIGKILL after ms (3000)
 * @property {() => Promise<object>} kill SIGKILL of the postmaster and all its backends
 * @property {() => Promise<PostgresService>} restart  start again, same port and data
 * @property {(sql: string) => Promise<string>} psql  `psql -At -c sql` as lowart, stdout trimmed
 */

/** The highest-versioned /usr/lib/postgresql/<version>/bin that has a postgres binary. */
async function pgBinDir() {
  if (process.env.LOWART_PG_BINDIR) return process.env.LOWART_PG_BINDIR;
  const versions = (await fsp.readdir(PG_ROOT).catch(() => []))
    .filter((v) => /^\d+(\.\d+)?$/.test(v) && fs.existsSync(path.join(PG_ROOT, v, 'bin', 'postgres')))
    .sort((a, b) => Number(b) - Number(a));
  if (!versions.length) throw new Error(`no PostgreSQL server under ${PG_ROOT} (apt-get install postgresql)`);
  return path.join(PG_ROOT, versions[0], 'bin');
}

/**
 * The user to run the PostgreSQL server as: {} (ourselves) unless we are root, then the
 * `postgres` OS user's { uid, gid } (created by the Debian postgresql package).
 */
async function pgIdentity() {
  if (typeof process.getuid !== 'function' || process.getuid() !== 0) return {};
  const u = await exec('id', ['-u', 'postgres']);
  const g = await exec('id', ['-g', 'postgres']);
  if (u.code !== 0 || g.code !== 0) {
    throw new Error('running as root, and PostgreSQL refuses to run as root, but there is no ' +
      '"postgres" OS user to run it as (apt-get install postgresql)');
  }
  return { uid: Number(u.stdout.trim()), gid: Number(g.stdout.trim()) };
}

/** Our environment without PG* variables (which would redirect the commands), plus `extra`. */
function pgEnv(extra) {
  const env = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('PG')) env[k] = v;
  return { ...env, LC_ALL: 'C', ...extra };
}

/**
 * initdb's a fresh cluster in a temporary directory, starts `postgres` on 127.0.0.1
 * (`port`, or a free one; its Unix socket in that directory) with durability off for
 * speed, waits (30 s at most) until it is ready, and creates the database `lowart`,
 * owned by the superuser `lowart` (trust authentication, no password).
 *
 * As root, the server runs as the `postgres` OS user (spawn's uid/gid options), so the
 * tracked process, and the one stop()/kill() signal, is the postmaster itself.
 *
 * `settings` adds or overrides `-c name=value` server settings. Note that with the default
 * synchronous_commit=off a kill() loses the transactions committed in the last few hundred
 * milliseconds (the WAL writer had not written them yet); a test that checks what survives
 * a crash should pass { synchronous_commit: 'on' } (cheap: fsync stays off).
 * @param {{ port?: number, settings?: Record<string, string|number> }} [options]
 * @returns {Promise<PostgresService>}
 */
export async function startPostgres({ port, settings = {} } = {}) {
  const conf = {
    listen_addresses: '127.0.0.1',
    fsync: 'off',
    synchronous_commit: 'off',
    full_page_writes: 'off',
    ...settings,
  };
  const bin = await pgBinDir();
  const ids = await pgIdentity();
  const dir = await makeTempDir('lowart-pg-', ids);
  const dataDir = path.join(dir, 'data');
  const pidFile = path.join(dataDir, 'postmaster.pid');
  const asServer = {
    ...ids,
    cwd: dir,
    env: pgEnv(ids.uid !== undefined ? { HOME: dir, USER: 'postgres', LOGNAME: 'postgres' } : { HOME: dir }),
  };
  const clientEnv = pgEnv({ PGCONNECT_TIMEOUT: '5' });

  const initdbArgs = ['-D', dataDir, '-A', 'trust', '-U', 'lowart', '--no-sync', '-E', 'UTF8', '--no-locale'];
  const init = await exec(path.join(bin, 'initdb'), initdbArgs, { ...asServer, timeoutMs: INITDB_MS });
  if (init.code !== 0) throw new Error(`initdb failed: ${describe('initdb', initdbArgs, init)}`);

  // After a SIGKILL the dead postmaster leaves postmaster.pid and its SysV shared-memory
  // segment behind. Only called once all its processes are gone: drop both.
  // (`force`: on process exit, right after the SIGKILL, without waiting. Removing a segment
  // that is still attached is safe: the kernel frees it after the last process detaches.)
  const clearStaleLock = (force = false) => {
    let text;
    try { text = fs.readFileSync(pidFile, 'utf8'); } catch { return; }
    const lines = text.split('\n');
    if (!force && isAlive(Number(lines[0]))) return; // not stale (should not happen)
    const shmid = (lines[6] ?? '').trim().split(/\s+/)[1];
    if (/^\d+$/.test(shmid) && shmid !== '0') {
      try { execFileSync('ipcrm', ['-m', shmid], { stdio: 'ignore', timeout: 5000 }); } catch { /* gone already */ }
    }
    fs.rmSync(pidFile, { force: true });
  };
  const afterDeath = async () => {
    if (!svcRunning()) clearStaleLock();
  };
  let svcRunning = () => false;

  const launch = async (p) => {
    const args = ['-D', dataDir, '-p', String(p), '-k', dir];
    for (const [k, v] of Object.entries(conf)) args.push('-c', `${k}=${v}`);
    const h = launchServer(path.join(bin, 'postgres'), args, asServer);
    svcRunning = () => h.running;
    await waitReady(h, 'postgres', async () => {
      // Our postmaster says it is ready (so it is not someone else's server on that port)...
      let lines;
      try { lines = fs.readFileSync(pidFile, 'utf8').split('\n'); } catch { return false; }
      if (Number(lines[0]) !== h.proc.pid || (lines[7] ?? '').trim() !== 'ready') return false;
      // ...and accepts connections over TCP.
      const r = await exec(path.join(bin, 'pg_isready'), ['-h', '127.0.0.1', '-p', String(p), '-t', '2'],
        { env: clientEnv, timeoutMs: 5000 });
      return r.code === 0;
    }, PG_START_MS);
    return h;
  };

  const svc = await manage({ name: 'postgres', port, dir, stopSignal: 'SIGINT', launch, afterDeath });
  const exitHook = () => {
    if (!svc.running) return;
    killTreeSync(svc.proc.pid);
    clearStaleLock(true);
  };
  exitHooks.add(exitHook);
  const dispose = svc.dispose;
  svc.dispose = async () => { await dispose(); exitHooks.delete(exitHook); };
  svc.dataDir = dataDir;
  svc.url = `postgresql://lowart@127.0.0.1:${svc.port}/lowart`;

  const createdbArgs = ['-h', '127.0.0.1', '-p', String(svc.port), '-U', 'lowart', 'lowart'];
  const created = await exec(path.join(bin, 'createdb'), createdbArgs, { ...asServer, env: { ...asServer.env, PGCONNECT_TIMEOUT: '5' } });
  if (created.code !== 0) throw new Error(`createdb failed: ${describe('createdb', createdbArgs, created)}`);

  svc.psql = async (sql) => {
    const argv = ['-X', '-A', '-t', '-q', '-v', 'ON_ERROR_STOP=1', '-d', svc.url, '-c', sql];
    const r = await exec(path.join(bin, 'psql'), argv, { env: clientEnv });
    if (r.code !== 0) throw new Error(describe('psql', argv, r));
    return r.stdout.trim();
  };
  return svc;
}
