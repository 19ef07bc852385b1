// Least privilege, proved from the outside: what a tool process, an operator and a plain
// user key can reach through lowart. A real stdio MCP server (a few lines of node, written
// here) reports the environment it was started with; registrations that would run inline
// code are refused for every role; a self-made key never has more than the key that made it.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { api, cleanupAll, createKey, POSTGRES_MODE, startGateway, startMock, tempDir, waitFor } from './harness.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const EVERYTHING = path.join(here, 'node_modules/@modelcontextprotocol/server-everything/dist/index.js');

// An MCP stdio server that answers one tool, `env`, with the environment it was given.
const ENV_SERVER = `
const rl = require('node:readline').createInterface({ input: process.stdin });
const send = (m) => process.stdout.write(JSON.stringify({ jsonrpc: '2.0', ...m }) + '\\n');
rl.on('line', (line) => {
  const m = JSON.parse(line);
  if (m.id === undefined) return;
  if (m.method === 'initialize')
    return send({ id: m.id, result: { protocolVersion: m.params.protocolVersion, capabilities: { tools: {} },
                                      serverInfo: { name: 'envdump', version: '1' } } });
  if (m.method === 'tools/list')
    return send({ id: m.id, result: { tools: [{ name: 'env', description: 'its environment', inputSchema: { type: 'object' } }] } });
  if (m.method === 'tools/call')
    return send({ id: m.id, result: { content: [{ type: 'text', text: JSON.stringify(process.env) }] } });
  if (m.method === 'ping') return send({ id: m.id, result: {} });
  send({ id: m.id, error: { code: -32601, message: 'method not found' } });
});
`;

const secrets = {
  LOWART_ENCRYPTION_KEY: randomBytes(32).toString('hex'),
  LOWART_WEBHOOK_SECRET: `whsec-${randomBytes(8).toString('hex')}`,
  LOWART_A2A_SECRET: `a2a-${randomBytes(8).toString('hex')}`,
  E2E_PROVIDER_KEY: `sk-provider-${randomBytes(8).toString('hex')}`,
};
const ALLOWLIST = new Set(['PATH', 'HOME', 'USER', 'LOGNAME', 'SHELL', 'LANG', 'TZ', 'TMPDIR', 'TERM']);

let gw;
let mock;
let scriptDir;
let envScript;

before(async () => {
  mock = await startMock();
  scriptDir = await tempDir('lowart-lp-scripts-');
  envScript = path.join(scriptDir, 'envdump.cjs');
  fs.writeFileSync(envScript, ENV_SERVER);
  const config = `
[mcp]
allowed_commands = ["node", "python3", "bash", { command = "npx", args = ["-y", "@modelcontextprotocol/server-everything", "**"] }]
call_timeout_ms = 10000

[[providers]]
name = "up"
base_url = "${mock.url}/v1"
api_key_env = "E2E_PROVIDER_KEY"

[[models]]
name = "gpt-4o-mini"
[[models.deployments]]
provider = "up"
model = "gpt-4o-mini"
`;
  gw = await startGateway({
    config,
    env: { ...secrets, E2E_PROXY_SETTING: 'http://proxy.invalid:3128', E2E_NOT_PASSED: 'must-not-reach-children' },
  });
});

after(cleanupAll);

const register = (key, body) => api(gw, 'POST', '/admin/mcp/register', { key, body });

test('an MCP child gets the allowlist, the names it inherits and its own env: no secret of lowart', async () => {
  const r = await register(undefined, {
    name: 'envdump', command: 'node', args: [envScript],
    env: { SERVER_TOKEN: 'configured-for-this-server' }, inherit_env: ['E2E_PROXY_SETTING'],
  });
  assert.equal(r.status, 201, r.text);
  assert.deepEqual(r.json.inherit_env, ['E2E_PROXY_SETTING']);
  const user = (await createKey(gw, { name: 'plain-user' })).key;
  let call;
  await waitFor(async () => {
    call = await api(gw, 'POST', '/v1/mcp/tools/call', { key: user, body: { name: 'envdump__env', arguments: {} } });
    return call.status === 200;
  }, { timeoutMs: 15000, intervalMs: 100, what: 'the env server answering' });
  const childEnv = JSON.parse(call.json.content[0].text);
  // Every variable the child got is allowlisted, inherited by name, or its own.
  for (const name of Object.keys(childEnv)) {
    const ok = ALLOWLIST.has(name) || name.startsWith('LC_') || name === 'E2E_PROXY_SETTING' || name === 'SERVER_TOKEN';
    assert.ok(ok, `the child got ${name} from lowart`);
  }
  assert.equal(childEnv.SERVER_TOKEN, 'configured-for-this-server');
  assert.equal(childEnv.E2E_PROXY_SETTING, 'http://proxy.invalid:3128');
  assert.equal(childEnv.PATH, process.env.PATH);
  // No value of lowart's secret environment, under any name.
  const text = call.json.content[0].text;
  const secretValues = [gw.masterKey, ...Object.values(secrets), 'must-not-reach-children'];
  if (POSTGRES_MODE) secretValues.push(gw.env.LOWART_DATABASE_URL);
  for (const v of secretValues) assert.ok(!text.includes(v), `a secret value reached the child`);
  // The listing shows the inherited names (and only the names of its own env).
  const list = await api(gw, 'GET', '/admin/mcp');
  const s = list.json.data.find((x) => x.name === 'envdump');
  assert.deepEqual(s.inherit_env, ['E2E_PROXY_SETTING']);
  assert.deepEqual(s.env_keys, ['SERVER_TOKEN']);
});

test('inherit_env refuses lowart\'s own variables and provider key variables, naming the field', async () => {
  for (const name of ['LOWART_MASTER_KEY', 'LOWART_ENCRYPTION_KEY', 'LOWART_DATABASE_URL', 'E2E_PROVIDER_KEY', 'A=B']) {
    const r = await register(undefined, { name: 'inh', command: 'node', args: [envScript], inherit_env: [name] });
    assert.equal(r.status, 400, `${name}: ${r.text}`);
    assert.equal(r.json.error.param, 'inherit_env', r.text);
  }
  const r = await register(undefined, { name: 'inh', command: 'node', args: [envScript], inherit_env: 'PATH' });
  assert.equal(r.status, 400);
});

test('registering a tool server is not a shell: inline code is refused for admins and operators', async () => {
  const operator = (await createKey(gw, { name: 'op', role: 'operator' })).key;
  const cases = [
    [{ command: 'node', args: ['-e', 'require("fs").writeFileSync("/tmp/pwned","x")'] }, 'args'],
    [{ command: 'node', args: ['--eval=1'] }, 'args'],
    [{ command: 'node', args: ['-p', 'process.env'] }, 'args'],
    [{ command: 'node', args: ['--require', envScript, envScript] }, 'args'],
    [{ command: 'node', args: [] }, 'args'], // a program read from stdin
    [{ command: 'node', args: [path.join(scriptDir, 'missing.js')] }, 'args'],
    [{ command: 'python3', args: ['-c', 'import os; os.system("id")'] }, 'args'],
    [{ command: 'python3', args: ['-m', 'http.server'] }, 'args'],
    [{ command: 'bash', args: ['-c', 'id'] }, 'args'],
    [{ command: '/usr/bin/node', args: ['-e', '1'] }, 'args'],
    [{ command: 'npx', args: ['-y', 'cowsay', 'hi'] }, 'args'],
    [{ command: 'npx', args: ['-y', '@modelcontextprotocol/server-everything-but-evil'] }, 'args'],
    [{ command: 'npx', args: ['@modelcontextprotocol/server-everything'] }, 'args'],
    [{ command: 'perl', args: ['-e', 'print 1'] }, 'command'],
    [{ command: 'sh', args: ['-c', 'id'] }, 'command'],
  ];
  for (const key of [undefined, operator]) {
    for (const [body, param] of cases) {
      const r = await register(key, { name: 'evil', ...body });
      assert.equal(r.status, 400, `${JSON.stringify(body)} -> ${r.status} ${r.text}`);
      assert.equal(r.json.error.param, param, `${JSON.stringify(body)}: ${r.text}`);
    }
  }
  assert.ok(!fs.existsSync('/tmp/pwned'));
  // What the allowlist names does register: a script file, and the named package.
  const ok = await register(operator, { name: 'ev2', command: 'node', args: [EVERYTHING, 'stdio'] });
  assert.equal(ok.status, 201, ok.text);
  const pkg = await register(undefined, { name: 'ev3', command: 'npx', args: ['-y', '@modelcontextprotocol/server-everything', 'stdio'], cwd: here });
  assert.equal(pkg.status, 201, pkg.text);
  for (const n of ['ev2', 'ev3']) assert.equal((await api(gw, 'DELETE', `/admin/mcp/${n}`)).status, 200);
});

test('a plain npx entry in lowart.toml is refused at start: packages must be named', async () => {
  const dir = await tempDir();
  await assert.rejects(
    startGateway({ dir, config: '[mcp]\nallowed_commands = ["npx"]\n' }),
    /allowed_commands\[0\].*packages named/s,
  );
});

test('a self-made key inherits its maker\'s limits and expiry, may ask for less, never more', async () => {
  const u = await api(gw, 'POST', '/admin/users', { body: { name: `minter-${randomBytes(3).toString('hex')}` } });
  assert.equal(u.status, 201, u.text);
  const expires = Math.floor(Date.now() / 1000) + 3600;
  const maker = await createKey(gw, { name: 'maker', user_id: u.json.id, rpm: 2, budget_tokens: 100000, expires_at: expires, models: ['gpt-4o-mini'] });
  const mint = (body) => api(gw, 'POST', '/v1/me/keys', { key: maker.key, body: { name: 'child', ...body } });

  for (const [body, param] of [[{ rpm: 10 }, 'rpm'], [{ rpm: 0 }, 'rpm'], [{ rpm: null }, 'rpm'],
    [{ budget_tokens: 100001 }, 'budget_tokens'], [{ budget_period: 'day' }, 'budget_period'],
    [{ expires_at: expires + 60 }, 'expires_at'], [{ tpm: 5 }, null]]) {
    const r = await mint(body);
    if (param === null) { assert.equal(r.status, 201, r.text); continue; } // a limit the maker lacks may be added
    assert.equal(r.status, 403, `${JSON.stringify(body)}: ${r.text}`);
    assert.equal(r.json.error.param, param, r.text);
  }
  const child = await mint({});
  assert.equal(child.status, 201, child.text);
  assert.equal(child.json.rpm, 2);
  assert.equal(child.json.budget_tokens, 100000);
  assert.equal(child.json.budget_period, 'month');
  assert.equal(child.json.expires_at, expires);
  assert.deepEqual(child.json.models, ['gpt-4o-mini']);
  const less = await mint({ rpm: 1, expires_at: expires - 60 });
  assert.equal(less.status, 201, less.text);
  assert.equal(less.json.rpm, 1);

  // The child draws on the maker's counters: minting multiplies nothing.
  const chat = (key) => api(gw, 'POST', '/v1/chat/completions', { key, body: { model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'hi' }] } });
  assert.equal((await chat(maker.key)).status, 200);
  assert.equal((await chat(maker.key)).status, 200);
  const third = await chat(child.json.key);
  assert.equal(third.status, 429, third.text);
  // A grandchild is bounded by (and counts against) the first maker too.
  const grand = await api(gw, 'POST', '/v1/me/keys', { key: child.json.key, body: { name: 'grandchild' } });
  assert.equal(grand.status, 201, grand.text);
  assert.equal((await chat(grand.json.key)).status, 429);

  // Revoking the maker revokes what it made.
  assert.equal((await api(gw, 'DELETE', `/admin/keys/${maker.id}`)).status, 200);
  for (const k of [child.json.key, less.json.key, grand.json.key])
    await waitFor(async () => (await chat(k)).status === 401, { timeoutMs: 3000, what: 'a made key revoked with its maker' });
});

test('an operator makes keys within its own limits and may not change its own key', async () => {
  const op = await createKey(gw, { name: 'bounded-op', role: 'operator', rpm: 5 });
  const over = await api(gw, 'POST', '/admin/keys', { key: op.key, body: { name: 'x', rpm: 50 } });
  assert.equal(over.status, 403, over.text);
  assert.equal(over.json.error.param, 'rpm');
  const within = await api(gw, 'POST', '/admin/keys', { key: op.key, body: { name: 'x' } });
  assert.equal(within.status, 201, within.text);
  assert.equal(within.json.rpm, 5);
  const self = await api(gw, 'PATCH', `/admin/keys/${op.id}`, { key: op.key, body: { rpm: null } });
  assert.equal(self.status, 403, self.text);
  // An admin is not bounded.
  const admin = await api(gw, 'POST', '/admin/keys', { body: { name: 'y', rpm: 500 } });
  assert.equal(admin.status, 201);
});

// --- tenancy: agents and tools reach only the teams that own or share them ---------------------

const team = async (name) => {
  const r = await api(gw, 'POST', '/admin/teams', { body: { name: `${name}-${randomBytes(3).toString('hex')}` } });
  assert.equal(r.status, 201, r.text);
  return r.json;
};
let rpcId = 0;
const send = (key, target, text, skill) => api(gw, 'POST', target, {
  key,
  body: {
    jsonrpc: '2.0', id: ++rpcId, method: 'message/send',
    params: {
      message: { role: 'user', kind: 'message', messageId: randomBytes(8).toString('hex'), parts: [{ kind: 'text', text }], ...(skill ? { metadata: { skill } } : {}) },
      configuration: { blocking: false },
    },
  },
});

test('a key of another team cannot claim a skill and receive this team\'s tasks, nor see or call its agents', async () => {
  const a = await team('team-a');
  const b = await team('team-b');
  const aUser = await createKey(gw, { name: 'a-user', team: a.id });
  const aAgentKey = await createKey(gw, { name: 'a-agent', team: a.id });
  const reg = await api(gw, 'POST', '/admin/agents', { body: { name: 'a-translator', skills: ['translate'], team: a.id, key_id: aAgentKey.id } });
  assert.equal(reg.status, 201, reg.text);
  assert.equal(reg.json.shared, false);
  assert.equal(reg.json.team_id, a.id);
  // Team B's user may register agents, and claims the same skill.
  const bUser = await createKey(gw, { name: 'b-user', team: b.id, permissions: ['register_agents'] });
  const claim = await api(gw, 'POST', '/v1/agents', { key: bUser.key, body: { name: 'b-thief', skills: ['translate'] } });
  assert.equal(claim.status, 201, claim.text);
  assert.equal(claim.json.team_id, b.id);

  const texts = ['one', 'two', 'three', 'four'].map((w) => `secret text of team A ${w}`);
  const ids = [];
  for (const t of texts) {
    const r = await send(aUser.key, '/a2a', t, 'translate');
    assert.equal(r.status, 200, r.text);
    assert.ok(r.json.result?.id, r.text);
    ids.push(r.json.result.id);
  }
  // B's agent is handed nothing; every task sits at A's agent.
  const pulled = await api(gw, 'GET', '/v1/agents/b-thief/tasks?wait_ms=0', { key: bUser.key });
  assert.equal(pulled.status, 204, pulled.text);
  const open = await api(gw, 'GET', '/admin/agents/tasks');
  for (const id of ids) assert.equal(open.json.data.find((t) => t.task.id === id)?.agent, 'a-translator');
  // B's by-skill task goes to B's own agent, never to A's.
  const bSend = await send(bUser.key, '/a2a', 'from b', 'translate');
  const bTask = (await api(gw, 'GET', '/admin/agents/tasks')).json.data.find((t) => t.task.id === bSend.json.result.id);
  assert.equal(bTask.agent, 'b-thief');

  // Listing: each team sees its own agents (and shared ones), never key ids.
  const bList = await api(gw, 'GET', '/v1/agents', { key: bUser.key });
  const bNames = bList.json.data.map((x) => x.name);
  assert.ok(bNames.includes('b-thief') && !bNames.includes('a-translator'), JSON.stringify(bNames));
  assert.ok(bList.json.data.every((x) => x.key_id === undefined));
  const aNames = (await api(gw, 'GET', '/v1/agents', { key: aUser.key })).json.data.map((x) => x.name);
  assert.ok(aNames.includes('a-translator') && !aNames.includes('b-thief'), JSON.stringify(aNames));
  assert.equal((await api(gw, 'GET', '/v1/agents/a-translator', { key: bUser.key })).status, 404);
  // Calling A's agent by name: HTTP 403 with a JSON-RPC error carrying the request's id.
  const direct = await send(bUser.key, '/a2a/a-translator', 'let me in');
  assert.equal(direct.status, 403, direct.text);
  assert.equal(direct.json.jsonrpc, '2.0');
  assert.equal(direct.json.id, rpcId);
  assert.ok(direct.json.error && direct.json.error.code < 0);
  // A team agent's card is not public; the gateway card lists no skill of it.
  assert.equal((await fetch(`${gw.url}/a2a/a-translator/.well-known/agent-card.json`)).status, 404);
  const card = await (await fetch(`${gw.url}/.well-known/agent-card.json`)).json();
  assert.ok(!JSON.stringify(card.skills).includes('translate'), JSON.stringify(card.skills));
  // An agent allow list narrows a key further, even within its team.
  const narrow = await api(gw, 'POST', '/admin/keys', { body: { name: 'narrow', team: a.id, agents: ['b-thief'] } });
  assert.equal(narrow.status, 201, narrow.text);
  assert.equal((await send(narrow.json.key, '/a2a/a-translator', 'x')).status, 403);
  // Without the permission, a key registers nothing.
  assert.equal((await api(gw, 'POST', '/v1/agents', { key: aUser.key, body: { name: 'a-own', skills: ['translate'] } })).status, 403);
});

test('tool allow lists on keys and teams narrow the tools listed and callable', async () => {
  const t = await team('tools-team');
  const onlyEnv = await api(gw, 'POST', '/admin/keys', { body: { name: 'only-env', tools: ['envdump__env'] } });
  assert.equal(onlyEnv.status, 201, onlyEnv.text);
  assert.deepEqual(onlyEnv.json.tools, ['envdump__env']);
  const reg = await register(undefined, { name: 'ev4', command: 'node', args: [EVERYTHING, 'stdio'] });
  assert.equal(reg.status, 201, reg.text);
  await waitFor(async () => (await api(gw, 'GET', '/admin/mcp')).json.data.find((s) => s.name === 'ev4')?.state === 'ready',
    { timeoutMs: 20000, intervalMs: 100, what: 'ev4 ready' });
  const names = (await api(gw, 'GET', '/v1/mcp/tools', { key: onlyEnv.json.key })).json.data.map((x) => x.name);
  assert.deepEqual(names, ['envdump__env']);
  const refused = await api(gw, 'POST', '/v1/mcp/tools/call', { key: onlyEnv.json.key, body: { name: 'ev4__echo', arguments: { message: 'x' } } });
  assert.equal(refused.status, 403, refused.text);
  assert.equal(refused.json.error.code, 'tool_not_allowed');
  // A team's list applies to its keys; a key inside it may not widen it.
  assert.equal((await api(gw, 'PATCH', `/admin/teams/${t.id}`, { body: { tools: ['ev4'] } })).status, 200);
  const member = await createKey(gw, { name: 'member', team: t.id, tools: ['envdump'] });
  await waitFor(async () => (await api(gw, 'GET', '/v1/mcp/tools', { key: member.key })).json.data.length === 0,
    { timeoutMs: 3000, what: 'a key and team list with nothing in common' });
  const teamOnly = await createKey(gw, { name: 'team-only', team: t.id });
  const tn = (await api(gw, 'GET', '/v1/mcp/tools', { key: teamOnly.key })).json.data.map((x) => x.name);
  assert.ok(tn.length > 0 && tn.every((n) => n.startsWith('ev4__')), JSON.stringify(tn));
  // /mcp answers the same lists.
  const mcp = await api(gw, 'POST', '/mcp', { key: onlyEnv.json.key, headers: { accept: 'application/json, text/event-stream' }, body: { jsonrpc: '2.0', id: 1, method: 'tools/list' } });
  assert.deepEqual(mcp.json.result.tools.map((x) => x.name), ['envdump__env']);
  assert.equal((await api(gw, 'DELETE', '/admin/mcp/ev4')).status, 200);
});

test('allow lists and permissions that name nothing real are a 400 naming the field', async () => {
  for (const [body, param] of [[{ permissions: ['root'] }, 'permissions'], [{ agents: ['no-such-agent'] }, 'agents'],
    [{ tools: ['no-such-server'] }, 'tools'], [{ tools: ['envdump__no-such-tool'] }, 'tools'], [{ agents: 'x' }, 'agents']]) {
    const r = await api(gw, 'POST', '/admin/keys', { body: { name: 'bad', ...body } });
    assert.equal(r.status, 400, `${JSON.stringify(body)}: ${r.text}`);
    assert.equal(r.json.error.param, param, r.text);
  }
  const t = await team('bad-lists');
  const r = await api(gw, 'PATCH', `/admin/teams/${t.id}`, { body: { agents: ['no-such-agent'] } });
  assert.equal(r.status, 400);
  assert.equal(r.json.error.param, 'agents');
  // A self-made key cannot grant itself a permission its maker lacks.
  const u = await api(gw, 'POST', '/admin/users', { body: { name: `perm-${randomBytes(3).toString('hex')}` } });
  const k = await createKey(gw, { name: 'p', user_id: u.json.id });
  const mint = await api(gw, 'POST', '/v1/me/keys', { key: k.key, body: { name: 'pp', permissions: ['register_agents'] } });
  assert.equal(mint.status, 403, mint.text);
  assert.equal(mint.json.error.param, 'permissions');
});
