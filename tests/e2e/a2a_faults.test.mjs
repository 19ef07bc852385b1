// The agent bus under faults: every task reaches one terminal state in bounded time.
// Agents here are raw HTTP clients of lowart's agent API (and a push endpoint), so each
// test controls exactly when an agent polls, dies, or answers.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import http from 'node:http';
import { api, cleanupAll, createKey, sleep, startGateway, waitFor } from './harness.mjs';

const SECRET = 'faults-push-secret';
let gw;
let sender;
const keys = {};

before(async () => {
  gw = await startGateway({
    config: `
[a2a]
ack_timeout_ms = 5000
lease_ms = 5000
max_attempts = 4
max_wait_ms = 8000
live_ms = 1000
handout_ms = 1500
task_deadline_ms = 4000
retry_backoff_ms = 300
retry_max_backoff_ms = 1200
push_secret = "${SECRET}"
`,
  });
  sender = await createKey(gw, { name: 'sender' });
});
after(cleanupAll);

async function register(name, skills, extra = {}) {
  keys[name] = await createKey(gw, { name: `agent-${name}` });
  const r = await api(gw, 'POST', '/admin/agents', { body: { name, skills, key_id: keys[name].id, ...extra } });
  assert.ok(r.status === 201 || r.status === 200, r.text);
}
let rpcId = 0;
async function send(target, text, skill) {
  const message = { role: 'user', kind: 'message', messageId: randomUUID(), parts: [{ kind: 'text', text }], ...(skill ? { metadata: { skill } } : {}) };
  const r = await api(gw, 'POST', target, {
    key: sender.key,
    body: { jsonrpc: '2.0', id: ++rpcId, method: 'message/send', params: { message, configuration: { blocking: false } } },
  });
  assert.equal(r.status, 200, r.text);
  assert.ok(r.json.result, r.text);
  return r.json.result.id;
}
const getTask = async (id) => {
  const r = await api(gw, 'POST', '/a2a', { key: sender.key, body: { jsonrpc: '2.0', id: ++rpcId, method: 'tasks/get', params: { id } } });
  return r.json.result;
};
const poll = (name, waitMs) => api(gw, 'GET', `/v1/agents/${name}/tasks?wait_ms=${waitMs}`, { key: keys[name].key });
const report = (name, id, state, message = 'done') =>
  api(gw, 'POST', `/v1/agents/${name}/tasks/${id}/status`, { key: keys[name].key, body: { state, message } });
const openTask = async (id) => (await api(gw, 'GET', '/admin/agents/tasks')).json.data.find((t) => t.task.id === id);

test('an agent waiting in a long poll is live for the whole poll', async () => {
  await register('waiter', ['wait-skill']);
  const pending = poll('waiter', 4000);
  await sleep(2500); // past live_ms (1000) since the poll began
  const a = await api(gw, 'GET', '/admin/agents/waiter');
  assert.equal(a.json.live, true, JSON.stringify(a.json));
  assert.equal((await pending).status, 204);
});

test('a task by skill queued at an agent that died goes to a live one within bounded time', async () => {
  await register('dies', ['sk']);
  await register('lives', ['sk']);
  assert.equal((await poll('dies', 0)).status, 204); // polled once, then dies
  const id = await send('/a2a', 'rescue me', 'sk');
  assert.equal((await openTask(id)).agent, 'dies');
  const started = Date.now();
  const got = await poll('lives', 6000); // a healthy agent in a long poll
  assert.equal(got.status, 200, 'the task reached the live agent');
  assert.equal(got.json.task.id, id);
  assert.ok(Date.now() - started < 4000, `moved after ${Date.now() - started} ms`);
  assert.equal((await report('lives', id, 'completed')).status, 200);
  assert.equal((await getTask(id)).status.state, 'completed');
});

test('deleting an agent releases its queued tasks: by skill to another agent, by name failed with the reason', async () => {
  await register('doomed', ['dk']);
  await register('heir', ['dk']);
  await poll('doomed', 0);
  const bySkill = await send('/a2a', 'by skill', 'dk');
  const byName = await send('/a2a/doomed', 'by name');
  assert.equal((await openTask(bySkill)).agent, 'doomed');
  assert.equal((await api(gw, 'DELETE', '/admin/agents/doomed')).status, 200);
  const got = await poll('heir', 5000);
  assert.equal(got.status, 200);
  assert.equal(got.json.task.id, bySkill);
  await waitFor(async () => (await getTask(byName)).status.state === 'failed', { timeoutMs: 3000, what: 'the by-name task failed' });
  assert.match(JSON.stringify((await getTask(byName)).status.message), /no longer exists/);
});

test('a task by name to an agent that never takes it fails at the deadline, not in the dead letters', async () => {
  await register('absent', ['ak']);
  const id = await send('/a2a/absent', 'anyone?');
  const started = Date.now();
  await waitFor(async () => (await getTask(id)).status.state === 'failed', { timeoutMs: 8000, intervalMs: 100, what: 'failed at the deadline' });
  const waited = Date.now() - started;
  assert.ok(waited > 3000 && waited < 6500, `failed after ${waited} ms (deadline 4000)`);
  assert.match(JSON.stringify((await getTask(id)).status.message), /no agent took the task within 4 s/);
  const dead = await api(gw, 'GET', '/admin/agents/dead-letters');
  assert.ok(!dead.json.data.some((d) => d.task.id === id), 'a deadline failure is not a dead letter');
});

/** A push endpoint: answers `status(n)` to its n-th delivery (from 0); 2xx ones are reported done. */
async function pushAgent(name, status) {
  const seen = [];
  const srv = http.createServer((req, res) => {
    let body = '';
    req.on('data', (d) => { body += d; });
    req.on('end', async () => {
      const code = status(seen.length);
      seen.push({ at: Date.now(), code });
      res.writeHead(code).end();
      if (code >= 200 && code < 300) {
        const { task } = JSON.parse(body);
        await report(name, task.id, 'completed', 'pushed');
      }
    });
  });
  await new Promise((r) => srv.listen(0, '127.0.0.1', r));
  return { srv, seen, url: `http://127.0.0.1:${srv.address().port}/tasks` };
}

test('push retries back off: an agent down for a second loses nothing', async () => {
  let upAt = Date.now() + 1000;
  const p = await pushAgent('flaky', () => (Date.now() < upAt ? 503 : 202));
  try {
    await register('flaky', ['fk'], { push_url: p.url });
    upAt = Date.now() + 1000;
    const id = await send('/a2a/flaky', 'push me');
    await waitFor(async () => (await getTask(id)).status.state === 'completed', { timeoutMs: 8000, intervalMs: 100, what: 'delivered after the outage' });
    assert.ok(p.seen.length >= 2 && p.seen.length <= 4, `${p.seen.length} deliveries`);
    for (let i = 1; i < p.seen.length; i++) {
      const gap = p.seen[i].at - p.seen[i - 1].at;
      assert.ok(gap >= 140, `delivery ${i} came ${gap} ms after the one before (backoff 300 ms, jitter +-50 %)`);
    }
  } finally {
    p.srv.close();
  }
});

test('a task that exhausts its attempts is a dead letter, and replaying it delivers it again', async () => {
  let healthy = false;
  const p = await pushAgent('broken', () => (healthy ? 202 : 500));
  try {
    await register('broken', ['bk'], { push_url: p.url });
    const id = await send('/a2a/broken', 'doomed at first');
    let entry;
    await waitFor(async () => {
      entry = (await api(gw, 'GET', '/admin/agents/dead-letters')).json.data.find((d) => d.task.id === id);
      return entry;
    }, { timeoutMs: 10000, intervalMs: 100, what: 'the dead letter' });
    assert.equal(entry.attempts, 4);
    assert.equal(p.seen.length, 4);
    assert.equal((await getTask(id)).status.state, 'failed');
    healthy = true;
    const replay = await api(gw, 'POST', `/admin/agents/dead-letters/${id}/replay`);
    assert.equal(replay.status, 200, replay.text);
    await waitFor(async () => (await getTask(id)).status.state === 'completed', { timeoutMs: 5000, what: 'the replayed task done' });
    assert.ok(!(await api(gw, 'GET', '/admin/agents/dead-letters')).json.data.some((d) => d.task.id === id));
    assert.equal((await api(gw, 'POST', `/admin/agents/dead-letters/${id}/replay`)).status, 404, 'only dead letters replay');
    const user = (await createKey(gw, { name: 'not-admin' })).key;
    assert.equal((await api(gw, 'POST', `/admin/agents/dead-letters/${id}/replay`, { key: user })).status, 403);
  } finally {
    p.srv.close();
  }
});

test('JSON-RPC is read as JSON: an escaped method streams, jsonrpc must be "2.0", batches are refused with -32600', async () => {
  await register('json-agent', ['jk']);
  const raw = (p, text, key = sender.key) => fetch(`${gw.url}${p}`, {
    method: 'POST', headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json', accept: 'application/json, text/event-stream' }, body: text,
  });
  // PHP's json_encode writes "message\/stream": the same method.
  const msg = JSON.stringify({ role: 'user', kind: 'message', messageId: randomUUID(), parts: [{ kind: 'text', text: 'escaped' }] });
  const ctl = new AbortController();
  const res = await raw('/a2a/json-agent', `{"jsonrpc":"2.0","id":7,"method":"message\\/stream","params":{"message":${msg}}}`);
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type'), /text\/event-stream/);
  const reader = res.body.getReader();
  const first = new TextDecoder().decode((await reader.read()).value);
  assert.match(first, /^data: /);
  const event = JSON.parse(first.slice(6).split('\n')[0]);
  assert.equal(event.id, 7);
  assert.equal(event.result.kind, 'task');
  await reader.cancel();
  ctl.abort();
  // The agent takes it and reports, so it ends.
  const got = await poll('json-agent', 3000);
  assert.equal(got.status, 200);
  await report('json-agent', got.json.task.id, 'completed');

  for (const body of [
    `{"jsonrpc":"1.0","id":1,"method":"tasks/get","params":{"id":"x"}}`,
    `{"id":2,"method":"tasks/get","params":{"id":"x"}}`,
  ]) {
    const r = await (await raw('/a2a', body)).json();
    assert.equal(r.error.code, -32600, JSON.stringify(r));
    assert.equal(r.id, JSON.parse(body).id);
  }
  for (const p of ['/a2a', '/mcp']) {
    const batch = await raw(p, `[{"jsonrpc":"2.0","id":1,"method":"tasks/get","params":{"id":"x"}},{"jsonrpc":"2.0","id":2,"method":"ping"}]`);
    const r = await batch.json();
    assert.equal(r.jsonrpc, '2.0');
    assert.equal(r.error.code, -32600, `${p}: ${JSON.stringify(r)}`);
    assert.equal(r.id, null);
  }
  const mcpVersion = await (await raw('/mcp', '{"jsonrpc":"1.0","id":3,"method":"ping"}')).json();
  assert.equal(mcpVersion.error.code, -32600);
  assert.equal(mcpVersion.id, 3);
});
