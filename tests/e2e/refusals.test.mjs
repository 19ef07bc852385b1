// Every refusal is on the record: a request refused by auth, limits, validation or policy
// leaves one usage record with its status and reason code (no tokens), so "who was
// throttled, when" is answerable from the database and /admin/usage.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { api, cleanupAll, createKey, renderConfig, sqliteQuery, startGateway, startMock, waitFor } from './harness.mjs';

let gw;
let key;

before(async () => {
  const mock = await startMock();
  gw = await startGateway({
    config: renderConfig({
      providers: [{ name: 'mock', base_url: `${mock.url}/v1` }],
      models: [{ name: 'gpt-demo', deployments: [{ provider: 'mock', model: 'mock-model' }] },
        { name: 'other-model', deployments: [{ provider: 'mock', model: 'mock-model' }] }],
    }),
  });
  key = await createKey(gw, { name: 'throttled', rpm: 1, models: ['gpt-demo'] });
});
after(cleanupAll);

const chat = (k, body = {}) => api(gw, 'POST', '/v1/chat/completions', {
  key: k, body: { model: 'gpt-demo', messages: [{ role: 'user', content: 'hi' }], ...body },
});
const recordOf = async (id) => {
  let rows;
  await waitFor(async () => {
    rows = await sqliteQuery(gw.dbPath, `SELECT key_id, route, model, status, error_code, prompt_tokens, completion_tokens FROM usage_records WHERE request_id = '${id}'`);
    return rows.length > 0;
  }, { timeoutMs: 3000, what: `the usage record of ${id}` });
  return rows;
};

test('auth, policy, validation and limit refusals each leave one record with status and reason', async () => {
  const cases = [
    [await chat(null), 401, 'invalid_api_key', null],
    [await chat('sk-lw-not-a-real-key'), 401, 'invalid_api_key', null],
    [await chat(key.key, { model: 'other-model' }), 403, 'model_not_allowed', key.id],
    [await chat(key.key, { temperature: 9 }), 400, 'bad_request', key.id],
    [await chat(key.key), 200, null, key.id],
    [await chat(key.key), 429, 'rate_limit_exceeded', key.id],
  ];
  for (const [r, status, code, keyId] of cases) {
    assert.equal(r.status, status, r.text);
    const rows = await recordOf(r.headers.get('x-request-id'));
    assert.equal(rows.length, 1, `one record for a ${status}, not ${rows.length}`);
    const [row] = rows;
    assert.equal(row.status, status);
    assert.equal(row.route, 'chat');
    assert.equal(row.error_code, code, JSON.stringify(row));
    assert.equal(row.key_id, keyId);
    if (status !== 200) assert.equal(row.prompt_tokens + row.completion_tokens, 0);
  }
});

test('/admin/usage answers who was refused: by status class, code, and reason', async () => {
  const byStatus = await api(gw, 'GET', '/admin/usage?group_by=status');
  assert.equal(byStatus.status, 200, byStatus.text);
  const counts = Object.fromEntries(byStatus.json.data.map((d) => [d.status, d.requests]));
  assert.ok(counts['429'] >= 1 && counts['401'] >= 2 && counts['403'] >= 1 && counts['400'] >= 1, JSON.stringify(counts));
  const throttled = await api(gw, 'GET', '/admin/usage?group_by=key&status=429');
  assert.deepEqual(throttled.json.data.map((d) => d.key), [key.id]);
  const refused = await api(gw, 'GET', '/admin/usage?group_by=error_code&status=4xx');
  const codes = refused.json.data.map((d) => d.error_code);
  for (const c of ['invalid_api_key', 'model_not_allowed', 'bad_request', 'rate_limit_exceeded']) assert.ok(codes.includes(c), codes.join());
  const one = await api(gw, 'GET', '/admin/usage?group_by=model&error_code=model_not_allowed');
  assert.deepEqual(one.json.data.map((d) => [d.model, d.requests]), [['other-model', 1]]);
  assert.equal((await api(gw, 'GET', '/admin/usage?status=abc')).json.error.param, 'status');
});
