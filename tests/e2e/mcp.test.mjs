// MCP tool servers through lowart, end to end, against real MCP servers from npm
// (@modelcontextprotocol/server-everything and server-filesystem) started by lowart as
// child processes: registration and the command allowlist, listing and calling tools,
// a killed child restarted while calls fail cleanly, policies (deny, confirm -> approve
// or deny, session-scoped approvals), the audit trail, the official
// @modelcontextprotocol/sdk client through /mcp, restart persistence, and no child
// process left behind.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { api, cleanupAll, createKey, parseMetrics, metricValue, run, sleep, startGateway, tempDir, waitFor } from './harness.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const EVERYTHING = path.join(here, 'node_modules/@modelcontextprotocol/server-everything/dist/index.js');
const FILESYSTEM = path.join(here, 'node_modules/@modelcontextprotocol/server-filesystem/dist/index.js');

let gw;
let dir;
let files;
let user;     // a plain user key
let userId;
const encryptionKey = randomBytes(32).toString('hex');
const config = '[mcp]\nallowed_commands = ["node"]\ncall_timeout_ms = 10000\n';

async function gateway() {
  return startGateway({ config, dir, masterKey: gw?.masterKey, env: { LOWART_ENCRYPTION_KEY: encryptionKey } });
}

const alive = (pid) => { try { process.kill(pid, 0); return true; } catch { return false; } };

async function servers() {
  const r = await api(gw, 'GET', '/admin/mcp');
  assert.equal(r.status, 200, r.text);
  return Object.fromEntries(r.json.data.map((s) => [s.name, s]));
}

async function ready(name, { notPid } = {}) {
  let s;
  await waitFor(async () => {
    s = (await servers())[name];
    return s && s.state === 'ready' && s.pid > 0 && s.pid !== notPid;
  }, { timeoutMs: 20000, intervalMs: 100, what: `MCP server ${name} ready` });
  return s;
}

const call = (key, name, args, extra = {}) =>
  api(gw, 'POST', '/v1/mcp/tools/call', { key, body: { name, arguments: args, ...extra } });

before(async () => {
  dir = await tempDir();
  files = await tempDir('lowart-mcp-files-');
  gw = await gateway();
  const r1 = await api(gw, 'POST', '/admin/mcp/register', {
    body: { name: 'ev', command: 'node', args: [EVERYTHING, 'stdio'], env: { LOWART_E2E_SECRET: 'mcp-env-secret-value' } },
  });
  assert.equal(r1.status, 201, r1.text);
  const r2 = await api(gw, 'POST', '/admin/mcp/register', { body: { name: 'fs', command: 'node', args: [FILESYSTEM, files] } });
  assert.equal(r2.status, 201, r2.text);
  const k = await createKey(gw, { name: 'mcp-user' });
  user = k.key;
  userId = k.id;
  await ready('ev');
  await ready('fs');
});

after(cleanupAll);

test('registration: commands outside the allowlist, bad names and duplicates are refused', async () => {
  const bad = await api(gw, 'POST', '/admin/mcp/register', { body: { name: 'sh', command: 'bash', args: ['-c', 'id'] } });
  assert.equal(bad.status, 400);
  assert.match(bad.json.error.message, /allowed_commands/);
  assert.equal((await api(gw, 'POST', '/admin/mcp/register', { body: { name: 'a__b', command: 'node' } })).status, 400);
  assert.equal((await api(gw, 'POST', '/admin/mcp/register', { body: { name: 'ev', command: 'node', args: [EVERYTHING, 'stdio'] } })).status, 409);
  assert.equal((await api(gw, 'POST', '/admin/mcp/register', { key: user, body: { name: 'x', command: 'node' } })).status, 403);
  // The env is sealed at rest: its value is nowhere in the database files.
  for (const f of fs.readdirSync(gw.dir).filter((n) => n.startsWith('lowart.db'))) {
    assert.ok(!fs.readFileSync(path.join(gw.dir, f)).includes('mcp-env-secret-value'), `${f} holds the env value`);
  }
  const ev = (await servers()).ev;
  assert.deepEqual(ev.env_keys, ['LOWART_E2E_SECRET']);
  assert.ok(ev.tools.includes('echo') && ev.tools.includes('get-sum'), JSON.stringify(ev.tools));
  assert.equal(ev.protocol_version.length > 0, true);
});

test('a user key lists namespaced tools and calls echo, get-sum and the filesystem', async () => {
  const list = await api(gw, 'GET', '/v1/mcp/tools', { key: user });
  assert.equal(list.status, 200, list.text);
  const names = list.json.data.map((t) => t.name);
  for (const n of ['ev__echo', 'ev__get-sum', 'fs__write_file', 'fs__read_text_file']) assert.ok(names.includes(n), n);
  assert.ok(list.json.data.find((t) => t.name === 'ev__echo').inputSchema);

  const echo = await call(user, 'ev__echo', { message: 'hello through lowart' });
  assert.equal(echo.status, 200, echo.text);
  assert.deepEqual(echo.json.content, [{ type: 'text', text: 'Echo: hello through lowart' }]);
  const sum = await call(user, 'ev__get-sum', { a: 19, b: 23 });
  assert.equal(sum.status, 200);
  assert.match(sum.json.content[0].text, /42/);
  // The env given at registration reached the child.
  const env = await call(user, 'ev__get-env', {});
  assert.match(JSON.stringify(env.json), /mcp-env-secret-value/);

  const target = path.join(files, 'note.txt');
  const write = await call(user, 'fs__write_file', { path: target, content: 'written by an agent' });
  assert.equal(write.status, 200, write.text);
  assert.equal(fs.readFileSync(target, 'utf8'), 'written by an agent');
  const read = await call(user, 'fs__read_text_file', { path: target });
  assert.match(read.json.content[0].text, /written by an agent/);
  // The server refuses paths outside its directory: a tool error, not a gateway error.
  const outside = await call(user, 'fs__read_text_file', { path: '/etc/hostname' });
  assert.equal(outside.status, 200);
  assert.equal(outside.json.isError, true);

  assert.equal((await call(user, 'ev__no-such-tool', {})).status, 404);
  assert.equal((await call(user, 'nosep', {})).status, 404);
  assert.equal((await api(gw, 'POST', '/v1/mcp/tools/call', { key: user, body: '{"name":' })).status, 400);
  assert.equal((await api(gw, 'POST', '/v1/mcp/tools/call', { key: user, body: { name: 'ev__echo', arguments: [1] } })).status, 400);
});

test('a killed server is restarted; calls meanwhile fail cleanly', async () => {
  const before = (await servers()).ev;
  process.kill(before.pid, 'SIGKILL');
  // Right after the kill: a clean error (the server is restarting), never a hang.
  const during = await call(user, 'ev__echo', { message: 'during' });
  assert.ok([200, 502, 503].includes(during.status), during.text);
  if (during.status !== 200) assert.equal(typeof during.json.error.message, 'string');
  const now = await ready('ev', { notPid: before.pid });
  assert.equal(now.restarts, before.restarts + 1);
  assert.ok(!alive(before.pid));
  const echo = await call(user, 'ev__echo', { message: 'after restart' });
  assert.equal(echo.status, 200, echo.text);
  const m = parseMetrics((await api(gw, 'GET', '/metrics')).text);
  assert.ok(metricValue(m, 'gateway_mcp_server_restarts_total', { server: 'ev' }) >= 1);
  assert.equal(metricValue(m, 'gateway_mcp_server_up', { server: 'ev' }), 1);
  assert.ok(metricValue(m, 'gateway_mcp_tool_calls_total', { tool: 'ev__echo', outcome: 'ok' }) >= 2);
});

test('deny: 403 and the tool is not listed', async () => {
  const p = await api(gw, 'POST', '/admin/mcp/policies', { body: { tool: 'ev__get-tiny-image', policy: 'deny' } });
  assert.equal(p.status, 201, p.text);
  const r = await call(user, 'ev__get-tiny-image', {});
  assert.equal(r.status, 403);
  assert.equal(r.json.error.code, 'tool_denied');
  const names = (await api(gw, 'GET', '/v1/mcp/tools', { key: user })).json.data.map((t) => t.name);
  assert.ok(!names.includes('ev__get-tiny-image'));
  // A per-key override wins over the tool's global policy.
  const o = await api(gw, 'POST', '/admin/mcp/policies', { body: { tool: 'ev__get-tiny-image', policy: 'auto', key_id: userId } });
  assert.equal(o.status, 201);
  assert.equal((await call(user, 'ev__get-tiny-image', {})).status, 200);
  assert.equal((await api(gw, 'DELETE', `/admin/mcp/policies/${o.json.id}`)).status, 200);
  assert.equal((await call(user, 'ev__get-tiny-image', {})).status, 403);
});

test('confirm: approve runs the call and its result is kept; deny refuses it', async () => {
  assert.equal((await api(gw, 'POST', '/admin/mcp/policies', { body: { tool: 'fs__write_file', policy: 'confirm' } })).status, 201);
  const target = path.join(files, 'approved.txt');
  const pending = await call(user, 'fs__write_file', { path: target, content: 'after approval' });
  assert.equal(pending.status, 202, pending.text);
  assert.equal(pending.json.status, 'pending');
  const id = pending.json.approval_id;
  assert.ok(!fs.existsSync(target), 'nothing ran before the approval');
  const queue = await api(gw, 'GET', '/admin/approvals?status=pending');
  assert.ok(queue.json.data.some((a) => a.approval_id === id && a.tool === 'fs__write_file'));
  assert.equal((await api(gw, 'GET', `/v1/mcp/calls/${id}`, { key: user })).json.status, 'pending');
  // A user may not approve its own call.
  assert.equal((await api(gw, 'POST', `/admin/approvals/${id}/approve`, { key: user, body: {} })).status, 403);

  const ok = await api(gw, 'POST', `/admin/approvals/${id}/approve`, { body: { scope: 'call' } });
  assert.equal(ok.status, 200, ok.text);
  let done;
  await waitFor(async () => {
    done = (await api(gw, 'GET', `/v1/mcp/calls/${id}`, { key: user })).json;
    return done.status === 'completed';
  }, { timeoutMs: 10000, what: 'the approved call to complete' });
  assert.ok(Array.isArray(done.result.content));
  assert.equal(fs.readFileSync(target, 'utf8'), 'after approval');
  assert.equal((await api(gw, 'POST', `/admin/approvals/${id}/approve`, { body: {} })).status, 409, 'decided once');

  // Deny.
  const second = await call(user, 'fs__write_file', { path: path.join(files, 'denied.txt'), content: 'no' });
  assert.equal(second.status, 202);
  assert.equal((await api(gw, 'POST', `/admin/approvals/${second.json.approval_id}/deny`)).status, 200);
  assert.equal((await api(gw, 'GET', `/v1/mcp/calls/${second.json.approval_id}`, { key: user })).json.status, 'denied');
  assert.ok(!fs.existsSync(path.join(files, 'denied.txt')));

  // A caller that waits gets the result as soon as an admin approves.
  const waiting = call(user, 'fs__write_file', { path: path.join(files, 'waited.txt'), content: 'waited' }, { wait_ms: 8000 });
  let waitingId;
  await waitFor(async () => {
    const q = await api(gw, 'GET', '/admin/approvals?status=pending');
    waitingId = q.json.data.find((a) => a.arguments.content === 'waited')?.approval_id;
    return waitingId;
  }, { what: 'the waiting call to be pending' });
  assert.equal((await api(gw, 'POST', `/admin/approvals/${waitingId}/approve`, { body: {} })).status, 200);
  const answered = await waiting;
  assert.equal(answered.status, 200, answered.text);
  assert.ok(Array.isArray(answered.json.content));
  assert.equal(fs.readFileSync(path.join(files, 'waited.txt'), 'utf8'), 'waited');

  // Another key cannot read this key's calls.
  const other = (await createKey(gw, { name: 'other' })).key;
  assert.equal((await api(gw, 'GET', `/v1/mcp/calls/${id}`, { key: other })).status, 404);
});

test('a session-scoped approval lets the same session call again without asking', async () => {
  assert.equal((await api(gw, 'POST', '/admin/mcp/policies', { body: { tool: 'ev__get-sum', policy: 'confirm' } })).status, 201);
  const first = await call(user, 'ev__get-sum', { a: 1, b: 2 }, { session_id: 'sess-A' });
  assert.equal(first.status, 202);
  const ok = await api(gw, 'POST', `/admin/approvals/${first.json.approval_id}/approve`, { body: { scope: 'session' } });
  assert.equal(ok.status, 200, ok.text);
  const again = await call(user, 'ev__get-sum', { a: 5, b: 6 }, { session_id: 'sess-A' });
  assert.equal(again.status, 200, again.text);
  assert.match(again.json.content[0].text, /11/);
  assert.equal((await call(user, 'ev__get-sum', { a: 5, b: 6 }, { session_id: 'sess-B' })).status, 202);
  assert.equal((await call(user, 'ev__get-sum', { a: 5, b: 6 })).status, 202);
});

test('every call and decision is in the audit log', async () => {
  const r = await api(gw, 'GET', '/admin/audit?limit=500');
  assert.equal(r.status, 200, r.text);
  const actions = new Set(r.json.data.map((e) => e.action));
  for (const a of ['mcp.register', 'mcp.policy', 'mcp.call', 'mcp.call_denied', 'mcp.approval_requested', 'mcp.approve', 'mcp.deny'])
    assert.ok(actions.has(a), `audit has ${a}: ${[...actions].join(', ')}`);
});

test('the official MCP SDK client lists and calls tools through /mcp under the same policies', async () => {
  const transport = new StreamableHTTPClientTransport(new URL(`${gw.url}/mcp`), {
    requestInit: { headers: { authorization: `Bearer ${user}` } },
  });
  const client = new Client({ name: 'lowart-e2e', version: '1.0.0' });
  await client.connect(transport);
  try {
    const { tools } = await client.listTools();
    const names = tools.map((t) => t.name);
    assert.ok(names.includes('ev__echo') && names.includes('fs__list_directory'), names.join(','));
    assert.ok(!names.includes('ev__get-tiny-image'), 'denied tools are not offered');
    const echo = await client.callTool({ name: 'ev__echo', arguments: { message: 'via /mcp' } });
    assert.deepEqual(echo.content, [{ type: 'text', text: 'Echo: via /mcp' }]);
    const denied = await client.callTool({ name: 'ev__get-tiny-image', arguments: {} });
    assert.equal(denied.isError, true);
    const pending = await client.callTool({ name: 'fs__write_file', arguments: { path: path.join(files, 'mcp.txt'), content: 'x' } });
    assert.equal(pending.isError, true);
    assert.match(pending.content[0].text, /approval/);
  } finally {
    await client.close();
  }
});

test('a client that hangs up mid-call gets its tool call cancelled upstream', async () => {
  const before = metricValue(parseMetrics((await api(gw, 'GET', '/metrics')).text), 'gateway_mcp_tool_calls_total',
    { tool: 'ev__trigger-long-running-operation', outcome: 'cancelled' });
  const abort = new AbortController();
  const started = Date.now();
  const pending = fetch(`${gw.url}/v1/mcp/tools/call`, {
    method: 'POST', signal: abort.signal,
    headers: { authorization: `Bearer ${user}`, 'content-type': 'application/json' },
    body: JSON.stringify({ name: 'ev__trigger-long-running-operation', arguments: { duration: 8, steps: 4 } }),
  }).catch((e) => e);
  await sleep(500);
  abort.abort();
  await pending;
  await gw.waitForLog((l) => l.msg === 'MCP call cancelled: its client went away', 5000);
  const after = metricValue(parseMetrics((await api(gw, 'GET', '/metrics')).text), 'gateway_mcp_tool_calls_total',
    { tool: 'ev__trigger-long-running-operation', outcome: 'cancelled' });
  assert.equal(after, before + 1);
  assert.ok(Date.now() - started < 5000, 'cancelled long before the 8 s operation would end');
  // The server keeps serving, and pipelined keep-alive requests still work after a watch.
  assert.equal((await call(user, 'ev__echo', { message: 'still here' })).status, 200);
});

test('registered servers survive a restart; unregister and shutdown leave no process behind', async () => {
  const before = await servers();
  const oldPids = [before.ev.pid, before.fs.pid];
  const stopped = await gw.stop('SIGTERM', 10000);
  assert.equal(stopped.code, 0);
  for (const pid of oldPids) assert.ok(!alive(pid), `child ${pid} still alive after shutdown`);
  // Each server runs in a process group of its own (led by its guard): none is left.
  for (const pgid of oldPids) {
    const left = await run('pgrep', ['-g', String(pgid)]);
    assert.equal(left.stdout.trim(), '', `processes of group ${pgid} outlived the shutdown`);
  }

  gw = await gateway();
  const ev = await ready('ev');
  await ready('fs');
  assert.equal((await call(user, 'ev__echo', { message: 'back' })).status, 200);
  // Policies survived too.
  assert.equal((await call(user, 'ev__get-tiny-image', {})).status, 403);

  const del = await api(gw, 'DELETE', '/admin/mcp/fs');
  assert.equal(del.status, 200);
  await waitFor(async () => !(await servers()).fs, { what: 'fs gone from the list' });
  const fsPid = (await servers()).fs?.pid;
  assert.equal(fsPid, undefined);
  assert.equal((await call(user, 'fs__list_directory', { path: files })).status, 404);
  await sleep(100);
  const stopped2 = await gw.stop('SIGTERM', 10000);
  assert.equal(stopped2.code, 0);
  assert.ok(!alive(ev.pid));
  const left = await run('pgrep', ['-f', EVERYTHING]);
  assert.equal(left.stdout.trim(), '', 'no MCP child left running');
});
