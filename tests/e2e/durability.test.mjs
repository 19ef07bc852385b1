// Crash durability: lowart is killed with SIGKILL in the middle of a load, then
// restarted on the same database. The database opens cleanly (integrity_check ok),
// nothing committed is lost (keys, teams, MCP servers, policies and a pending approval,
// which is then approved and runs), and usage loss is bounded by
// the write-behind interval: every request that finished more than a few flush
// intervals before the kill has its usage record.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import fs from 'node:fs';
import { POSTGRES_MODE, api, cleanupAll, createKey, renderConfig, run, sleep, startGateway, startMock, sqliteQuery, tempDir, waitFor } from './harness.mjs';

const EVERYTHING = path.join(path.dirname(fileURLToPath(import.meta.url)),
  'node_modules/@modelcontextprotocol/server-everything/dist/index.js');

let mock;
let dir;
const FLUSH_MS = 25;

before(async () => {
  mock = await startMock();
  dir = await tempDir();
});

after(cleanupAll);

const config = () => '[mcp]\nallowed_commands = ["node"]\n' + renderConfig({
  storage: { usage_flush_ms: FLUSH_MS },
  providers: [{ name: 'mock', base_url: `${mock.url}/v1` }],
  models: [{ name: 'gpt-demo', deployments: [{ provider: 'mock', model: 'mock-model' }] }],
});

test('kill -9 under load: clean reopen, committed state kept, usage loss bounded by the flush interval', async () => {
  let gw = await startGateway({ config: config(), dir });
  const team = await api(gw, 'POST', '/admin/teams', { body: { name: 'durable-team' } });
  assert.equal(team.status, 201, team.text);
  const keys = [];
  for (let i = 0; i < 5; i++) keys.push(await createKey(gw, { name: `durable-${i}`, team: 'durable-team' }));
  const policy = await api(gw, 'POST', '/admin/mcp/policies', { body: { tool: 'srv__danger', policy: 'deny' } });
  assert.equal(policy.status, 201, policy.text);
  // A pending approval: a confirm-policy call to a registered MCP server.
  assert.equal((await api(gw, 'POST', '/admin/mcp/register', { body: { name: 'ev', command: 'node', args: [EVERYTHING, 'stdio'] } })).status, 201);
  assert.equal((await api(gw, 'POST', '/admin/mcp/policies', { body: { tool: 'ev__echo', policy: 'confirm' } })).status, 201);
  const serverReady = async () => (await api(gw, 'GET', '/admin/mcp')).json.data.find((x) => x.name === 'ev')?.state === 'ready';
  await waitFor(serverReady, { timeoutMs: 20000, what: 'the MCP server' });
  const pending = await api(gw, 'POST', '/v1/mcp/tools/call', { key: keys[0].key, body: { name: 'ev__echo', arguments: { message: 'survives' } } });
  assert.equal(pending.status, 202, pending.text);

  // Load: 8 workers sending requests back to back; each finished request is noted with
  // its request id and the time it finished.
  const finished = [];
  let stop = false;
  const worker = async (w) => {
    while (!stop) {
      try {
        const r = await fetch(`${gw.url}/v1/chat/completions`, {
          method: 'POST',
          headers: { authorization: `Bearer ${keys[w % keys.length].key}`, 'content-type': 'application/json' },
          body: JSON.stringify({ model: 'gpt-demo', messages: [{ role: 'user', content: `load ${w}` }] }),
        });
        await r.text();
        if (r.status === 200) finished.push({ id: r.headers.get('x-request-id'), at: Date.now() });
      } catch {
        return; // the gateway is gone
      }
    }
  };
  const workers = Array.from({ length: 8 }, (_, w) => worker(w));
  await sleep(1500);
  // An admin change answered 201 and the gateway killed the same moment: it must be there.
  const lastKey = await createKey(gw, { name: 'answered-then-killed', team: 'durable-team' });
  const killedAt = Date.now();
  gw.proc.kill('SIGKILL');
  stop = true;
  await Promise.all(workers);
  await gw.stop(null, 5000);
  assert.ok(finished.length > 100, `only ${finished.length} requests finished before the kill`);

  // The database reopens cleanly (SQLite: its file passes integrity_check; PostgreSQL has
  // no file, and its server is what a restart must reach).
  if (POSTGRES_MODE) {
    assert.ok(!fs.existsSync(gw.dbPath), 'PostgreSQL mode writes no SQLite file');
  } else {
    assert.ok(fs.existsSync(gw.dbPath), 'the SQLite file exists');
    const check = await run('sqlite3', [gw.dbPath, 'PRAGMA integrity_check;']);
    assert.equal(check.stdout.trim(), 'ok', check.stdout + check.stderr);
  }
  gw = await startGateway({ config: config(), dir, masterKey: gw.masterKey });

  // Committed state is all there: keys work, the team and the policy exist.
  for (const k of [...keys, lastKey]) {
    const r = await api(gw, 'GET', '/v1/me', { key: k.key });
    assert.equal(r.status, 200, `key ${k.id} lost`);
  }
  assert.ok((await api(gw, 'GET', '/admin/teams')).json.data.some((t) => t.name === 'durable-team'));
  assert.ok((await api(gw, 'GET', '/admin/mcp/policies')).json.data.some((p) => p.tool === 'srv__danger'));
  const approvals = (await api(gw, 'GET', '/admin/approvals?status=pending')).json.data;
  assert.ok(approvals.some((a) => a.approval_id === pending.json.approval_id), 'the pending approval survived');
  await waitFor(serverReady, { timeoutMs: 20000, what: 'the MCP server after the restart' });
  assert.equal((await api(gw, 'POST', `/admin/approvals/${pending.json.approval_id}/approve`, { body: {} })).status, 200);
  await waitFor(async () => (await api(gw, 'GET', `/v1/mcp/calls/${pending.json.approval_id}`, { key: keys[0].key })).json.status === 'completed',
    { timeoutMs: 10000, what: 'the approved call to run after the restart' });

  // Usage: what docs/operations.md promises — a kill loses at most the records of the last
  // interval or two. Every request that finished more than three flush intervals (two,
  // and one for the flush's own write) before the kill has its record.
  const rows = await sqliteQuery(gw.dbPath, 'SELECT request_id FROM usage_records');
  const recorded = new Set(rows.map((r) => r.request_id));
  const old = finished.filter((f) => f.at < killedAt - 3 * FLUSH_MS);
  const missingOld = old.filter((f) => !recorded.has(f.id));
  assert.equal(missingOld.length, 0,
    `${missingOld.length} of ${old.length} records older than ${3 * FLUSH_MS} ms lost (${missingOld.map((f) => killedAt - f.at).join(', ')} ms before the kill)`);
  await gw.stop('SIGTERM', 5000);
});
