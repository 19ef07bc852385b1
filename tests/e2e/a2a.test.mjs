// The agent bus (A2A) end to end: worker agents as separate processes (a2a_agent.mjs)
// long-poll lowart for their tasks; senders use A2A JSON-RPC — by agent name and by skill,
// blocking, non-blocking and streamed — and the official @a2a-js/sdk client. An agent that
// dies mid-task has the task redelivered to another; one that never reports sends it to
// the dead letters; pending tasks survive a gateway restart; input-required round trips;
// push delivery is signed; a remote A2A agent is fronted with metering.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHmac, randomUUID } from 'node:crypto';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { A2AClient } from '@a2a-js/sdk/client';
// The current SDK (1.x) speaks A2A protocol 1.0 (SendMessage, ...): installed under an alias.
import { Role, TaskState } from 'a2a-sdk-v1';
import {
  ClientFactory, DefaultAgentCardResolver, JsonRpcTransportFactory, createAuthenticatingFetchWithRetry,
} from 'a2a-sdk-v1/client';
import {
  api, cleanupAll, createKey, metricValue, parseMetrics, sqliteQuery, sseData, startGateway, tempDir, waitFor,
} from './harness.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const AGENT = path.join(here, 'a2a_agent.mjs');
const SECRET = 'a2a-push-secret-e2e';

let gw;
let dir;
let sender;                // a plain key that sends tasks
const keys = {};           // agent name -> its key
const agents = new Map();  // agent name -> child process

const config = `
[server]
listen = "127.0.0.1:3000"
[a2a]
ack_timeout_ms = 800
lease_ms = 1200
max_attempts = 3
max_wait_ms = 8000
live_ms = 2000
retry_backoff_ms = 100
retry_max_backoff_ms = 400
push_secret = "${SECRET}"
`;

const gateway = () => startGateway({ config, dir, masterKey: gw?.masterKey });

async function register(name, skills, extra = {}) {
  if (!keys[name]) keys[name] = (await createKey(gw, { name: `agent-${name}` }));
  const r = await api(gw, 'POST', '/admin/agents', { body: { name, skills, key_id: keys[name].id, ...extra } });
  assert.ok(r.status === 201 || r.status === 200, r.text);
  return r.json;
}

function startAgent(name, mode = 'echo') {
  const proc = spawn(process.execPath, [AGENT], {
    env: { ...process.env, GW: gw.url, KEY: keys[name].key, AGENT: name, MODE: mode }, stdio: ['ignore', 'pipe', 'pipe'],
  });
  const out = { text: '' };
  proc.stdout.on('data', (d) => { out.text += d; });
  proc.stderr.on('data', (d) => { out.text += d; });
  proc.exited = new Promise((r) => proc.once('exit', r));
  proc.out = out;
  agents.set(name, proc);
  return proc;
}
async function stopAgent(name) {
  const p = agents.get(name);
  if (!p) return;
  p.kill('SIGKILL');
  await p.exited;
  agents.delete(name);
}

let rpcId = 0;
async function rpc(target, method, params, key = sender.key) {
  const r = await api(gw, 'POST', target, { key, body: { jsonrpc: '2.0', id: ++rpcId, method, params } });
  assert.equal(r.status, 200, r.text);
  return r.json;
}
const userMessage = (text, extra = {}) => ({
  role: 'user', parts: [{ kind: 'text', text }], messageId: randomUUID(), kind: 'message', ...extra,
});

before(async () => {
  dir = await tempDir();
  gw = await gateway();
  sender = await createKey(gw, { name: 'a2a-sender' });
  await register('alpha', [{ id: 'summarize', name: 'Summarize', description: 'short summaries', tags: ['text'] }]);
  await register('beta', ['summarize', 'translate']);
  startAgent('alpha');
  startAgent('beta');
});

after(async () => {
  for (const name of [...agents.keys()]) await stopAgent(name);
  await cleanupAll();
});

test('agent cards: the gateway and each agent, public', async () => {
  const res = await fetch(`${gw.url}/a2a/alpha/.well-known/agent-card.json`);
  assert.equal(res.status, 200);
  const card = await res.json();
  assert.equal(card.name, 'alpha');
  assert.equal(card.url, `${gw.url}/a2a/alpha`);
  assert.equal(card.protocolVersion, '0.3.0');
  assert.equal(card.capabilities.streaming, true);
  assert.deepEqual(card.skills.map((s) => s.id), ['summarize']);
  const top = await (await fetch(`${gw.url}/.well-known/agent-card.json`)).json();
  assert.equal(top.url, `${gw.url}/a2a`);
  assert.deepEqual(top.skills.map((s) => s.id).sort(), ['summarize', 'translate']);
  assert.equal((await fetch(`${gw.url}/a2a/nobody/.well-known/agent-card.json`)).status, 404);
});

test('an agent registers itself with its own key; another key cannot take its name or act as it', async () => {
  // Registering needs the permission; without it a key cannot claim a name or a skill.
  const plain = await createKey(gw, { name: 'no-permission' });
  const refused = await api(gw, 'POST', '/v1/agents', { key: plain.key, body: { name: 'selfie', skills: ['pose'] } });
  assert.equal(refused.status, 403, refused.text);
  const own = await createKey(gw, { name: 'self-registered', permissions: ['register_agents'] });
  const r = await api(gw, 'POST', '/v1/agents', { key: own.key, body: { name: 'selfie', skills: ['pose'], shared: true } });
  assert.equal(r.status, 201, r.text);
  assert.equal(r.json.key_id, own.id);
  assert.equal(r.json.shared, false, 'a key cannot make its agent shared');
  const thief = await createKey(gw, { name: 'not-selfie', permissions: ['register_agents'] });
  const taken = await api(gw, 'POST', '/v1/agents', { key: thief.key, body: { name: 'selfie', skills: ['x'] } });
  assert.equal(taken.status, 409);
  const pull = await api(gw, 'GET', '/v1/agents/selfie/tasks?wait_ms=0', { key: thief.key });
  assert.equal(pull.status, 403);
  const mine = await api(gw, 'GET', '/v1/agents/selfie/tasks?wait_ms=0', { key: own.key });
  assert.equal(mine.status, 204, 'nothing waiting');
  const bad = await api(gw, 'POST', '/v1/agents', { key: own.key, body: { name: 'no skills' } });
  assert.equal(bad.status, 400);
});

test('a task by name, blocking: the agent process answers through the bus', async () => {
  const r = await rpc('/a2a/alpha', 'message/send', { message: userMessage('hello bus') });
  assert.equal(r.result.kind, 'task');
  assert.equal(r.result.status.state, 'completed', JSON.stringify(r));
  assert.equal(r.result.metadata.agent, 'alpha');
  assert.equal(r.result.status.message.parts[0].text, 'alpha: HELLO BUS');
  assert.equal(r.result.artifacts[0].parts[0].text, 'alpha handled hello bus');
  assert.deepEqual(r.result.history.map((m) => m.role), ['user', 'agent', 'agent']);
});

test('a task by skill goes to an agent that has it', async () => {
  const r = await rpc('/a2a', 'message/send', { message: userMessage('bonjour', { metadata: { skill: 'translate' } }) });
  assert.equal(r.result.status.state, 'completed', JSON.stringify(r));
  assert.equal(r.result.metadata.agent, 'beta', 'only beta translates');
  const none = await rpc('/a2a', 'message/send', { message: userMessage('x', { metadata: { skill: 'juggling' } }) });
  assert.equal(none.error.code, -32602);
  assert.match(none.error.message, /no agent has skill juggling/);
});

test('agent processes exchange tasks through the bus: alpha asks beta by name and by skill', async () => {
  const byName = await rpc('/a2a/alpha', 'message/send', { message: userMessage('ask beta: good morning') });
  assert.equal(byName.result.status.state, 'completed', JSON.stringify(byName));
  assert.equal(byName.result.status.message.parts[0].text, 'alpha asked beta: beta: GOOD MORNING');
  const bySkill = await rpc('/a2a/alpha', 'message/send', { message: userMessage('ask skill translate: guten tag') });
  assert.equal(bySkill.result.status.message.parts[0].text, 'alpha asked beta: beta: GUTEN TAG');
});

test('non-blocking send, then tasks/get; tasks belong to their sender', async () => {
  const r = await rpc('/a2a/beta', 'message/send', { message: userMessage('later'), configuration: { blocking: false } });
  assert.equal(r.result.status.state, 'submitted');
  const id = r.result.id;
  await waitFor(async () => (await rpc('/a2a/beta', 'tasks/get', { id })).result.status.state === 'completed',
    { what: 'the task to complete' });
  const other = await createKey(gw, { name: 'a2a-other' });
  const denied = await rpc('/a2a/beta', 'tasks/get', { id }, other.key);
  assert.equal(denied.error.code, -32001);
  const unknown = await rpc('/a2a/beta', 'tasks/get', { id: 'nope' });
  assert.equal(unknown.error.code, -32001);
  const bad = await api(gw, 'POST', '/a2a/beta', { key: sender.key, body: '{not json' });
  assert.equal(bad.json.error.code, -32700);
  const method = await rpc('/a2a/beta', 'tasks/frobnicate', {});
  assert.equal(method.error.code, -32601);
});

test('the official @a2a-js/sdk client: message/send, message/stream, tasks/get', async () => {
  const authFetch = (url, init = {}) =>
    fetch(url, { ...init, headers: { ...(init.headers ?? {}), authorization: `Bearer ${sender.key}` } });
  const client = await A2AClient.fromCardUrl(`${gw.url}/a2a/alpha/.well-known/agent-card.json`, { fetchImpl: authFetch });
  const sent = await client.sendMessage({ message: userMessage('from the sdk') });
  assert.ok(!sent.error, JSON.stringify(sent.error));
  assert.equal(sent.result.status.state, 'completed');
  assert.equal(sent.result.status.message.parts[0].text, 'alpha: FROM THE SDK');

  const events = [];
  for await (const ev of client.sendMessageStream({ message: userMessage('streamed') })) events.push(ev);
  assert.equal(events[0].kind, 'task');
  const states = events.filter((e) => e.kind === 'status-update').map((e) => e.status.state);
  assert.ok(states.includes('working'), `states: ${states}`);
  assert.equal(states[states.length - 1], 'completed');
  assert.equal(events[events.length - 1].final, true);
  assert.ok(events.some((e) => e.kind === 'artifact-update'));

  const got = await client.getTask({ id: events[0].id });
  assert.equal(got.result.status.state, 'completed');
  assert.equal(got.result.id, events[0].id);
});

test('the current @a2a-js/sdk (protocol 1.0): SendMessage, SendStreamingMessage, GetTask, CancelTask', async () => {
  const fetchImpl = createAuthenticatingFetchWithRetry(fetch, {
    headers: async () => ({ Authorization: `Bearer ${sender.key}` }),
    shouldRetryWithHeaders: async () => undefined,
  });
  const factory = new ClientFactory({
    transports: [new JsonRpcTransportFactory({ fetchImpl })],
    preferredTransports: ['JSONRPC'],
    cardResolver: new DefaultAgentCardResolver({ fetchImpl }),
  });
  const client = await factory.createFromUrl(`${gw.url}/a2a/alpha/`); // card at /a2a/alpha/.well-known/...
  const msg = (text) => ({ messageId: randomUUID(), role: Role.ROLE_USER, parts: [{ content: { $case: 'text', value: text } }] });
  const text = (parts) => parts.map((p) => (p.content?.$case === 'text' ? p.content.value : '')).join('');

  const task = await client.sendMessage({ message: msg('protocol one') });
  assert.equal(TaskState[task.status.state], 'TASK_STATE_COMPLETED');
  assert.equal(text(task.status.message.parts), 'alpha: PROTOCOL ONE');
  assert.equal(Role[task.history[0].role], 'ROLE_USER');
  assert.equal(text(task.artifacts[0].parts), 'alpha handled protocol one');

  const seen = [];
  for await (const ev of client.sendMessageStream({ message: msg('one stream') })) {
    const { $case, value } = ev.payload;
    seen.push($case + (value.status ? `:${TaskState[value.status.state]}` : ''));
  }
  assert.equal(seen[0], 'task:TASK_STATE_SUBMITTED');
  assert.ok(seen.includes('statusUpdate:TASK_STATE_WORKING'), seen.join());
  assert.ok(seen.includes('artifactUpdate'), seen.join());
  assert.equal(seen[seen.length - 1], 'statusUpdate:TASK_STATE_COMPLETED');

  const got = await client.getTask({ id: task.id, historyLength: 1 });
  assert.equal(got.id, task.id);
  assert.equal(got.history.length, 1);

  // Non-blocking to an agent with no process, then cancel; errors arrive typed.
  await register('quiet', ['quiet']);
  const idle = await factory.createFromUrl(`${gw.url}/a2a/quiet/`);
  const waiting = await idle.sendMessage({ message: msg('hold'), configuration: { returnImmediately: true } });
  assert.equal(TaskState[waiting.status.state], 'TASK_STATE_SUBMITTED');
  const canceled = await idle.cancelTask({ id: waiting.id });
  assert.equal(TaskState[canceled.status.state], 'TASK_STATE_CANCELED');
  await assert.rejects(idle.cancelTask({ id: waiting.id }), (e) => e.envelopeCode === -32002);
  await assert.rejects(idle.getTask({ id: 'no-such-task' }), (e) => e.envelopeCode === -32001);
});

test('an agent that dies mid-task: the task is delivered to another agent with the skill', async () => {
  await register('gamma', ['slow']);
  await register('delta', ['slow']);
  startAgent('gamma', 'ack-then-die');
  // delta starts later, so gamma (live, less loaded or first) takes the task first.
  await waitFor(async () => (await api(gw, 'GET', '/admin/agents/gamma')).json.live, { what: 'gamma live' });
  const r = await rpc('/a2a', 'message/send', {
    message: userMessage('survive', { metadata: { skill: 'slow' } }), configuration: { blocking: false },
  });
  const id = r.result.id;
  await waitFor(() => /died holding/.test(agents.get('gamma').out.text), { what: 'gamma to take the task and die' });
  startAgent('delta');
  await waitFor(async () => (await rpc('/a2a', 'tasks/get', { id })).result.status.state === 'completed',
    { timeoutMs: 10000, what: 'the task redelivered and done' });
  const t = (await rpc('/a2a', 'tasks/get', { id })).result;
  assert.equal(t.metadata.agent, 'delta');
  assert.equal(t.status.message.parts[0].text, 'delta: SURVIVE');
  await stopAgent('gamma');
  await stopAgent('delta');
});

test('a task that keeps failing goes to the dead letters', async () => {
  await register('sloth', ['nap']);
  startAgent('sloth', 'ack-only');
  const r = await rpc('/a2a/sloth', 'message/send', { message: userMessage('zzz'), configuration: { blocking: false } });
  const id = r.result.id;
  await waitFor(async () => (await rpc('/a2a/sloth', 'tasks/get', { id })).result.status.state === 'failed',
    { timeoutMs: 15000, what: 'the task to give up' });
  const dead = await api(gw, 'GET', '/admin/agents/dead-letters');
  assert.equal(dead.status, 200, dead.text);
  const entry = dead.json.data.find((d) => d.task.id === id);
  assert.ok(entry, 'listed as a dead letter');
  assert.equal(entry.attempts, 3);
  assert.match(entry.last_error, /no report from sloth within the lease/);
  await stopAgent('sloth');
});

test('input-required: the sender answers on the same task', async () => {
  await register('asker', ['ask']);
  startAgent('asker', 'ask');
  const first = await rpc('/a2a/asker', 'message/send', { message: userMessage('translate this') });
  assert.equal(first.result.status.state, 'input-required');
  assert.equal(first.result.status.message.parts[0].text, 'which language?');
  const second = await rpc('/a2a/asker', 'message/send', {
    message: userMessage('german', { taskId: first.result.id, contextId: first.result.contextId }),
  });
  assert.equal(second.result.id, first.result.id);
  assert.equal(second.result.status.state, 'completed');
  assert.equal(second.result.status.message.parts[0].text, 'asker: GERMAN');
  await stopAgent('asker');
});

test('cancel: a waiting task is canceled; a finished one cannot be', async () => {
  await register('idle', ['idle']); // no process: tasks wait in its mailbox
  const r = await rpc('/a2a/idle', 'message/send', { message: userMessage('never'), configuration: { blocking: false } });
  const c = await rpc('/a2a/idle', 'tasks/cancel', { id: r.result.id });
  assert.equal(c.result.status.state, 'canceled');
  const again = await rpc('/a2a/idle', 'tasks/cancel', { id: r.result.id });
  assert.equal(again.error.code, -32002);
});

test('bus metrics and the admin listing', async () => {
  const m = parseMetrics(await (await fetch(`${gw.url}/metrics`)).text());
  assert.ok(metricValue(m, 'gateway_a2a_tasks_total', { state: 'completed' }) >= 1);
  assert.ok(metricValue(m, 'gateway_a2a_redeliveries_total') >= 1);
  assert.ok(m.some((s) => s.name === 'gateway_a2a_delivery_seconds_count' && s.value >= 1));
  const list = await api(gw, 'GET', '/admin/agents');
  const alpha = list.json.data.find((a) => a.name === 'alpha');
  assert.equal(alpha.delivery, 'pull');
  assert.equal((await api(gw, 'GET', '/admin/agents', { key: sender.key })).status, 403);
});

test('pending tasks survive a gateway restart', async () => {
  await register('sleeper', ['sleep']);
  const r = await rpc('/a2a/sleeper', 'message/send', { message: userMessage('wake up'), configuration: { blocking: false } });
  await gw.stop();
  gw = await gateway();
  await gw.waitForLog((l) => l.msg === 'a2a tasks resumed after a restart');
  startAgent('sleeper');
  await waitFor(async () => (await rpc('/a2a/sleeper', 'tasks/get', { id: r.result.id })).result.status.state === 'completed',
    { timeoutMs: 10000, what: 'the task after the restart' });
  await stopAgent('sleeper');
  // alpha and beta reconnect on their own after the restart.
});

test('push delivery: signed POST to the agent, which reports back', async () => {
  const seen = [];
  const srv = http.createServer((req, res) => {
    let body = '';
    req.on('data', (d) => { body += d; });
    req.on('end', async () => {
      seen.push({ headers: req.headers, body });
      res.writeHead(202).end();
      const { task } = JSON.parse(body);
      await fetch(`${gw.url}/v1/agents/pusher/tasks/${task.id}/status`, {
        method: 'POST',
        headers: { authorization: `Bearer ${keys.pusher.key}` },
        body: JSON.stringify({ state: 'completed', message: 'pushed and done' }),
      });
    });
  });
  await new Promise((r) => srv.listen(0, '127.0.0.1', r));
  try {
    await register('pusher', ['push'], { push_url: `http://127.0.0.1:${srv.address().port}/tasks` });
    const r = await rpc('/a2a/pusher', 'message/send', { message: userMessage('push it') });
    assert.equal(r.result.status.state, 'completed', JSON.stringify(r));
    assert.equal(r.result.status.message.parts[0].text, 'pushed and done');
    const { headers, body } = seen[0];
    const mac = createHmac('sha256', SECRET).update(`${headers['x-lowart-timestamp']}.${body}`).digest('hex');
    assert.equal(headers['x-lowart-signature'], `sha256=${mac}`);
  } finally {
    srv.close();
  }
});

test('a remote A2A agent is fronted: calls forwarded, metered', async () => {
  const calls = [];
  const remote = http.createServer((req, res) => {
    let body = '';
    req.on('data', (d) => { body += d; });
    req.on('end', () => {
      const rq = JSON.parse(body);
      calls.push({ rq, auth: req.headers.authorization });
      const task = { kind: 'task', id: 'remote-1', contextId: 'c1', status: { state: 'completed', timestamp: new Date().toISOString() } };
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ jsonrpc: '2.0', id: rq.id, result: task }));
    });
  });
  await new Promise((r) => remote.listen(0, '127.0.0.1', r));
  try {
    const reg = await api(gw, 'POST', '/admin/agents', {
      body: { name: 'faraway', description: 'remote', url: `http://127.0.0.1:${remote.address().port}/` },
    });
    assert.equal(reg.status, 201, reg.text);
    assert.equal(reg.json.delivery, 'remote');
    const r = await rpc('/a2a/faraway', 'message/send', { message: userMessage('over there') });
    assert.equal(r.result.id, 'remote-1');
    assert.equal(calls[0].rq.method, 'message/send');
    assert.equal(calls[0].auth, undefined, 'the caller\'s lowart key is not passed on');
    const unauth = await api(gw, 'POST', '/a2a/faraway', { key: null, body: { jsonrpc: '2.0', id: 1, method: 'tasks/get', params: { id: 'x' } } });
    assert.equal(unauth.status, 401);
    await waitFor(async () => (await sqliteQuery(gw.dbPath,
      "SELECT COUNT(*) AS n FROM usage_records WHERE route = 'a2a' AND model = 'agent:faraway'"))[0].n >= 1,
    { what: 'the metered call' });
  } finally {
    remote.close();
  }
});
