// Scale-out: two lowart replicas on different ports share one PostgreSQL database and one
// Redis, both real servers on loopback (tests/e2e/services.mjs). Limits are fleet-wide,
// a breaker opened through one replica is open in the other, a key revoked through one is
// refused by the other within a second, usage from both lands in PostgreSQL with none
// lost (also across a PostgreSQL outage), and losing Redis follows the configured policy
// and recovers when Redis returns.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import {
  api, cleanupAll, createKey, metricValue, mockReset, mockStats, parseMetrics, sleep, startGateway, startMock,
  TIME_SCALE, waitFor,
} from './harness.mjs';
import { cleanupServices, startPostgres, startRedis } from './services.mjs';

let mock;
let redis;
let pg;
let a; // on_redis_down = open
let b; // on_redis_down = closed
let budgetKey; // spent in one test, still spent after Redis lost its counters in a later one

const masterKey = `sk-master-${randomBytes(16).toString('hex')}`;
const encryptionKey = randomBytes(32).toString('base64');

function fleetConfig(policy) {
  return `
[server]
listen = "127.0.0.1:3000"
[cluster]
on_redis_down = "${policy}"
timeout_ms = 300
[breaker]
window_s = 10
failure_rate = 0.5
min_requests = 3
open_ms = 60000
half_open_probes = 1
[[providers]]
name = "mock"
base_url = "${mock.url}/v1"
[[models]]
name = "gpt-demo"
[[models.deployments]]
provider = "mock"
model = "mock-model"
[[models]]
name = "guarded"
[[models.deployments]]
provider = "mock"
model = "mock-fail-500"
priority = 0
[[models.deployments]]
provider = "mock"
model = "mock-model-backup"
priority = 1
`;
}

async function startReplica(policy, id) {
  return startGateway({
    config: fleetConfig(policy),
    masterKey,
    env: {
      LOWART_DATABASE_URL: pg.url,
      LOWART_REDIS_URL: redis.url,
      LOWART_REPLICA_ID: id,
      LOWART_ENCRYPTION_KEY: encryptionKey,
    },
  });
}

const chat = (gw, key, model = 'gpt-demo') =>
  api(gw, 'POST', '/v1/chat/completions', { key, body: { model, messages: [{ role: 'user', content: 'hello fleet' }] } });

/** Waits until `gw` answers `key` with something other than 401 (the key reached it). */
async function keyKnown(gw, key) {
  await waitFor(async () => (await api(gw, 'GET', '/v1/models', { key })).status === 200,
    { timeoutMs: 3000 * TIME_SCALE, intervalMs: 20, what: 'the key to be known on the other replica' });
}

async function breakerState(gw, deployment) {
  const r = await api(gw, 'GET', '/admin/breakers');
  assert.equal(r.status, 200, r.text);
  return r.json.data.find((d) => d.deployment === deployment)?.state;
}

async function metric(gw, name, labels = {}) {
  const r = await api(gw, 'GET', '/metrics', { key: null });
  return metricValue(parseMetrics(r.text), name, labels);
}

async function usageRows(keyIds) {
  const list = keyIds.map((k) => `'${k}'`).join(',');
  return Number(await pg.psql(`SELECT COUNT(*) FROM usage_records WHERE key_id IN (${list})`));
}

before(async () => {
  [mock, redis, pg] = await Promise.all([startMock(), startRedis(), startPostgres({ settings: { synchronous_commit: 'on' } })]);
  a = await startReplica('open', 'replica-a');
  b = await startReplica('closed', 'replica-b');
});

after(async () => {
  await cleanupAll();
  await cleanupServices();
});

describe('two replicas, one Redis, one PostgreSQL', () => {
  test('both replicas migrated one PostgreSQL database and report ready', async () => {
    const tables = await pg.psql("SELECT COUNT(*) FROM information_schema.tables WHERE table_name IN ('virtual_keys','usage_records','jobs','a2a_tasks')");
    assert.equal(tables, '4');
    const versions = await pg.psql('SELECT COUNT(*), MAX(version) FROM schema_migrations');
    const [count, max] = versions.split('|').map(Number);
    assert.equal(count, max, 'every migration applied once, although two replicas started');
    for (const gw of [a, b]) {
      const r = await api(gw, 'GET', '/readyz', { key: null });
      assert.equal(r.status, 200, r.text);
      assert.equal(r.json.status, 'ready');
    }
  });

  test('a key made through one replica works on the other; one RPM limit holds for the fleet exactly', async () => {
    const rpm = 12;
    const k = await createKey(a, { name: 'fleet-rpm', rpm });
    await keyKnown(b, k.key);
    await mockReset(mock);
    const started = Date.now();
    const results = await Promise.all(Array.from({ length: 40 }, (_, i) => chat(i % 2 ? b : a, k.key)));
    const elapsed = (Date.now() - started) / 1000;
    const ok = results.filter((r) => r.status === 200);
    const limited = results.filter((r) => r.status === 429);
    // The bucket refills rpm/60 per second: what it may have added while the test ran.
    const refill = Math.floor(elapsed * rpm / 60);
    assert.ok(ok.length >= rpm && ok.length <= rpm + refill,
      `${ok.length} of 40 went through in ${elapsed} s (limit ${rpm}): ${results.map((r) => r.status).join(',')}`);
    assert.equal(ok.length + limited.length, 40);
    assert.equal((await mockStats(mock)).requests, ok.length, 'refused requests never reach the upstream');
    const fromA = results.filter((r, i) => r.status === 200 && i % 2 === 0).length;
    const fromB = ok.length - fromA;
    assert.ok(fromA + fromB === ok.length);
    const refusal = limited[0];
    assert.equal(refusal.json.error.code, 'rate_limit_exceeded', refusal.text);
    assert.equal(refusal.headers.get('x-ratelimit-limit-requests'), String(rpm));
    assert.ok(Number(refusal.headers.get('retry-after')) >= 1);
  });

  test('a token budget is one budget for the fleet: spend on one replica counts on the other', async () => {
    const first = await chat(a, undefined);
    const perRequest = first.json.usage.total_tokens;
    assert.ok(perRequest > 0, first.text);
    const budget = perRequest * 3 + 1; // four requests fit (the last one starts below the budget)
    const k = await createKey(a, { name: 'fleet-budget', budget_tokens: budget, budget_period: 'day' });
    budgetKey = k;
    await keyKnown(b, k.key);
    const statuses = [];
    for (let i = 0; i < 8; i++) {
      const r = await chat(i % 2 ? b : a, k.key);
      statuses.push(r.status);
      if (r.status === 429) {
        assert.match(r.json.error.message, /budget_tokens/, r.text);
        break;
      }
      await sleep(50); // the spend is booked in Redis when the answer is done
    }
    assert.deepEqual(statuses, [200, 200, 200, 200, 429], 'both replicas draw from one budget');
  });

  test('a breaker opened through one replica is open in the other', async () => {
    await mockReset(mock);
    const deployment = 'mock/mock-fail-500';
    assert.equal(await breakerState(b, deployment), 'closed');
    for (let i = 0; i < 3; i++) {
      const r = await chat(a, undefined, 'guarded');
      assert.equal(r.status, 200, r.text); // the backup answers
    }
    await waitFor(async () => (await breakerState(a, deployment)) === 'open',
      { timeoutMs: 2000 * TIME_SCALE, what: 'the breaker to open on replica a' });
    await waitFor(async () => (await breakerState(b, deployment)) === 'open',
      { timeoutMs: 1000 * TIME_SCALE, what: 'the breaker to be open on replica b' });
    const failedBefore = (await mockStats(mock)).by_model['mock-fail-500'];
    for (let i = 0; i < 5; i++) {
      const r = await chat(b, undefined, 'guarded');
      assert.equal(r.status, 200, r.text);
    }
    assert.equal((await mockStats(mock)).by_model['mock-fail-500'], failedBefore,
      'replica b sends nothing to the deployment whose breaker replica a opened');
    const line = await b.waitForLog((l) => l.msg === 'breaker transition' && l.deployment === deployment);
    assert.equal(line.reason, 'opened on another replica');
    // A replica that starts while the breaker is open learns it from Redis.
    const c = await startReplica('open', 'replica-c');
    await waitFor(async () => (await breakerState(c, deployment)) === 'open',
      { timeoutMs: 2000 * TIME_SCALE, what: 'the breaker to be open on a replica started later' });
    await c.stop();
  });

  test('a key revoked through one replica is refused by the other within one second', async () => {
    const k = await createKey(a, { name: 'fleet-revoke' });
    await keyKnown(b, k.key);
    assert.equal((await chat(b, k.key)).status, 200);
    const del = await api(a, 'DELETE', `/admin/keys/${k.id}`);
    assert.equal(del.status, 200, del.text);
    const revokedAt = Date.now();
    await waitFor(async () => (await api(b, 'GET', '/v1/models', { key: k.key })).status === 401,
      { timeoutMs: 1000 * TIME_SCALE, intervalMs: 10, what: 'replica b to refuse the revoked key' });
    const took = Date.now() - revokedAt;
    assert.ok(took < 1000 * TIME_SCALE, `took ${took} ms`);
    const r = await chat(b, k.key);
    assert.equal(r.status, 401, r.text);
    assert.ok(await metric(b, 'gateway_fleet_messages_total', { topic: 'keys' }) >= 1);
  });

  test('usage from both replicas lands in PostgreSQL, none lost, also across a PostgreSQL outage', async () => {
    const ka = await createKey(a, { name: 'usage-a' });
    const kb = await createKey(b, { name: 'usage-b' });
    await keyKnown(a, kb.key);
    await keyKnown(b, ka.key);
    const burst = async (n) => {
      const rs = await Promise.all(Array.from({ length: n }, (_, i) => chat(i % 2 ? b : a, i % 4 < 2 ? ka.key : kb.key)));
      for (const r of rs) assert.equal(r.status, 200, r.text);
    };
    await burst(60);
    await waitFor(async () => (await usageRows([ka.id, kb.id])) === 60,
      { timeoutMs: 5000 * TIME_SCALE, what: '60 usage rows in PostgreSQL' });

    // PostgreSQL goes away: requests are still served (keys are in memory), usage is
    // spooled on each replica, readiness says why, and every record arrives once it is back.
    await pg.kill();
    await burst(40);
    await waitFor(async () => {
      const r = await api(a, 'GET', '/readyz', { key: null });
      return r.status === 200 && r.json.status === 'degraded' && r.json.checks?.database?.status === 'down';
    }, { timeoutMs: 5000 * TIME_SCALE, what: '/readyz to report the database down' });
    const spooled = async () =>
      (await metric(a, 'gateway_usage_spooled_records')) + (await metric(b, 'gateway_usage_spooled_records'));
    await waitFor(async () => (await spooled()) === 40,
      { timeoutMs: 3000 * TIME_SCALE, what: 'every record of the outage to wait in the two spools' });
    const admin = await api(a, 'GET', '/admin/keys');
    assert.equal(admin.status, 503, admin.text);
    assert.match(admin.json.error.message, /database/);
    await pg.restart();
    await waitFor(async () => (await usageRows([ka.id, kb.id])) === 100,
      { timeoutMs: 15000 * TIME_SCALE, intervalMs: 200, what: '100 usage rows in PostgreSQL after the outage' });
    await waitFor(async () => (await api(a, 'GET', '/readyz', { key: null })).json?.status === 'ready',
      { timeoutMs: 10000 * TIME_SCALE, what: 'replica a to be ready again' });
    const dup = await pg.psql(`SELECT COUNT(*) FROM (SELECT request_id FROM usage_records WHERE key_id IN ('${ka.id}','${kb.id}') GROUP BY request_id HAVING COUNT(*) > 1) d`);
    assert.equal(dup, '0', 'no record written twice');
  });

  test('Redis killed mid-run: open keeps serving with per-replica limits, closed refuses; both recover', async () => {
    const k = await createKey(a, { name: 'fleet-redis', rpm: 1000 });
    await keyKnown(b, k.key);
    assert.equal((await chat(a, k.key)).status, 200);
    assert.equal((await chat(b, k.key)).status, 200);
    await redis.kill();
    // Replica a (open): limited requests still go through, checked against its own limits.
    await waitFor(async () => (await api(a, 'GET', '/readyz', { key: null })).json?.checks?.redis?.status === 'down',
      { timeoutMs: 5000 * TIME_SCALE, what: 'replica a to see redis down' });
    const ra = await api(a, 'GET', '/readyz', { key: null });
    assert.equal(ra.status, 200, ra.text);
    assert.equal(ra.json.status, 'degraded');
    assert.match(ra.json.checks.redis.effect, /per replica/);
    for (let i = 0; i < 3; i++) assert.equal((await chat(a, k.key)).status, 200);
    assert.equal(await metric(a, 'gateway_redis_up'), 0);
    // Replica b (closed): refuses limited requests with a clear error and is not ready.
    await waitFor(async () => (await api(b, 'GET', '/readyz', { key: null })).status === 503,
      { timeoutMs: 5000 * TIME_SCALE, what: 'replica b to report not ready' });
    const rb = await api(b, 'GET', '/readyz', { key: null });
    assert.equal(rb.json.status, 'not_ready');
    assert.ok(rb.json.checks.redis.error.length > 0, rb.text);
    const refused = await chat(b, k.key);
    assert.equal(refused.status, 503, refused.text);
    assert.equal(refused.json.error.code, 'limits_unavailable');
    // Changes still reach the other replica without Redis, through PostgreSQL.
    const gone = await createKey(a, { name: 'fleet-revoke-without-redis' });
    await keyKnown(b, gone.key);
    assert.equal((await api(a, 'DELETE', `/admin/keys/${gone.id}`)).status, 200);
    await waitFor(async () => (await api(b, 'GET', '/v1/models', { key: gone.key })).status === 401,
      { timeoutMs: 1000 * TIME_SCALE, intervalMs: 10, what: 'a revocation to reach b while redis is down' });
    // A key without limits never needs Redis: served either way.
    const free = await createKey(a, { name: 'fleet-free-' + Date.now() });
    assert.equal((await chat(a, free.key)).status, 200);
    assert.equal((await chat(b, k.key, 'gpt-demo')).status, 503);

    await redis.restart();
    await waitFor(async () => (await chat(b, k.key)).status === 200,
      { timeoutMs: 10000 * TIME_SCALE, intervalMs: 100, what: 'replica b to serve limited requests again' });
    await waitFor(async () => (await api(b, 'GET', '/readyz', { key: null })).json?.status === 'ready',
      { timeoutMs: 10000 * TIME_SCALE, what: 'replica b to be ready again' });
    await waitFor(async () => (await api(a, 'GET', '/readyz', { key: null })).json?.status === 'ready',
      { timeoutMs: 10000 * TIME_SCALE, what: 'replica a to be ready again' });
    assert.equal(await metric(a, 'gateway_redis_up'), 1);
    // Redis came back empty: the spent budget was seeded again from PostgreSQL's usage.
    // (Strict: a request let through would spend more, so the first one must be refused.)
    await a.waitForLog((l) => l.msg === 'redis connected' && l.connection === 'subscriber', 5000 * TIME_SCALE);
    await sleep(300 * TIME_SCALE); // the resync: reload from the database, seed Redis
    const spent = await chat(b, budgetKey.key);
    assert.equal(spent.status, 429, spent.text);
    assert.match(spent.json.error.message, /budget_tokens/);
    // After the reconnect the replicas share the limit again (a fresh key proves it).
    const k2 = await createKey(a, { name: 'fleet-after', rpm: 4 });
    await keyKnown(b, k2.key);
    const rs = await Promise.all(Array.from({ length: 12 }, (_, i) => chat(i % 2 ? b : a, k2.key)));
    assert.equal(rs.filter((r) => r.status === 200).length, 4, rs.map((r) => r.status).join(','));
  });
});

describe('two replicas on one PostgreSQL without Redis', () => {
  let p;
  let q;
  before(async () => {
    await pg.psql('CREATE DATABASE noredis');
    const url = pg.url.replace(/\/[^/]*$/, '/noredis');
    const start = (id) => startGateway({
      config: fleetConfig('open').replace(/\[cluster\][^[]*/, ''),
      masterKey,
      env: { LOWART_DATABASE_URL: url, LOWART_REPLICA_ID: id, LOWART_ENCRYPTION_KEY: encryptionKey },
    });
    p = await start('pg-only-1');
    q = await start('pg-only-2');
  });

  test('changes reach the other replica through LISTEN/NOTIFY: a revoked key within one second', async () => {
    const k = await createKey(p, { name: 'pg-only' });
    await keyKnown(q, k.key);
    const del = await api(p, 'DELETE', `/admin/keys/${k.id}`);
    assert.equal(del.status, 200, del.text);
    const revokedAt = Date.now();
    await waitFor(async () => (await api(q, 'GET', '/v1/models', { key: k.key })).status === 401,
      { timeoutMs: 1000 * TIME_SCALE, intervalMs: 10, what: 'the other replica to refuse the revoked key' });
    assert.ok(Date.now() - revokedAt < 1000 * TIME_SCALE);
    // A model made through one replica is served by the other.
    const m = await api(p, 'POST', '/admin/models', {
      body: { name: 'pg-only-model', deployments: [{ provider: 'mock', model: 'mock-model' }] },
    });
    assert.equal(m.status, 201, m.text);
    await waitFor(async () => (await chat(q, undefined, 'pg-only-model')).status === 200,
      { timeoutMs: 1000 * TIME_SCALE, what: 'the other replica to serve the new model' });
  });
});
