// The request log (GET /admin/logs, /admin/logs/{request_id}) end to end, on SQLite and
// (LOWART_E2E_POSTGRES=1) PostgreSQL: one row per request, refused ones included, with the
// deployments tried in order (a failing primary, then the fallback; a breaker skip), the
// final status and error code, latency and time to first byte, tokens, the key's team and
// user, the client's address and User-Agent; filters, cursor paging, CSV and JSON-lines
// exports, refusals in the admin API's JSON; retention ([storage] usage_ttl_s); and the
// usage report by two dimensions and by hour and minute.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { api, cleanupAll, createKey, rawRequest, sleep, startGateway, startMock, waitFor } from './harness.mjs';

let mock;
let gw;
let team;
let user;
let key; // of `team` and `user`
let other; // a key of no team

const provider = (name) => `
[[providers]]
name = "${name}"
base_url = "${mock.url}/v1"
`;
const chain = (name, deployments, extra = '') => `
[[models]]
name = "${name}"
${extra}
${deployments.map(([p, m, priority]) => `[[models.deployments]]
provider = "${p}"
model = "${m}"
priority = ${priority}`).join('\n')}
`;

before(async () => {
  mock = await startMock();
  gw = await startGateway({
    config: `
${provider('mock')}
${provider('fb')}
${provider('br')}
${chain('gpt-log', [['mock', 'mock-model', 0]])}
${chain('slow-log', [['mock', 'mock-slow-150', 0]])}
${chain('fallback-log', [['fb', 'mock-fail-500', 0], ['fb', 'mock-model', 1]])}
${chain('breaker-log', [['br', 'mock-fail-500', 0], ['br', 'mock-model', 1]])}
${chain('fail-log', [['mock', 'mock-fail-500', 0]])}
${chain('captured-log', [['mock', 'mock-model', 0]], 'log_bodies = true')}
`,
  });
  team = (await api(gw, 'POST', '/admin/teams', { body: { name: 'loggers' } })).json;
  user = (await api(gw, 'POST', '/admin/users', { body: { name: 'ada@example.com', team: team.id } })).json;
  key = await createKey(gw, { name: 'log-key', team: team.id, user_id: user.id, rpm: 1000 });
  other = await createKey(gw, { name: 'other-key' });
});

after(cleanupAll);

const chat = (k, model = 'gpt-log', extra = {}, headers = {}) => api(gw, 'POST', '/v1/chat/completions', {
  key: k, headers: { 'user-agent': 'log-test/1.0', ...headers },
  body: { model, messages: [{ role: 'user', content: 'hello log' }], ...extra },
});
const logs = (query = '') => api(gw, 'GET', `/admin/logs${query ? `?${query}` : ''}`);

/** The log row of a request id, once the write-behind flush has written it. */
async function row(requestId) {
  let r;
  await waitFor(async () => {
    r = await api(gw, 'GET', `/admin/logs/${requestId}`);
    return r.status === 200;
  }, { timeoutMs: 3000, what: `the log row of ${requestId}` });
  return r.json;
}

describe('one row per request', () => {
  test('an answered request: who, what, where, how long, tokens, the client', async () => {
    const res = await chat(key.key);
    assert.equal(res.status, 200, res.text);
    const id = res.headers.get('x-request-id');
    const r = await row(id);
    assert.equal(r.request_id, id);
    assert.equal(r.key_id, key.id);
    assert.equal(r.team_id, team.id);
    assert.equal(r.user_id, user.id);
    assert.equal(r.route, 'chat');
    assert.equal(r.model, 'gpt-log');
    assert.equal(r.deployment, 'mock/mock-model');
    assert.equal(r.status, 200);
    assert.equal(r.error_code, null);
    assert.equal(r.stream, false);
    assert.equal(r.prompt_tokens, res.json.usage.prompt_tokens);
    assert.equal(r.completion_tokens, res.json.usage.completion_tokens);
    assert.equal(r.client_ip, '127.0.0.1');
    assert.equal(r.user_agent, 'log-test/1.0');
    assert.ok(r.latency_ms > 0 && r.ttfb_ms > 0 && r.ttfb_ms <= r.latency_ms + 0.001, JSON.stringify(r));
    assert.deepEqual(r.attempts.map((a) => [a.deployment, a.outcome, a.status]), [['mock/mock-model', '200', 200]]);
    assert.ok(Math.abs(r.ts_ms - Date.now()) < 10000);
  });

  test('a fallback from a failing primary: each attempt in order with its outcome and latency', async () => {
    const res = await chat(key.key, 'fallback-log');
    assert.equal(res.status, 200, res.text);
    const r = await row(res.headers.get('x-request-id'));
    assert.equal(r.deployment, 'fb/mock-model');
    assert.deepEqual(r.attempts.map((a) => [a.deployment, a.outcome, a.status]),
      [['fb/mock-fail-500', '500', 500], ['fb/mock-model', '200', 200]]);
    for (const a of r.attempts) assert.ok(a.ms >= 0 && a.ms <= r.latency_ms, JSON.stringify(a));
  });

  test('a breaker that opened is a skip in the trace', async () => {
    // Default breaker: five outcomes in the window, half of them failures, open it.
    let last;
    for (let i = 0; i < 8; i++) last = await chat(key.key, 'breaker-log');
    assert.equal(last.status, 200, last.text);
    const r = await row(last.headers.get('x-request-id'));
    assert.deepEqual(r.attempts.map((a) => [a.deployment, a.outcome]),
      [['br/mock-fail-500', 'breaker_open'], ['br/mock-model', '200']]);
    assert.equal(r.attempts[0].status, undefined, 'a skip has no status');
  });

  test('a stream: time to first byte before the end', async () => {
    const res = await rawRequest({
      port: gw.port, method: 'POST', path: '/v1/chat/completions',
      headers: { authorization: `Bearer ${key.key}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'slow-log', stream: true, messages: [{ role: 'user', content: 'one two three four' }] }),
    });
    assert.equal(res.status, 200);
    const r = await row(res.headers['x-request-id']);
    assert.equal(r.stream, true);
    assert.ok(r.ttfb_ms < r.latency_ms - 100, `first byte ${r.ttfb_ms} ms, end ${r.latency_ms} ms`);
  });

  test('refused requests are logged with their code: a wrong key, a model not allowed, an upstream 5xx', async () => {
    const bad = await chat('sk-lw-not-a-key');
    assert.equal(bad.status, 401);
    const badRow = await row(bad.headers.get('x-request-id'));
    assert.equal(badRow.status, 401);
    assert.equal(badRow.error_code, 'invalid_api_key');
    assert.equal(badRow.key_id, null);
    assert.equal(badRow.user_agent, 'log-test/1.0');
    const limited = await createKey(gw, { name: 'only-slow', models: ['slow-log'], team: team.id });
    const denied = await chat(limited.key);
    assert.equal(denied.status, 403);
    const deniedRow = await row(denied.headers.get('x-request-id'));
    assert.equal(deniedRow.error_code, 'model_not_allowed');
    assert.equal(deniedRow.team_id, team.id);
    const failed = await chat(other.key, 'fail-log');
    assert.equal(failed.status, 500);
    const failedRow = await row(failed.headers.get('x-request-id'));
    assert.equal(failedRow.error_code, 'upstream_error');
    assert.ok(failedRow.attempts.length >= 1 && failedRow.attempts.every((a) => a.outcome === '500' && a.status === 500),
      JSON.stringify(failedRow.attempts));
  });

  test('X-Forwarded-For from a peer that is no trusted proxy is ignored', async () => {
    const res = await chat(other.key, 'gpt-log', {}, { 'x-forwarded-for': '203.0.113.9' });
    const r = await row(res.headers.get('x-request-id'));
    assert.equal(r.client_ip, '127.0.0.1', 'no trusted proxy configured: the peer');
  });
});

describe('GET /admin/logs', () => {
  let ids;
  before(async () => {
    ids = [];
    for (let i = 0; i < 12; i++) ids.push((await chat(other.key)).headers.get('x-request-id'));
    await row(ids.at(-1));
  });

  test('newest first, paged by cursor without gaps or repeats', async () => {
    const seen = [];
    let cursor;
    let pages = 0;
    do {
      const page = await logs(`key=${other.id}&limit=5${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`);
      assert.equal(page.status, 200, page.text);
      assert.ok(page.json.data.length <= 5);
      seen.push(...page.json.data);
      cursor = page.json.next_cursor;
      assert.equal(page.json.has_more, cursor !== null);
      pages++;
    } while (cursor && pages < 20);
    const mine = seen.map((r) => r.request_id);
    assert.equal(new Set(mine).size, mine.length, 'no row twice');
    for (const id of ids) assert.ok(mine.includes(id), `${id} is on a page`);
    for (let i = 1; i < seen.length; i++) assert.ok(seen[i - 1].ts_ms >= seen[i].ts_ms, 'newest first');
    assert.ok(pages >= 3);
  });

  test('filters: key, team, user, model, deployment, route, status class, error code, latency, request id, time', async () => {
    const all = (await logs('limit=1000')).json.data;
    const check = async (query, pred) => {
      const got = (await logs(`${query}&limit=1000`)).json.data;
      const want = all.filter(pred);
      assert.deepEqual(got.map((r) => r.request_id).sort(), want.map((r) => r.request_id).sort(), query);
      return got;
    };
    assert.ok((await check(`team=${team.id}`, (r) => r.team_id === team.id)).length > 0);
    await check(`user=${user.id}`, (r) => r.user_id === user.id);
    await check('model=fallback-log', (r) => r.model === 'fallback-log');
    await check('deployment=fb%2Fmock-model', (r) => r.deployment === 'fb/mock-model');
    await check('route=chat', (r) => r.route === 'chat');
    assert.ok((await check('status=4xx', (r) => r.status >= 400 && r.status < 500)).length >= 2);
    await check('status=401', (r) => r.status === 401);
    await check('error_code=model_not_allowed', (r) => r.error_code === 'model_not_allowed');
    assert.ok((await check('min_latency_ms=100', (r) => r.latency_ms >= 100)).length >= 1);
    assert.equal((await check(`request_id=${ids[3]}`, (r) => r.request_id === ids[3])).length, 1);
    const t = Math.floor(Date.now() / 1000);
    await check(`from=${t + 60}`, () => false);
    await check(`to=${t - 3600}`, () => false);
  });

  test('CSV and JSON lines exports hold the same rows', async () => {
    const json = (await logs(`key=${other.id}&limit=1000`)).json.data;
    const csv = await logs(`key=${other.id}&format=csv`);
    assert.equal(csv.status, 200);
    assert.match(csv.headers.get('content-type'), /^text\/csv/);
    const lines = csv.text.trim().split('\n');
    assert.equal(lines[0].split(',')[0], 'ts_ms');
    assert.equal(lines.length - 1, json.length);
    assert.ok(lines.slice(1).every((l) => l.includes(other.id)));
    const jsonl = await logs(`key=${other.id}&format=jsonl`);
    assert.match(jsonl.headers.get('content-type'), /ndjson/);
    const parsed = jsonl.text.trim().split('\n').map((l) => JSON.parse(l));
    assert.deepEqual(parsed.map((r) => r.request_id), json.map((r) => r.request_id));
  });

  test("bad parameters are 400 in the admin API's JSON naming the parameter; an unknown id is 404", async () => {
    for (const [query, param] of [
      ['status=6xx', 'status'], ['limit=0', 'limit'], ['limit=1001', 'limit'], ['format=xml', 'format'],
      ['cursor=nonsense', 'cursor'], ['from=yesterday', 'from'], ['min_latency_ms=-1', 'min_latency_ms'],
    ]) {
      const r = await logs(query);
      assert.equal(r.status, 400, query);
      assert.equal(r.json.error.param, param, query);
    }
    const missing = await api(gw, 'GET', '/admin/logs/no-such-request');
    assert.equal(missing.status, 404);
    assert.equal(missing.json.error.type, 'not_found_error');
  });

  test('viewers read the log, a plain key does not', async () => {
    const viewer = await createKey(gw, { name: 'log-viewer', role: 'viewer' });
    assert.equal((await api(gw, 'GET', '/admin/logs?limit=1', { key: viewer.key })).status, 200);
    assert.equal((await api(gw, 'GET', '/admin/logs?limit=1', { key: key.key })).status, 403);
    assert.equal((await api(gw, 'GET', `/admin/logs/${ids[0]}`, { key: key.key })).status, 403);
  });
});

describe('body capture (log_bodies): off by default, per model, key or team; capped and redacted', () => {
  const secretBody = (model, extra = {}) => ({
    model, messages: [{ role: 'user', content: 'my password is below' }], password: 'hunter2-secret',
    metadata: { api_key: 'sk-should-not-be-kept' }, ...extra,
  });
  const bodiesOf = async (res) => {
    const r = await row(res.headers.get('x-request-id'));
    return { request: r.request_body, response: r.response_body };
  };

  test('a model with log_bodies keeps the request and the answer, secrets redacted', async () => {
    const res = await api(gw, 'POST', '/v1/chat/completions', { key: other.key, body: secretBody('captured-log') });
    assert.equal(res.status, 200, res.text);
    const b = await bodiesOf(res);
    assert.ok(b.request.includes('my password is below'), b.request);
    assert.ok(!b.request.includes('hunter2-secret') && !b.request.includes('sk-should-not-be-kept'), b.request);
    assert.match(b.request, /"password":"\[redacted\]"/);
    assert.equal(JSON.parse(b.response).choices[0].message.content, res.json.choices[0].message.content);
  });

  test('a stream is kept as the events the client got', async () => {
    const res = await rawRequest({
      port: gw.port, method: 'POST', path: '/v1/chat/completions',
      headers: { authorization: `Bearer ${other.key}`, 'content-type': 'application/json' },
      body: JSON.stringify({ ...secretBody('captured-log'), stream: true }),
    });
    const r = await row(res.headers['x-request-id']);
    assert.ok(r.response_body.startsWith('data: '), r.response_body);
    assert.ok(r.response_body.includes('data: [DONE]'));
  });

  test('nothing is kept without it; a key or its team turns it on through the admin API', async () => {
    const plain = await api(gw, 'POST', '/v1/chat/completions', { key: other.key, body: secretBody('gpt-log') });
    assert.deepEqual(await bodiesOf(plain), { request: null, response: null });
    const k = await createKey(gw, { name: 'logged-key', log_bodies: true });
    assert.equal(k.log_bodies, true);
    const viaKey = await api(gw, 'POST', '/v1/chat/completions', { key: k.key, body: secretBody('gpt-log') });
    assert.ok((await bodiesOf(viaKey)).request.includes('[redacted]'));
    const t = (await api(gw, 'POST', '/admin/teams', { body: { name: 'logged-team' } })).json;
    const member = await createKey(gw, { name: 'member', team: t.id });
    const off = await api(gw, 'POST', '/v1/chat/completions', { key: member.key, body: secretBody('gpt-log') });
    assert.equal((await bodiesOf(off)).request, null);
    const on = await api(gw, 'PATCH', `/admin/teams/${t.id}`, { body: { log_bodies: true } });
    assert.equal(on.json.log_bodies, true, on.text);
    let viaTeam;
    await waitFor(async () => {
      viaTeam = await api(gw, 'POST', '/v1/chat/completions', { key: member.key, body: secretBody('gpt-log') });
      return (await bodiesOf(viaTeam)).request !== null;
    }, { what: "the team's setting in the key snapshot" });
    // A key holder cannot turn capture on for keys of its own.
    const self = await api(gw, 'POST', '/v1/me/keys', { key: key.key, body: { name: 'mine', log_bodies: true } });
    assert.equal(self.status, 403, self.text);
    assert.equal(self.json.error.param, 'log_bodies');
  });
});

describe('usage by two dimensions and by time bucket', () => {
  test('group_by=key,day and team,model; hour and minute buckets; three dimensions refused', async () => {
    const byKeyDay = await api(gw, 'GET', '/admin/usage?group_by=key,day');
    assert.equal(byKeyDay.status, 200, byKeyDay.text);
    const today = new Date().toISOString().slice(0, 10);
    const mine = byKeyDay.json.data.find((r) => r.key === other.id && r.day === today);
    assert.ok(mine && mine.requests >= 12, JSON.stringify(byKeyDay.json.data));
    const byTeamModel = (await api(gw, 'GET', `/admin/usage?group_by=team,model&team=${team.id}`)).json.data;
    assert.ok(byTeamModel.every((r) => r.team === team.id));
    assert.ok(byTeamModel.some((r) => r.model === 'fallback-log'));
    const hour = new Date().toISOString().slice(0, 13) + ':00Z';
    const byHour = (await api(gw, 'GET', `/admin/usage?group_by=hour&key=${other.id}`)).json.data;
    assert.ok(byHour.some((r) => r.hour === hour), JSON.stringify(byHour));
    const byMinute = (await api(gw, 'GET', `/admin/usage?group_by=minute&key=${other.id}`)).json.data;
    assert.ok(byMinute.every((r) => /^\d{4}-\d\d-\d\dT\d\d:\d\dZ$/.test(r.minute)));
    assert.equal(byMinute.reduce((n, r) => n + r.requests, 0), byHour.reduce((n, r) => n + r.requests, 0));
    const csv = await api(gw, 'GET', '/admin/usage?group_by=model,status&format=csv');
    assert.equal(csv.text.split('\n')[0], 'model,status,requests,prompt_tokens,completion_tokens,cached_tokens,errors,cost');
    for (const bad of ['key,day,model', 'day,day', 'key,planet']) {
      const r = await api(gw, 'GET', `/admin/usage?group_by=${bad}`);
      assert.equal(r.status, 400, bad);
      assert.equal(r.json.error.param, 'group_by');
    }
  });
});

describe('retention', () => {
  test('[storage] usage_ttl_s deletes older rows, keeps new ones', async () => {
    const short = await startGateway({
      config: `
[server]
trusted_proxies = ["127.0.0.1"]
[storage]
usage_ttl_s = 2
body_capture_bytes = 40
${provider('mock')}
${chain('gpt-log', [['mock', 'mock-model', 0]], 'log_bodies = true')}
`,
    });
    const k = await createKey(short, { name: 'short-lived-log' });
    const call = (headers = {}) => api(short, 'POST', '/v1/chat/completions', {
      key: k.key, headers, body: { model: 'gpt-log', messages: [{ role: 'user', content: 'hi' }] },
    });
    const first = (await call()).headers.get('x-request-id');
    await waitFor(async () => (await api(short, 'GET', `/admin/logs/${first}`)).status === 200, { what: 'first row' });
    const captured = (await api(short, 'GET', `/admin/logs/${first}`)).json;
    assert.ok(captured.request_body.length <= 40 && captured.response_body.length <= 40, JSON.stringify(captured));
    await sleep(2500);
    // Behind a trusted proxy (the peer here) the client is the last X-Forwarded-For address.
    const second = (await call({ 'x-forwarded-for': '198.51.100.7, 203.0.113.9' })).headers.get('x-request-id');
    await waitFor(async () => (await api(short, 'GET', `/admin/logs/${second}`)).status === 200, { what: 'second row' });
    assert.equal((await api(short, 'GET', `/admin/logs/${second}`)).json.client_ip, '203.0.113.9');
    await waitFor(async () => (await api(short, 'GET', `/admin/logs/${first}`)).status === 404,
      { timeoutMs: 5000, what: 'the old row deleted' });
    assert.equal((await api(short, 'GET', `/admin/logs/${second}`)).status, 200, 'the new one stays');
  });
});
