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
  api, cleanupAll, createKey, metricValue, mockReset, mockStats, parseMetrics, pool, startGateway, startMock,
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
// The request deadline of model "held" (an upstream that never answers): reservations a
// killed replica held expire after it.
const HELD_DEADLINE_MS = 2000 * TIME_SCALE;
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
[[models]]
name = "priced"
[[models.deployments]]
provider = "mock"
model = "mock-model"
[[models]]
name = "held"
timeout_ms = ${HELD_DEADLINE_MS}
[[models.deployments]]
provider = "mock"
model = "mock-hang"
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

// The mock counts words: 23 prompt words and its answer, "mock reply: " + their echo,
// 25 words: 48 tokens a request, with max_tokens 25 stating the answer's size.
const prompt23 = Array.from({ length: 23 }, (_, i) => `w${i}`).join(' ');
const body48 = (model = 'gpt-demo') => ({ model, max_tokens: 25, messages: [{ role: 'user', content: prompt23 }] });
const chat48 = (gw, key, model) => api(gw, 'POST', '/v1/chat/completions', { key, body: body48(model) });

// 'hello fleet': 2 prompt and 4 completion tokens; max_tokens 4 states the answer's size.
const small = (gw, key) => api(gw, 'POST', '/v1/chat/completions',
  { key, body: { model: 'gpt-demo', max_tokens: 4, messages: [{ role: 'user', content: 'hello fleet' }] } });

/** The 200 records of a key in PostgreSQL, once there are `count` of them. */
async function billed(keyId, count) {
  await waitFor(async () => Number(await pg.psql(`SELECT COUNT(*) FROM usage_records WHERE key_id = '${keyId}' AND status = 200`)) === count,
    { timeoutMs: 5000 * TIME_SCALE, what: `${count} usage rows` });
  const [tokens, cost] = (await pg.psql(
    `SELECT COALESCE(SUM(prompt_tokens + completion_tokens), 0), COALESCE(SUM(cost), 0) FROM usage_records WHERE key_id = '${keyId}' AND status = 200`))
    .split('|').map(Number);
  return { tokens, cost };
}

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
    // Both replicas admitted part of the one allowance (counted apart: requests with an even
    // index went to A, odd to B), so the cap above held across the two, not within one.
    const fromA = results.filter((r, i) => r.status === 200 && i % 2 === 0).length;
    const fromB = results.filter((r, i) => r.status === 200 && i % 2 === 1).length;
    assert.ok(fromA >= 1 && fromB >= 1, `A admitted ${fromA}, B ${fromB}: one replica took the whole allowance`);
    const refusal = limited[0];
    assert.equal(refusal.json.error.code, 'rate_limit_exceeded', refusal.text);
    assert.equal(refusal.headers.get('x-ratelimit-limit-requests'), String(rpm));
    assert.ok(Number(refusal.headers.get('retry-after')) >= 1);
  });

  test('a token budget is one budget for the fleet: spend on one replica counts on the other', async () => {
    const budget = 100;
    const k = await createKey(a, { name: 'fleet-budget', budget_tokens: budget, budget_period: 'day' });
    budgetKey = k;
    await keyKnown(b, k.key);
    const statuses = [];
    let spent = 0;
    for (let i = 0; i < 40; i++) {
      const r = await small(i % 2 ? b : a, k.key);
      statuses.push(r.status);
      if (r.status === 429) {
        assert.match(r.json.error.message, /budget_tokens/, r.text);
        break;
      }
      if (r.status !== 200) continue;
      // The spend is booked in Redis when the answer is done: wait until it is, so the next
      // request (on the other replica) is decided on it.
      spent += r.json.usage.total_tokens;
      await waitFor(async () => Number(await redis.cli('HGET', `lowart:lim:key:${k.id}`, 'ut')) >= spent,
        { timeoutMs: 2000, intervalMs: 10, what: `${spent} tokens booked in Redis` });
    }
    const ok = statuses.filter((s) => s === 200).length;
    assert.equal(statuses.at(-1), 429, statuses.join(','));
    assert.ok(ok >= 4, `both replicas draw from one budget: ${statuses.join(',')}`);
    const { tokens } = await billed(k.id, ok);
    assert.ok(tokens <= budget, `billed ${tokens} of a budget of ${budget}`);
  });

  test('a token budget holds for the fleet under load: 60 requests, 8 in flight, both replicas', async () => {
    const budget = 1000;
    const k = await createKey(a, { name: 'fleet-budget-load', budget_tokens: budget, budget_period: 'day' });
    await keyKnown(b, k.key);
    await mockReset(mock);
    const results = await pool(60, 8, (i) => chat48(i % 2 ? b : a, k.key));
    const ok = results.filter((r) => r.status === 200);
    for (const r of results) {
      if (r.status === 200) assert.equal(r.json.usage.total_tokens, 48, r.text);
      else {
        assert.equal(r.status, 429, r.text);
        assert.match(r.json.error.message, /budget_tokens/, r.text);
      }
    }
    const { tokens } = await billed(k.id, ok.length);
    const estimate = Math.floor(JSON.stringify(body48()).length / 4) + 25; // what each request reserves
    console.log(`fleet token budget ${budget}: ${ok.length} admitted, ${tokens} tokens billed, estimate ${estimate}`);
    assert.ok(tokens <= budget + 48, `billed ${tokens} tokens of a budget of ${budget} (one request is 48)`);
    assert.ok(tokens >= budget - 8 * estimate, `the budget was used: ${tokens} of ${budget}`);
    assert.equal((await mockStats(mock)).requests, ok.length, 'upstream calls == admitted requests');
    assert.ok(results.some((r, i) => r.status === 200 && i % 2) && results.some((r, i) => r.status === 200 && !(i % 2)));
  });

  test('a cost budget with a fractional price holds for the fleet under load', async () => {
    const price = { input_per_1m: 0.15, output_per_1m: 0.6, per_request: 0.00001 };
    const set = await api(a, 'PUT', '/admin/prices/priced', { body: price });
    assert.equal(set.status, 201, set.text);
    const perRequest = (23 * price.input_per_1m + 25 * price.output_per_1m) / 1e6 + price.per_request;
    // Both replicas price the model before the run (the change reaches b through Redis).
    for (const gw of [a, b]) {
      await waitFor(async () => {
        const id = `probe-${randomBytes(6).toString('hex')}`;
        const r = await api(gw, 'POST', '/v1/chat/completions', { body: body48('priced'), headers: { 'x-request-id': id } });
        assert.equal(r.status, 200, r.text);
        let cost = 0;
        await waitFor(async () => {
          const row = await pg.psql(`SELECT cost FROM usage_records WHERE request_id = '${id}'`);
          cost = Number(row);
          return row !== '';
        }, { timeoutMs: 3000 * TIME_SCALE, what: 'the probe record' });
        return Math.abs(cost - perRequest) < 1e-12;
      }, { timeoutMs: 3000 * TIME_SCALE, intervalMs: 100, what: 'the price on both replicas' });
    }
    const budget = 0.0004; // about 21 requests
    const k = await createKey(a, { name: 'fleet-cost-load', budget_cost: budget, budget_period: 'month' });
    await keyKnown(b, k.key);
    await mockReset(mock);
    const results = await pool(60, 8, (i) => chat48(i % 2 ? b : a, k.key, 'priced'));
    const ok = results.filter((r) => r.status === 200);
    for (const r of results)
      if (r.status !== 200) {
        assert.equal(r.status, 429, r.text);
        assert.match(r.json.error.message, /budget_cost/, r.text);
      }
    const { cost } = await billed(k.id, ok.length);
    console.log(`fleet cost budget ${budget}: ${ok.length} admitted, ${cost} billed, ${perRequest} a request`);
    assert.ok(Math.abs(cost - ok.length * perRequest) < 1e-12, `${cost} is ${ok.length} requests at ${perRequest}`);
    assert.ok(cost <= budget + perRequest + 1e-12, `billed ${cost} of a budget of ${budget}`);
    assert.ok(ok.length >= 12, `the budget was used: ${ok.length} requests`);
    assert.equal((await mockStats(mock)).requests, ok.length, 'upstream calls == admitted requests');
  });

  test('reservations of a SIGKILLed replica expire after the request deadline, never leak', async () => {
    const k = await createKey(a, { name: 'fleet-held', budget_tokens: 300, budget_period: 'day' });
    const c = await startReplica('open', 'replica-held');
    await keyKnown(c, k.key);
    await mockReset(mock);
    // Four requests to an upstream that never answers, each reserving about 70 of 300.
    const held = { model: 'held', max_tokens: 50, messages: [{ role: 'user', content: 'wait for me' }] };
    const estimate = Math.floor(JSON.stringify(held).length / 4) + 50;
    assert.ok(4 * estimate <= 300 && 5 * estimate > 300, `estimate ${estimate}`);
    const pending = Array.from({ length: 4 }, () =>
      api(c, 'POST', '/v1/chat/completions', { key: k.key, body: held }).catch((e) => e));
    await waitFor(async () => (await mockStats(mock)).by_model?.['mock-hang'] === 4,
      { timeoutMs: 3000 * TIME_SCALE, what: 'four requests upstream' });
    const reservedAt = Date.now();
    const probe = () => api(a, 'POST', '/v1/chat/completions', { key: k.key, body: { ...held, model: 'gpt-demo' } });
    const full = await probe();
    assert.equal(full.status, 429, `the four reservations fill the budget on the other replica: ${full.text}`);
    assert.match(full.json.error.message, /budget_tokens/);
    await c.stop('SIGKILL');
    await Promise.all(pending);
    assert.equal((await probe()).status, 429, 'the dead replica\'s reservations still count');
    let admitted;
    await waitFor(async () => {
      admitted = await probe();
      return admitted.status === 200;
    }, { timeoutMs: HELD_DEADLINE_MS + 5000 * TIME_SCALE, intervalMs: 100, what: 'the held reservations to expire' });
    const took = Date.now() - reservedAt;
    assert.ok(took >= HELD_DEADLINE_MS - 500, `usable again after ${took} ms, not before the deadline (${HELD_DEADLINE_MS} ms)`);
    console.log(`reservations of a killed replica expired after ${took} ms (deadline ${HELD_DEADLINE_MS} ms)`);
    // The expired ones went with the admitted request's script call, its own with its settle.
    await waitFor(async () => Number(await redis.cli('ZCARD', `lowart:held:key:${k.id}`)) === 0,
      { timeoutMs: 1000 * TIME_SCALE, what: 'no reservation left in Redis' });
    const fields = await redis.cli('HMGET', `lowart:lim:key:${k.id}`, 'qt', 'qc');
    assert.deepEqual(fields.trim().split(/\s+/).map(Number), [0, 0], 'nothing counted as reserved');
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
    // Its own limits, not none: rpm 5 lets exactly 5 of 20 through this replica.
    const own = await createKey(a, { name: 'fleet-own-limits', rpm: 5 });
    await mockReset(mock);
    const burst = await Promise.all(Array.from({ length: 20 }, () => chat(a, own.key)));
    assert.equal(burst.filter((r) => r.status === 200).length, 5, burst.map((r) => r.status).join(','));
    assert.equal(burst.filter((r) => r.status === 429).length, 15);
    assert.equal((await mockStats(mock)).requests, 5, 'refused requests never reach the upstream');
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
    // The resync reloads from the database and seeds Redis: wait until what the budget key
    // spent (its usage in PostgreSQL) is counted in Redis again.
    const dbSpent = Number(await pg.psql(
      `SELECT COALESCE(SUM(prompt_tokens + completion_tokens), 0) FROM usage_records WHERE key_id = '${budgetKey.id}'`));
    assert.ok(dbSpent > 0, 'the budget key spent tokens before the restart');
    await waitFor(async () => Number(await redis.cli('HGET', `lowart:lim:key:${budgetKey.id}`, 'ut')) >= dbSpent,
      { timeoutMs: 3000, intervalMs: 20, what: `the ${dbSpent} spent tokens seeded in Redis again` });
    const spent = await small(b, budgetKey.key);
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
