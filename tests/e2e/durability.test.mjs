// Crash durability: lowart is killed with SIGKILL in the middle of a load, then
// restarted on the same database. The database opens cleanly (integrity_check ok),
// nothing committed is lost (keys, teams, MCP policies), and usage loss is bounded by
// the write-behind interval: every request that finished more than a few flush
// intervals before the kill has its usage record.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { api, cleanupAll, createKey, renderConfig, run, sleep, startGateway, startMock, sqliteQuery, tempDir } from './harness.mjs';

let mock;
let dir;
const FLUSH_MS = 25;

before(async () => {
  mock = await startMock();
  dir = await tempDir();
});

after(cleanupAll);

const config = () => renderConfig({
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
  const killedAt = Date.now();
  gw.proc.kill('SIGKILL');
  stop = true;
  await Promise.all(workers);
  await gw.stop(null, 5000);
  assert.ok(finished.length > 100, `only ${finished.length} requests finished before the kill`);

  // The database reopens cleanly.
  const check = await run('sqlite3', [gw.dbPath, 'PRAGMA integrity_check;']);
  assert.equal(check.stdout.trim(), 'ok', check.stdout + check.stderr);
  gw = await startGateway({ config: config(), dir, masterKey: gw.masterKey });

  // Committed state is all there: keys work, the team and the policy exist.
  for (const k of keys) {
    const r = await api(gw, 'GET', '/v1/me', { key: k.key });
    assert.equal(r.status, 200, `key ${k.id} lost`);
  }
  assert.ok((await api(gw, 'GET', '/admin/teams')).json.data.some((t) => t.name === 'durable-team'));
  assert.ok((await api(gw, 'GET', '/admin/mcp/policies')).json.data.some((p) => p.tool === 'srv__danger'));

  // Usage: every request that finished well before the kill (10 flush intervals, to
  // leave room for a flush in progress) has its record; at most the tail is missing.
  const rows = await sqliteQuery(gw.dbPath, 'SELECT request_id FROM usage_records');
  const recorded = new Set(rows.map((r) => r.request_id));
  const old = finished.filter((f) => f.at < killedAt - 10 * FLUSH_MS);
  const missingOld = old.filter((f) => !recorded.has(f.id));
  assert.equal(missingOld.length, 0, `${missingOld.length} of ${old.length} older records lost`);
  const lost = finished.filter((f) => !recorded.has(f.id)).length;
  assert.ok(lost <= finished.length - old.length, `lost ${lost}`);
  await gw.stop('SIGTERM', 5000);
});
