// Budgets that hold and money to the last digit, on one gateway: every request reserves
// an estimate (prompt bytes / 4 + max_tokens, or [limits] default_max_tokens when it
// states none) against its key's budgets and TPM before any upstream call, and settles to
// the real amount when it ends. Costs with realistic fractional prices on JSON answers,
// streams, translated requests, lowart's own counts, cache reads and writes, per-request
// prices, volume tiers and interrupted streams, each checked to 1e-12 against the
// documented formula:
//   cost = ((prompt - cached) * input_per_1m + cached * cached_input_per_1m
//           + completion * output_per_1m) / 1e6 + per_request
// with a tier's prices once the team's tokens for the model this month (before the
// request) reach its above_tokens.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import {
  api, cleanupAll, createKey, mockReset, mockStats, pool, sqliteQuery, sseData, startGateway, startMock, waitFor,
} from './harness.mjs';

const DEFAULT_MAX_TOKENS = 200;
let mock;
let gw;

const config = () => `
[limits]
default_max_tokens = ${DEFAULT_MAX_TOKENS}
[[providers]]
name = "mock"
base_url = "${mock.url}/v1"
[[providers]]
name = "an"
kind = "anthropic"
base_url = "${mock.url}/v1"
api_key = "sk-ant-upstream"
${['gpt-demo', 'priced', 'tiered'].map((name) => `
[[models]]
name = "${name}"
[[models.deployments]]
provider = "mock"
model = "mock-model"`).join('\n')}
[[models]]
name = "no-usage"
[[models.deployments]]
provider = "mock"
model = "mock-no-usage"
[[models]]
name = "slow-stream"
[[models.deployments]]
provider = "mock"
model = "mock-slow-150"
[[models]]
name = "via-anthropic"
[[models.deployments]]
provider = "an"
model = "claude-mock"
[[models]]
name = "claude-native"
[[models.deployments]]
provider = "an"
model = "claude-mock"
`;

before(async () => {
  mock = await startMock();
  gw = await startGateway({ config: config() });
});

after(cleanupAll);

// The mock counts words: 23 prompt words and its answer, "mock reply: " + their echo,
// 25 words: 48 tokens a request; max_tokens 25 states the answer's size.
const prompt23 = Array.from({ length: 23 }, (_, i) => `w${i}`).join(' ');
const body48 = (model = 'gpt-demo') => ({ model, max_tokens: 25, messages: [{ role: 'user', content: prompt23 }] });
const chat = (key, body, headers = {}) => api(gw, 'POST', '/v1/chat/completions', { key, body, headers });
const words = (s) => s.split(/\s+/).filter(Boolean).length;
const rid = () => `req-${randomBytes(8).toString('hex')}`;

async function record(requestId) {
  let rows = [];
  await waitFor(async () => {
    rows = await sqliteQuery(gw.dbPath, `SELECT prompt_tokens, completion_tokens, cached_tokens, status, cost, price_version
      FROM usage_records WHERE request_id = '${requestId}'`);
    return rows.length === 1;
  }, { timeoutMs: 3000, what: `the usage record of ${requestId}` });
  return Object.fromEntries(Object.entries(rows[0]).map(([k, v]) => [k, Number(v)]));
}

async function billed(keyId, count) {
  await waitFor(async () => (await sqliteQuery(gw.dbPath,
    `SELECT COUNT(*) AS n FROM usage_records WHERE key_id = '${keyId}' AND status = 200`))[0]?.n === count,
  { timeoutMs: 3000, what: `${count} usage rows` });
  const [row] = await sqliteQuery(gw.dbPath, `SELECT COALESCE(SUM(prompt_tokens + completion_tokens), 0) AS tokens,
    COALESCE(SUM(cost), 0) AS cost FROM usage_records WHERE key_id = '${keyId}' AND status = 200`);
  return { tokens: Number(row.tokens), cost: Number(row.cost) };
}

/** The documented formula, from a record's tokens and the price that applied. */
function priced(p, { prompt_tokens: prompt, completion_tokens: completion, cached_tokens: cached }) {
  const fresh = prompt > cached ? prompt - cached : 0;
  return (fresh * (p.input_per_1m ?? 0) + cached * (p.cached_input_per_1m ?? 0) + completion * (p.output_per_1m ?? 0)) / 1e6
    + (p.per_request ?? 0);
}

function assertCost(actual, expected, what) {
  assert.ok(Math.abs(actual - expected) <= 1e-12, `${what}: billed ${actual}, the formula says ${expected}`);
}

async function setPrice(model, p) {
  const r = await api(gw, 'PUT', `/admin/prices/${model}`, { body: p });
  assert.ok(r.status === 201 || r.status === 200, r.text); // made, or changed
  return r.json;
}

// --- budgets and TPM: reserved, then settled --------------------------------------------------

test('a token budget holds under load: 60 requests of 48 tokens, 8 in flight, budget 1000', async () => {
  const budget = 1000;
  const k = await createKey(gw, { name: 'budget-load', budget_tokens: budget, budget_period: 'day' });
  await mockReset(mock);
  const results = await pool(60, 8, () => chat(k.key, body48()));
  const ok = results.filter((r) => r.status === 200);
  for (const r of results)
    if (r.status !== 200) {
      assert.equal(r.status, 429, r.text);
      assert.match(r.json.error.message, /budget_tokens/);
    }
  const { tokens } = await billed(k.id, ok.length);
  const estimate = Math.floor(JSON.stringify(body48()).length / 4) + 25;
  console.log(`standalone token budget ${budget}: ${ok.length} admitted, ${tokens} tokens billed, estimate ${estimate}`);
  assert.ok(tokens <= budget, `billed ${tokens} of ${budget}: a reservation that does not fit is refused`);
  assert.ok(tokens >= budget - 8 * estimate, `the budget was used: ${tokens}`);
  assert.equal((await mockStats(mock)).requests, ok.length, 'upstream calls == admitted requests');
});

test('a cost budget with a fractional price holds under load', async () => {
  const p = await setPrice('priced', { input_per_1m: 0.15, output_per_1m: 0.6, per_request: 0.00001 });
  const perRequest = priced(p, { prompt_tokens: 23, completion_tokens: 25, cached_tokens: 0 });
  const budget = 0.0004;
  const k = await createKey(gw, { name: 'cost-load', budget_cost: budget, budget_period: 'month' });
  await mockReset(mock);
  const results = await pool(60, 8, () => chat(k.key, body48('priced')));
  const ok = results.filter((r) => r.status === 200);
  for (const r of results)
    if (r.status !== 200) {
      assert.equal(r.status, 429, r.text);
      assert.match(r.json.error.message, /budget_cost/);
    }
  const { cost } = await billed(k.id, ok.length);
  console.log(`standalone cost budget ${budget}: ${ok.length} admitted, ${cost} billed, ${perRequest} a request`);
  assertCost(cost, ok.length * perRequest, 'the sum');
  assert.ok(cost <= budget + 1e-12, `billed ${cost} of ${budget}`);
  assert.ok(ok.length >= 12, `the budget was used: ${ok.length}`);
  assert.equal((await mockStats(mock)).requests, ok.length, 'upstream calls == admitted requests');
});

test('a request without max_tokens reserves [limits] default_max_tokens', async () => {
  const k = await createKey(gw, { name: 'default-estimate', budget_tokens: DEFAULT_MAX_TOKENS, budget_period: 'day' });
  await mockReset(mock);
  const bare = await chat(k.key, { model: 'gpt-demo', messages: [{ role: 'user', content: 'one two three' }] });
  assert.equal(bare.status, 429, 'the prompt plus the default does not fit the budget');
  assert.match(bare.json.error.message, /budget_tokens/);
  const stated = await chat(k.key,
    { model: 'gpt-demo', max_tokens: 5, messages: [{ role: 'user', content: 'one two three' }] });
  assert.equal(stated.status, 200, stated.text);
  assert.equal((await mockStats(mock)).requests, 1);
});

test('TPM: a request whose max_tokens is above the limit is refused with no upstream call', async () => {
  const k = await createKey(gw, { name: 'tpm-100', tpm: 100 });
  await mockReset(mock);
  const big = await chat(k.key, { ...body48(), max_tokens: 150 });
  assert.equal(big.status, 429, big.text);
  assert.equal(big.json.error.code, 'rate_limit_exceeded');
  assert.match(big.json.error.message, /tpm/);
  assert.match(big.json.error.message, /max_tokens/, 'the message says what to change');
  assert.equal((await mockStats(mock)).requests, 0, 'no upstream call');
  assert.equal(big.headers.get('x-ratelimit-limit-tokens'), '100');
  // One that fits is served, and settles to what it used: the next one fits too.
  const fits = await chat(k.key, body48());
  assert.equal(fits.status, 200, fits.text);
  const second = await chat(k.key, { ...body48(), max_tokens: 5 });
  assert.equal(second.status, 200, `48 used of 100, the estimate of the first given back: ${second.text}`);
  assert.equal((await mockStats(mock)).requests, 2);
});

// --- money to the last digit ------------------------------------------------------------------

test('costs to 1e-12: JSON answers and streams with input, output and per-request prices', async () => {
  const p = await setPrice('priced',
    { input_per_1m: 2.5, output_per_1m: 10, cached_input_per_1m: 1.25, per_request: 0.0004 });
  const content = 'price this sentence of seven words please';
  const messages = [{ role: 'user', content }];
  const cases = [
    { what: 'JSON', body: { model: 'priced', messages } },
    { what: 'stream with the usage chunk', body: { model: 'priced', stream: true, stream_options: { include_usage: true }, messages } },
    { what: 'stream without asking for usage', body: { model: 'priced', stream: true, messages } },
  ];
  for (const c of cases) {
    const id = rid();
    const r = await chat(undefined, c.body, { 'x-request-id': id });
    assert.equal(r.status, 200, r.text);
    const rec = await record(id);
    assert.equal(rec.prompt_tokens, words(content), c.what);
    assert.equal(rec.completion_tokens, words(`mock reply: ${content}`), c.what);
    assert.equal(rec.price_version, p.version);
    assertCost(rec.cost, priced(p, rec), c.what);
    assertCost(rec.cost, (7 * 2.5 + 9 * 10) / 1e6 + 0.0004, `${c.what} (by hand)`);
  }
});

test('costs to 1e-12: cache reads and writes, native and translated (OpenAI client, Anthropic upstream)', async () => {
  await mockReset(mock);
  const pn = await setPrice('claude-native',
    { input_per_1m: 3, output_per_1m: 15, cached_input_per_1m: 0.3, per_request: 0.00002 });
  const pt = await setPrice('via-anthropic', { input_per_1m: 0.8, output_per_1m: 4, cached_input_per_1m: 0.08 });
  const system = `A long cached preamble ${randomBytes(4).toString('hex')} of eight words here`;
  const native = (text, stream = false) => ({
    model: 'claude-native', max_tokens: 64, stream,
    system: [{ type: 'text', text: system, cache_control: { type: 'ephemeral' } }],
    messages: [{ role: 'user', content: text }],
  });
  // Sends `body` to `path`; its record has the tokens the mock counts for `question`
  // (`cached`: the system text was read from the cache) and the formula's cost.
  const check = async (path, body, p, question, cached, what) => {
    const id = rid();
    const r = await api(gw, 'POST', path, { body, headers: { 'x-request-id': id } });
    assert.equal(r.status, 200, r.text);
    const rec = await record(id);
    assert.equal(rec.prompt_tokens, words(system) + words(question), what);
    assert.equal(rec.cached_tokens, cached ? words(system) : 0, what);
    assert.equal(rec.completion_tokens, words(`mock reply: ${question}`), what);
    assertCost(rec.cost, priced(p, rec), what);
    return r;
  };
  // The first sight of the system text writes the cache: billed as input (cache writes
  // have no price of their own), the next ones read it at cached_input_per_1m.
  await check('/v1/messages', native('first question'), pn, 'first question', false, 'cache write');
  await check('/v1/messages', native('second question here', true), pn, 'second question here', true,
    'cache read, streamed');
  const translated = (text, stream) => ({
    model: 'via-anthropic', stream, ...(stream ? { stream_options: { include_usage: true } } : {}),
    messages: [{ role: 'system', content: [{ type: 'text', text: system, cache_control: { type: 'ephemeral' } }] },
      { role: 'user', content: text }],
  });
  for (const stream of [false, true]) {
    const r = await check('/v1/chat/completions', translated('third one', stream), pt, 'third one', true,
      `translated${stream ? ', streamed' : ''}`);
    const usage = stream ? JSON.parse(sseData(r.text).filter((e) => e !== '[DONE]').at(-1)).usage : r.json.usage;
    assert.equal(usage.prompt_tokens_details.cached_tokens, words(system));
  }
});

test('costs to 1e-12: lowart\'s own counts (no upstream usage), JSON and stream', async () => {
  const p = await setPrice('no-usage', { input_per_1m: 0.4, output_per_1m: 1.6, per_request: 0.000003 });
  const messages = [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'Wie spät ist es in 東京? 🕐' }];
  for (const stream of [false, true]) {
    const id = rid();
    const r = await chat(undefined, { model: 'no-usage', stream, messages }, { 'x-request-id': id });
    assert.equal(r.status, 200, r.text);
    const rec = await record(id);
    assert.ok(rec.prompt_tokens > 0 && rec.completion_tokens > 0, JSON.stringify(rec));
    assertCost(rec.cost, priced(p, rec), `own count${stream ? ', streamed' : ''}`);
  }
});

test('costs to 1e-12: an interrupted stream is billed for what was relayed', async () => {
  const p = await setPrice('slow-stream', { input_per_1m: 1.1, output_per_1m: 4.4, per_request: 0.0001 });
  const id = rid();
  const ac = new AbortController();
  const res = await fetch(`${gw.url}/v1/chat/completions`, {
    method: 'POST', signal: ac.signal,
    headers: { authorization: `Bearer ${gw.masterKey}`, 'content-type': 'application/json', 'x-request-id': id },
    body: JSON.stringify({ model: 'slow-stream', stream: true, messages: [{ role: 'user', content: prompt23 }] }),
  });
  assert.equal(res.status, 200);
  const reader = res.body.getReader();
  let got = '';
  while (!got.includes('" w1"')) got += new TextDecoder().decode((await reader.read()).value);
  ac.abort();
  const rec = await record(id);
  assert.equal(rec.status, 499, JSON.stringify(rec));
  assert.ok(rec.completion_tokens > 0 && rec.completion_tokens < 25, `billed for what was relayed: ${JSON.stringify(rec)}`);
  assertCost(rec.cost, priced(p, rec), 'interrupted stream');
});

test('costs to 1e-12: volume tiers apply once the team passed the threshold this month', async () => {
  const tier = { above_tokens: 100, input_per_1m: 1.9, output_per_1m: 7.6, cached_input_per_1m: 0.95 };
  const p = await setPrice('tiered', { input_per_1m: 2.5, output_per_1m: 10, per_request: 0.0007, tiers: [tier] });
  const team = await api(gw, 'POST', '/admin/teams', { body: { name: `tier-team-${randomBytes(3).toString('hex')}` } });
  assert.equal(team.status, 201, team.text);
  const k = await createKey(gw, { name: 'tiered', team: team.json.name });
  let volume = 0;
  let total = 0;
  for (let i = 0; i < 4; i++) {
    const id = rid();
    const r = await chat(k.key, body48('tiered'), { 'x-request-id': id });
    assert.equal(r.status, 200, r.text);
    const rec = await record(id);
    const applied = volume >= tier.above_tokens ? { ...tier, per_request: p.per_request } : p;
    assertCost(rec.cost, priced(applied, rec), `request ${i + 1} at volume ${volume}`);
    volume += rec.prompt_tokens + rec.completion_tokens;
    total += priced(applied, rec);
  }
  const usage = await api(gw, 'GET', '/admin/usage?group_by=key');
  const row = usage.json.data.find((d) => d.key === k.id);
  assert.ok(row, usage.text);
  assertCost(row.cost, total, '/admin/usage');
});

test('a spent budget stays spent when the gateway restarts', async () => {
  const k = await createKey(gw, { name: 'restart-budget', budget_tokens: 150, budget_period: 'day' });
  const statuses = [];
  for (let i = 0; i < 6; i++) statuses.push((await chat(k.key, body48())).status);
  const ok = statuses.filter((s) => s === 200).length;
  assert.ok(ok >= 1 && statuses.at(-1) === 429, statuses.join(','));
  await billed(k.id, ok); // in the database before the restart
  const { dir, masterKey } = gw;
  await gw.stop();
  gw = await startGateway({ config: config(), dir, masterKey });
  await mockReset(mock);
  const after = await chat(k.key, body48());
  assert.equal(after.status, 429, after.text);
  assert.match(after.json.error.message, /budget_tokens/);
  assert.equal((await mockStats(mock)).requests, 0);
});
