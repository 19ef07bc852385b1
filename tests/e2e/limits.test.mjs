// Limits and budgets: per key, per team and per model, checked before any upstream call,
// answered with 429, retry-after and x-ratelimit-* headers; costs from versioned prices.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  api, cleanupAll, createKey, mockReset, mockStats, sqliteQuery, startGateway, startMock, waitFor,
} from './harness.mjs';

let mock;
let gw;

before(async () => {
  mock = await startMock();
  gw = await startGateway({
    config: `
[[providers]]
name = "mock"
base_url = "${mock.url}/v1"
[[models]]
name = "gpt-demo"
[[models.deployments]]
provider = "mock"
model = "mock-model"
[[models]]
name = "tiered"
[[models.deployments]]
provider = "mock"
model = "mock-model"
[[models]]
name = "slow"
[[models.deployments]]
provider = "mock"
model = "mock-delay-300"
[[models]]
name = "capped"
rpm = 3
[[models.deployments]]
provider = "mock"
model = "mock-capped"
`,
  });
});

after(cleanupAll);

const chat = (key, model = 'gpt-demo', content = 'one two three') =>
  api(gw, 'POST', '/v1/chat/completions', { key, body: { model, messages: [{ role: 'user', content }] } });

test('an RPM limit of N lets exactly N requests through, with concurrent clients hammering', async () => {
  const k = await createKey(gw, { name: 'rpm-5', rpm: 5 });
  await mockReset(mock);
  const results = await Promise.all(Array.from({ length: 24 }, () => chat(k.key)));
  const ok = results.filter((r) => r.status === 200);
  const limited = results.filter((r) => r.status === 429);
  assert.equal(ok.length, 5, results.map((r) => r.status).join(','));
  assert.equal(limited.length, 19);
  assert.equal((await mockStats(mock)).requests, 5, 'refused requests never reach the upstream');
  const r = limited[0];
  assert.equal(r.json.error.type, 'rate_limit_error');
  assert.equal(r.json.error.code, 'rate_limit_exceeded');
  assert.ok(Number(r.headers.get('retry-after')) >= 1);
  assert.equal(r.headers.get('x-ratelimit-limit-requests'), '5');
  assert.equal(r.headers.get('x-ratelimit-remaining-requests'), '0');
  assert.match(r.headers.get('x-ratelimit-reset-requests'), /^[0-9.e+]+s$/);
  assert.equal(ok[0].headers.get('x-ratelimit-limit-requests'), '5');
});

test('a team limit is shared by all keys of the team', async () => {
  const team = await api(gw, 'POST', '/admin/teams', { body: { name: 'small-team', rpm: 4 } });
  assert.equal(team.status, 201, team.text);
  const a = await createKey(gw, { name: 'team-a', team: 'small-team' });
  const b = await createKey(gw, { name: 'team-b', team: 'small-team' });
  const statuses = [];
  for (let i = 0; i < 3; i++) statuses.push((await chat(a.key)).status, (await chat(b.key)).status);
  assert.deepEqual(statuses.filter((s) => s === 200).length, 4, statuses.join(','));
});

test('a model limit applies across keys', async () => {
  const a = await createKey(gw, { name: 'model-a' });
  const b = await createKey(gw, { name: 'model-b' });
  const statuses = [];
  for (let i = 0; i < 3; i++) statuses.push((await chat(a.key, 'capped')).status, (await chat(b.key, 'capped')).status);
  assert.equal(statuses.filter((s) => s === 200).length, 3, statuses.join(','));
});

// "one two three" with max_tokens 5: the mock reports 3 prompt + 5 completion tokens;
// lowart reserves body bytes / 4 + 5 before each request.
const stated = { model: 'gpt-demo', max_tokens: 5, messages: [{ role: 'user', content: 'one two three' }] };
const statedEstimate = Math.floor(JSON.stringify(stated).length / 4) + 5;
const chatStated = (key) => api(gw, 'POST', '/v1/chat/completions', { key, body: stated });

test('a token budget, once spent, refuses the next request with 429 before any upstream call', async () => {
  const budget = 40;
  const k = await createKey(gw, { name: 'budget', budget_tokens: budget, budget_period: 'day' });
  await mockReset(mock);
  const statuses = [];
  for (let i = 0; i < 6; i++) statuses.push((await chatStated(k.key)).status);
  // Request i is admitted while 8 * i used + its estimate fit the budget.
  const fit = Math.floor((budget - statedEstimate) / 8) + 1;
  assert.ok(fit >= 2 && fit < 6, `estimate ${statedEstimate}`);
  assert.deepEqual(statuses, [...Array(fit).fill(200), ...Array(6 - fit).fill(429)],
    `8 tokens each, ${statedEstimate} reserved: ${fit} fit a budget of ${budget}`);
  assert.equal((await mockStats(mock)).requests, fit);
  const refused = await chatStated(k.key);
  assert.match(refused.json.error.message, /budget_tokens/);
  assert.ok(Number(refused.headers.get('retry-after')) > 60, 'a budget resets with its period');
});

test('a cost budget uses the model price; usage records carry cost and price version', async () => {
  const price = await api(gw, 'PUT', '/admin/prices/gpt-demo', { body: { input_per_1m: 1000000, output_per_1m: 2000000 } });
  assert.equal(price.status, 201, price.text);
  // 3 prompt tokens at 1.0 + 5 completion tokens at 2.0 = 13.0 per request; each reserves
  // its estimate's cost, (body bytes / 4) at 1.0 + 5 at 2.0.
  const reserved = (statedEstimate - 5) * 1 + 5 * 2;
  const budget = 26 + reserved; // the third fits (26 spent), the fourth not (39 spent)
  const k = await createKey(gw, { name: 'spender', budget_cost: budget, budget_period: 'month' });
  const statuses = [];
  for (let i = 0; i < 4; i++) statuses.push((await chatStated(k.key)).status);
  assert.deepEqual(statuses, [200, 200, 200, 429], `13 each, ${reserved} reserved: three fit ${budget}`);
  await waitFor(async () => (await sqliteQuery(gw.dbPath, `SELECT COUNT(*) AS n FROM usage_records WHERE key_id = '${k.id}'`))[0]?.n >= 3,
    { timeoutMs: 3000, what: 'usage rows' });
  const rows = await sqliteQuery(gw.dbPath, `SELECT cost, price_version FROM usage_records WHERE key_id = '${k.id}' AND status = 200`);
  assert.equal(rows.length, 3);
  for (const row of rows) {
    assert.equal(Number(row.cost), 13);
    assert.equal(Number(row.price_version), 1);
  }
  const metrics = await (await fetch(`${gw.url}/metrics`)).text();
  assert.match(metrics, /gateway_cost_total\{model="gpt-demo"\} \d+/);
  assert.match(metrics, /gateway_ratelimited_total\{reason="budget_cost"\} [1-9]/);
});

test('max_parallel refuses the request beyond the limit while others are in flight', async () => {
  const k = await createKey(gw, { name: 'parallel', max_parallel: 2 });
  const slow = (i) => api(gw, 'POST', '/v1/chat/completions', {
    key: k.key,
    body: { model: 'slow', messages: [{ role: 'user', content: `slow ${i}` }] },
  });
  const results = await Promise.all([0, 1, 2, 3].map(slow));
  const statuses = results.map((r) => r.status).sort();
  assert.deepEqual(statuses, [200, 200, 429, 429], results.map((r) => r.text).join('\n'));
  assert.equal((await chat(k.key)).status, 200, 'the slots come back after the requests end');
});

test('volume tiers: once a team passes a tier threshold this month, the tier prices apply', async () => {
  const price = await api(gw, 'PUT', '/admin/prices/tiered', {
    body: {
      input_per_1m: 1000000, output_per_1m: 2000000,
      tiers: [{ above_tokens: 16, input_per_1m: 500000, output_per_1m: 500000, cached_input_per_1m: 0 }],
    },
  });
  assert.equal(price.status, 201, price.text);
  assert.equal(price.json.tiers.length, 1);
  const bad = await api(gw, 'PUT', '/admin/prices/tiered', { body: { tiers: [{ above_tokens: 5 }, { above_tokens: 2 }] } });
  assert.equal(bad.status, 400);
  assert.equal(bad.json.error.param, 'tiers[1].above_tokens');
  const team = await api(gw, 'POST', '/admin/teams', { body: { name: 'volume-team' } });
  const k = await createKey(gw, { name: 'volume', team: team.json.id });
  const ids = [];
  for (let i = 0; i < 3; i++) {
    const r = await chat(k.key, 'tiered');
    assert.equal(r.status, 200, r.text);
    ids.push(r.headers.get('x-request-id'));
  }
  let rows = [];
  await waitFor(async () => {
    rows = await sqliteQuery(gw.dbPath, `SELECT request_id, cost FROM usage_records WHERE key_id = '${k.id}' ORDER BY id`);
    return rows.length === 3;
  }, { timeoutMs: 3000, what: 'usage rows' });
  // 3 prompt + 5 completion tokens each: 13 at base prices, then (3 + 5) * 0.5 = 4 from 16 tokens on.
  assert.deepEqual(rows.map((r) => Number(r.cost)), [13, 13, 4]);
});
