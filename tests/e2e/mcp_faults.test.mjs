// MCP calls under faults, against a real stdio server written here: a call in flight when
// its server dies fails at once with 502; a call past call_timeout_ms is answered 504 and
// cancelled at the server (notifications/cancelled with its request id); and policies
// take precedence key over team over tool.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { api, cleanupAll, createKey, startGateway, tempDir, waitFor } from './harness.mjs';

// Tools: slow {ms} answers after ms; pid answers the server's pid. Every message the server
// receives is appended to the log file named by its first argument.
const SERVER = `
const fs = require('node:fs');
const log = process.argv[2];
const rl = require('node:readline').createInterface({ input: process.stdin });
const send = (m) => process.stdout.write(JSON.stringify({ jsonrpc: '2.0', ...m }) + '\\n');
rl.on('line', (line) => {
  fs.appendFileSync(log, line + '\\n');
  const m = JSON.parse(line);
  if (m.id === undefined) return;
  if (m.method === 'initialize')
    return send({ id: m.id, result: { protocolVersion: m.params.protocolVersion, capabilities: { tools: {} }, serverInfo: { name: 'slow', version: '1' } } });
  if (m.method === 'tools/list')
    return send({ id: m.id, result: { tools: [
      { name: 'slow', description: 'answers late', inputSchema: { type: 'object' } },
      { name: 'pid', description: 'its pid', inputSchema: { type: 'object' } }] } });
  if (m.method === 'tools/call') {
    if (m.params.name === 'pid') return send({ id: m.id, result: { content: [{ type: 'text', text: String(process.pid) }] } });
    return setTimeout(() => send({ id: m.id, result: { content: [{ type: 'text', text: 'late' }] } }), m.params.arguments.ms);
  }
  send({ id: m.id, error: { code: -32601, message: 'method not found' } });
});
`;

let gw;
let logFile;
let user;

async function ready() {
  await waitFor(async () => {
    const s = (await api(gw, 'GET', '/admin/mcp')).json.data.find((x) => x.name === 'slow');
    return s && s.state === 'ready';
  }, { timeoutMs: 15000, intervalMs: 100, what: 'the slow server ready' });
}
const call = (key, name, args) => api(gw, 'POST', '/v1/mcp/tools/call', { key, body: { name, arguments: args } });

before(async () => {
  const dir = await tempDir('lowart-mcpf-');
  const script = path.join(dir, 'slow.cjs');
  logFile = path.join(dir, 'messages.log');
  fs.writeFileSync(script, SERVER);
  gw = await startGateway({ config: '[mcp]\nallowed_commands = ["node"]\ncall_timeout_ms = 1000\n' });
  const r = await api(gw, 'POST', '/admin/mcp/register', { body: { name: 'slow', command: 'node', args: [script, logFile] } });
  assert.equal(r.status, 201, r.text);
  user = (await createKey(gw, { name: 'u' })).key;
  await ready();
});
after(cleanupAll);

test('a call in flight when its server dies fails at once with 502, and the server comes back', async () => {
  const pid = Number((await call(user, 'slow__pid', {})).json.content[0].text);
  const started = Date.now();
  const pending = call(user, 'slow__slow', { ms: 900 }); // would answer before call_timeout_ms
  await new Promise((r) => setTimeout(r, 150));
  process.kill(pid, 'SIGKILL');
  const r = await pending;
  assert.equal(r.status, 502, r.text);
  assert.ok(Date.now() - started < 800, `answered after ${Date.now() - started} ms: at once, not at the answer's time`);
  await ready();
  assert.notEqual(Number((await call(user, 'slow__pid', {})).json.content[0].text), pid);
});

test('a call past call_timeout_ms is a 504, and the server is told to cancel that request', async () => {
  const started = Date.now();
  const r = await call(user, 'slow__slow', { ms: 5000 });
  assert.equal(r.status, 504, r.text);
  const took = Date.now() - started;
  assert.ok(took >= 900 && took < 2500, `504 after ${took} ms (call_timeout_ms 1000)`);
  let messages;
  await waitFor(() => {
    messages = fs.readFileSync(logFile, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    return messages.some((m) => m.method === 'notifications/cancelled');
  }, { timeoutMs: 2000, what: 'notifications/cancelled at the server' });
  const callMsg = messages.filter((m) => m.method === 'tools/call' && m.params.arguments.ms === 5000).at(-1);
  const cancel = messages.filter((m) => m.method === 'notifications/cancelled').at(-1);
  assert.equal(cancel.params.requestId, callMsg.id, 'the cancellation names the timed-out request');
});

test('policies: a key\'s own wins over its team\'s, which wins over the tool\'s', async () => {
  const team = (await api(gw, 'POST', '/admin/teams', { body: { name: 'policy-team' } })).json;
  const member = await createKey(gw, { name: 'member', team: team.id });
  const special = await createKey(gw, { name: 'special', team: team.id });
  const outsider = await createKey(gw, { name: 'outsider' });
  const pol = (body) => api(gw, 'POST', '/admin/mcp/policies', { body: { tool: 'slow__pid', ...body } });
  assert.equal((await pol({ policy: 'deny' })).status, 201);
  assert.equal((await pol({ policy: 'auto', team: team.id })).status, 201);
  assert.equal((await pol({ policy: 'confirm', key_id: special.id })).status, 201);
  await waitFor(async () => (await call(outsider.key, 'slow__pid', {})).status === 403, { timeoutMs: 3000, what: 'the tool policy applied' });
  assert.equal((await call(member.key, 'slow__pid', {})).status, 200, 'the team policy wins over the tool\'s');
  const asked = await call(special.key, 'slow__pid', {});
  assert.equal(asked.status, 202, `the key policy wins over the team's: ${asked.text}`);
  assert.equal(asked.json.status, 'pending');
});
