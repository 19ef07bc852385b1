// Children die with lowart: after SIGKILL of the gateway no MCP server process is left,
// grandchildren included (a server that starts processes of its own, as npx and uvx do).

import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { api, cleanupAll, createKey, startGateway, tempDir, waitFor } from './harness.mjs';

after(cleanupAll);

// An MCP stdio server with one tool, `spawn`: it starts a long-lived grandchild and
// answers with its own pid and the grandchild's.
const TREE_SERVER = `
const { spawn } = require('node:child_process');
const rl = require('node:readline').createInterface({ input: process.stdin });
const send = (m) => process.stdout.write(JSON.stringify({ jsonrpc: '2.0', ...m }) + '\\n');
rl.on('line', (line) => {
  const m = JSON.parse(line);
  if (m.id === undefined) return;
  if (m.method === 'initialize')
    return send({ id: m.id, result: { protocolVersion: m.params.protocolVersion, capabilities: { tools: {} }, serverInfo: { name: 'tree', version: '1' } } });
  if (m.method === 'tools/list')
    return send({ id: m.id, result: { tools: [{ name: 'spawn', description: 'starts a grandchild', inputSchema: { type: 'object' } }] } });
  if (m.method === 'tools/call') {
    const g = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)'], { stdio: 'ignore' });
    return send({ id: m.id, result: { content: [{ type: 'text', text: JSON.stringify({ server: process.pid, grandchild: g.pid }) }] } });
  }
  send({ id: m.id, error: { code: -32601, message: 'method not found' } });
});
`;

const alive = (pid) => { try { process.kill(pid, 0); return true; } catch { return false; } };

test('SIGKILL of lowart ends every MCP process: guard, server and the grandchildren it started', async () => {
  const dir = await tempDir('lowart-tree-');
  const script = path.join(dir, 'tree.cjs');
  fs.writeFileSync(script, TREE_SERVER);
  const gw = await startGateway({ config: '[mcp]\nallowed_commands = ["node"]\n' });
  const reg = await api(gw, 'POST', '/admin/mcp/register', { body: { name: 'tree', command: 'node', args: [script] } });
  assert.equal(reg.status, 201, reg.text);
  const user = (await createKey(gw, { name: 'u' })).key;
  let call;
  await waitFor(async () => {
    call = await api(gw, 'POST', '/v1/mcp/tools/call', { key: user, body: { name: 'tree__spawn', arguments: {} } });
    return call.status === 200;
  }, { timeoutMs: 15000, intervalMs: 100, what: 'the tree server answering' });
  const { server, grandchild } = JSON.parse(call.json.content[0].text);
  const listed = (await api(gw, 'GET', '/admin/mcp')).json.data.find((s) => s.name === 'tree').pid;
  for (const pid of [listed, server, grandchild]) assert.ok(alive(pid), `${pid} runs before the kill`);

  await gw.stop('SIGKILL');
  await waitFor(() => ![listed, server, grandchild].some(alive), { timeoutMs: 3000, intervalMs: 50, what: 'no process of the tree left' });
});

test('a server that exits is restarted; its grandchildren do not outlive it', async () => {
  const dir = await tempDir('lowart-tree2-');
  const script = path.join(dir, 'tree.cjs');
  fs.writeFileSync(script, TREE_SERVER);
  const gw = await startGateway({ config: '[mcp]\nallowed_commands = ["node"]\n' });
  assert.equal((await api(gw, 'POST', '/admin/mcp/register', { body: { name: 'tree', command: 'node', args: [script] } })).status, 201);
  const user = (await createKey(gw, { name: 'u' })).key;
  let call;
  await waitFor(async () => {
    call = await api(gw, 'POST', '/v1/mcp/tools/call', { key: user, body: { name: 'tree__spawn', arguments: {} } });
    return call.status === 200;
  }, { timeoutMs: 15000, intervalMs: 100, what: 'the tree server answering' });
  const { server, grandchild } = JSON.parse(call.json.content[0].text);
  process.kill(server, 'SIGKILL');
  await waitFor(() => !alive(grandchild), { timeoutMs: 3000, intervalMs: 50, what: 'the grandchild gone with its server' });
  await waitFor(async () => {
    const s = (await api(gw, 'GET', '/admin/mcp')).json.data.find((x) => x.name === 'tree');
    return s.state === 'ready' && s.restarts >= 1;
  }, { timeoutMs: 10000, intervalMs: 100, what: 'the server restarted' });
  assert.equal((await api(gw, 'DELETE', '/admin/mcp/tree')).status, 200);
  await gw.stop();
});
