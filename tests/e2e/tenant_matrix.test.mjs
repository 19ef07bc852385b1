// The tenant matrix: one table of every endpoint lowart serves (method and path pattern,
// as `lowart --routes` prints the route table of net/routing.hpp) with the status each
// caller must get when it touches team A's resources — the master key; admin, operator,
// viewer and user keys of team A; team A's agent key (permission register_agents); a user
// key of team B; no key. The test fails when a route exists that the table does not list
// (or the table lists one that does not exist), so a new endpoint cannot ship without
// deciding who may reach it. Issue 18 (least privilege) is the rule book: a key of another
// team never reads team A's keys, usage, jobs, tool calls, tasks or agents; /admin is the
// role table of actors/admin/rbac.cpp; viewers read, operators write most, only admins touch
// users and teams.
//
// Cells marked bug(...) are what lowart SHOULD answer but does not yet: they are checked
// and listed by the last test (a todo test, so they do not fail the suite) — when one
// passes, drop its mark.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  LOWART_BIN, api, cleanupAll, createKey, run, startGateway, startMock, tempDir, waitFor,
} from './harness.mjs';
import { spawnComfyMock } from './comfyui_mock.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const EVERYTHING = path.join(here, 'node_modules/@modelcontextprotocol/server-everything/dist/index.js');
const EXAMPLES = path.resolve(here, '../../config/scripts');

/** The callers, in the order of the table's columns. */
const CALLERS = ['master', 'admin', 'operator', 'viewer', 'user', 'agent', 'other', 'none'];
const KEYED = CALLERS.filter((c) => c !== 'none');

let mock;
let comfy;
let gw;
const keys = {}; // caller -> { id, key } (master: { key }, none: { key: null })
const R = {};    // team A's resources (and the teams, users)

const uniq = (prefix) => `${prefix}-${randomBytes(4).toString('hex')}`;

/** One request as `caller` (no redirects followed); resolves { status, headers, json, text }. */
const send = (caller, method, p, opts = {}) => api(gw, method, p, { ...opts, key: keys[caller]?.key ?? null, redirect: 'manual' });

/** A setup call with the master key that must answer `status`; returns the JSON body. */
async function must(method, p, body, status = method === 'POST' ? 201 : 200) {
  const r = await send('master', method, p, { body });
  if (r.status !== status) throw new Error(`setup: ${method} ${p} answered ${r.status}, expected ${status}: ${r.text}`);
  return r.json;
}

// --- cells -------------------------------------------------------------------------------------
//
// A cell is a status (200 on a `sees` row also means team A's resource is in the answer;
// 200 on an `rpc` row means a JSON-RPC result; 4xx/5xx carry an error envelope), 'hidden'
// (200 without team A's resource), 'rpc-error' (HTTP 200 carrying a JSON-RPC error),
// any(...) (one of), or bug(want, why) (SHOULD be `want`; see the header).

const any = (...alts) => ({ any: alts });
const bug = (want, why) => ({ want, bug: why });
/** Every caller with a key gets `v`, no key 401; `over` sets single callers. */
const every = (v, over = {}) => ({ ...Object.fromEntries(KEYED.map((c) => [c, v])), none: 401, ...over });
/** A public endpoint: every caller, with a key or without, gets `v`. */
const open = (v) => ({ ...every(v), none: v });
/** The admin API (actors/admin/rbac.cpp): who may, gets `ok`; other keys 403; no key 401. */
const viewers = (ok) => every(403, { master: ok, admin: ok, operator: ok, viewer: ok });
const operators = (ok) => every(403, { master: ok, admin: ok, operator: ok });
const admins = (ok) => every(403, { master: ok, admin: ok });
/** Team A's own keys get `a`, team B's key `b`. */
const teams = (a, b) => every(a, { other: b });

function verdict(row, want, r) {
  if (want && typeof want === 'object' && 'bug' in want) return verdict(row, want.want, r);
  if (want && typeof want === 'object' && 'any' in want) {
    const misses = want.any.map((w) => verdict(row, w, r));
    return misses.some((m) => m === null) ? null : misses.join(' / ');
  }
  if (want === 'hidden') {
    if (r.status !== 200) return `expected 200 (without team A's resource), got ${r.status}`;
    return row.sees(r.json) ? "200 but team A's resource is in the answer" : null;
  }
  if (want === 'rpc-error') {
    if (r.status !== 200) return `expected 200 with a JSON-RPC error, got ${r.status}`;
    return r.json?.error ? null : 'expected a JSON-RPC error, got a result';
  }
  if (r.status !== want) return `expected ${want}, got ${r.status}`;
  if (want === 200 && row.rpc && (!r.json || r.json.error || !('result' in r.json)))
    return 'expected a JSON-RPC result';
  if (want === 200 && row.sees && !row.sees(r.json)) return "200 but team A's resource is missing";
  if (want >= 400 && !r.json?.error) return `${want} without an error envelope`;
  return null;
}

// --- requests that make fresh resources (each cell of a write gets its own) -------------------

const freshKey = async (extra = {}) => createKey(gw, { name: uniq('mx-key'), team: R.teamA.id, ...extra });
const freshTeam = async () => must('POST', '/admin/teams', { name: uniq('mx-team') });
const freshUser = async () => must('POST', '/admin/users', { name: uniq('mx-user'), team: R.teamA.id });
const deployments = (model = 'mock-model') => [{ provider: 'mock', model }];
const freshModel = async () => {
  const name = uniq('mx-model');
  await must('POST', '/admin/models', { name, deployments: deployments() });
  return name;
};
const freshProvider = async () => {
  const name = uniq('mx-prov');
  await must('POST', '/admin/providers', { name, kind: 'openai', base_url: `${mock.url}/v1` });
  return name;
};
const freshAgent = async () => {
  const name = uniq('mx-agent');
  await must('POST', '/admin/agents', { name, skills: ['mx-spare'], key_id: keys.agent.id, team: R.teamA.id });
  return name;
};
/** A tool call of team A's user that waits for approval: its approval id. */
const freshApproval = async () => {
  const r = await send('user', 'POST', '/v1/mcp/tools/call', { body: { name: 'ev__echo', arguments: { message: 'approve me' } } });
  if (r.status !== 202) throw new Error(`setup: a confirm call answered ${r.status}: ${r.text}`);
  return r.json.approval_id;
};
const rpcBody = (method, params) => ({ jsonrpc: '2.0', id: randomUUID(), method, params });
const message = (text, metadata) => ({
  role: 'user', kind: 'message', messageId: randomUUID(), parts: [{ kind: 'text', text }], ...(metadata ? { metadata } : {}),
});
const nonBlocking = { blocking: false };

const chat = { model: 'gpt-demo', messages: [{ role: 'user', content: 'hello' }] };
const messages = { model: 'gpt-demo', max_tokens: 16, messages: [{ role: 'user', content: 'hello' }] };
const responseBody = { model: 'gpt-demo', input: 'hello' };
/** A stored response of team A's user: its id. */
const freshResponse = async () => {
  const r = await send('user', 'POST', '/v1/responses', { body: responseBody });
  if (r.status !== 200) throw new Error(`setup: a response answered ${r.status}: ${r.text}`);
  return r.json.id;
};
const has = (list, pred) => Array.isArray(list?.data) && list.data.some(pred);

// --- the table -----------------------------------------------------------------------------------
//
// Key: "METHOD /pattern" as `lowart --routes` names it; " #what" after it adds another row
// for the same route. `req(caller)` gives { path, body?, headers? } (it may make fresh
// resources first).

const MATRIX = {
  // Probes, metrics, the console: public.
  'GET /healthz': { req: () => ({ path: '/healthz' }), expect: open(200) },
  'HEAD /healthz': { req: () => ({ path: '/healthz' }), expect: open(200) },
  'GET /readyz': { req: () => ({ path: '/readyz' }), expect: open(200) },
  'HEAD /readyz': { req: () => ({ path: '/readyz' }), expect: open(200) },
  'GET /metrics': { req: () => ({ path: '/metrics' }), expect: open(200) },
  'HEAD /metrics': { req: () => ({ path: '/metrics' }), expect: open(200) },
  'GET /ui': { req: () => ({ path: '/ui' }), expect: open(308) },
  'HEAD /ui': { req: () => ({ path: '/ui' }), expect: open(308) },
  'GET /ui/{file*}': { req: () => ({ path: '/ui/' }), expect: open(200) },
  'HEAD /ui/{file*}': { req: () => ({ path: '/ui/keys' }), expect: open(200) },

  // Models: any key; the model is no team's.
  'POST /v1/chat/completions': { req: () => ({ path: '/v1/chat/completions', body: chat }), expect: every(200) },
  'POST /chat/completions': { req: () => ({ path: '/chat/completions', body: chat }), expect: every(200) },
  'POST /v1/embeddings': { req: () => ({ path: '/v1/embeddings', body: { model: 'gpt-demo', input: 'hello' } }), expect: every(200) },
  'POST /embeddings': { req: () => ({ path: '/embeddings', body: { model: 'gpt-demo', input: 'hello' } }), expect: every(200) },
  'GET /v1/models': { req: () => ({ path: '/v1/models' }), expect: every(200), sees: (j) => has(j, (m) => m.id === 'gpt-demo') },
  'GET /models': { req: () => ({ path: '/models' }), expect: every(200) },
  'POST /v1/messages': { req: () => ({ path: '/v1/messages', body: messages }), expect: every(200) },
  'POST /messages': { req: () => ({ path: '/messages', body: messages }), expect: every(200) },
  'POST /v1/messages/count_tokens': { req: () => ({ path: '/v1/messages/count_tokens', body: messages }), expect: every(200) },
  'POST /messages/count_tokens': { req: () => ({ path: '/messages/count_tokens', body: messages }), expect: every(200) },
  // The Responses API: a stored response is its key's alone (404 for every other key, the master key too).
  'POST /v1/responses': { req: () => ({ path: '/v1/responses', body: responseBody }), expect: every(200) },
  'POST /responses': { req: () => ({ path: '/responses', body: responseBody }), expect: every(200) },
  'POST /v1/responses #continues a stored response': {
    req: () => ({ path: '/v1/responses', body: { ...responseBody, previous_response_id: R.response.id } }),
    expect: every(404, { user: 200 }),
  },
  'GET /v1/responses/{id}': { req: () => ({ path: `/v1/responses/${R.response.id}` }), expect: every(404, { user: 200 }) },
  'GET /responses/{id}': { req: () => ({ path: `/responses/${R.response.id}` }), expect: every(404, { user: 200 }) },
  'DELETE /v1/responses/{id}': {
    req: async () => ({ path: `/v1/responses/${await freshResponse()}` }), expect: every(404, { user: 200 }),
  },
  'DELETE /responses/{id}': {
    req: async () => ({ path: `/responses/${await freshResponse()}` }), expect: every(404, { user: 200 }),
  },
  'GET /v1/responses/{id}/input_items': {
    req: () => ({ path: `/v1/responses/${R.response.id}/input_items` }), expect: every(404, { user: 200 }),
  },
  'GET /responses/{id}/input_items': {
    req: () => ({ path: `/responses/${R.response.id}/input_items` }), expect: every(404, { user: 200 }),
  },

  // Jobs belong to the key that made them (team A's user); the master key sees all.
  'GET /v1/jobs': {
    req: () => ({ path: '/v1/jobs' }), sees: (j) => has(j, (x) => x.id === R.job.id),
    expect: every('hidden', { master: 200, user: 200 }),
  },
  'GET /jobs': {
    req: () => ({ path: '/jobs' }), sees: (j) => has(j, (x) => x.id === R.job.id),
    expect: every('hidden', { master: 200, user: 200 }),
  },
  'POST /v1/jobs': { req: () => ({ path: '/v1/jobs', body: { model: 'sdxl', input: { prompt: 'matrix', steps: 1 } } }), expect: every(202) },
  'POST /jobs': { req: () => ({ path: '/jobs', body: { model: 'sdxl', input: { prompt: 'matrix', steps: 1 } } }), expect: every(202) },
  'GET /v1/jobs/{id}': { req: () => ({ path: `/v1/jobs/${R.job.id}` }), expect: every(404, { master: 200, user: 200 }) },
  // The job has finished: its owner learns that (409), others learn nothing (404).
  'DELETE /v1/jobs/{id}': { req: () => ({ path: `/v1/jobs/${R.job.id}` }), expect: every(404, { master: 409, user: 409 }) },
  'GET /v1/jobs/{id}/files/{file}': {
    req: () => ({ path: `/v1/jobs/${R.job.id}/files/${R.job.files[0].name}` }), expect: every(404, { master: 200, user: 200 }),
  },
  'POST /v1/images/generations': {
    req: () => ({ path: '/v1/images/generations', body: { model: 'sdxl', prompt: 'matrix', async: true } }), expect: every(202),
  },
  'POST /images/generations': {
    req: () => ({ path: '/images/generations', body: { model: 'sdxl', prompt: 'matrix', async: true } }), expect: every(202),
  },

  // Tools. A call belongs to its key; admins and operators read every call.
  'GET /v1/mcp/tools': { req: () => ({ path: '/v1/mcp/tools' }), expect: every(200), sees: (j) => has(j, (t) => t.name === 'ev__get-sum') },
  'POST /v1/mcp/tools/call': {
    req: () => ({ path: '/v1/mcp/tools/call', body: { name: 'ev__get-sum', arguments: { a: 1, b: 2 } } }), expect: every(200),
  },
  'GET /v1/mcp/calls/{id}': {
    req: () => ({ path: `/v1/mcp/calls/${R.approval}` }),
    expect: every(404, { master: 200, admin: 200, operator: 200, user: 200 }),
  },
  'POST /mcp': {
    rpc: true,
    req: () => ({
      path: '/mcp',
      headers: { accept: 'application/json, text/event-stream' },
      body: rpcBody('initialize', { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'matrix', version: '1' } }),
    }),
    expect: every(200),
  },
  'DELETE /mcp': { req: () => ({ path: '/mcp' }), expect: every(200) },

  // The agent bus. Cards are public; team A's agent is for team A's keys.
  'GET /.well-known/agent-card.json': { req: () => ({ path: '/.well-known/agent-card.json' }), expect: open(200) },
  // A team's agent is not shared: its card is no one's business outside the team.
  'GET /a2a/{name}/.well-known/agent-card.json': {
    req: () => ({ path: `/a2a/${R.agent}/.well-known/agent-card.json` }),
    expect: { ...open(404), ...Object.fromEntries(['master', 'admin', 'operator', 'viewer', 'user', 'agent'].map((c) => [c, 200])) },
  },
  'POST /a2a': {
    rpc: true,
    req: () => ({ path: '/a2a', body: rpcBody('message/send', { message: message('by skill', { skill: 'mx-skill' }), configuration: nonBlocking }) }),
    expect: teams(200, any('rpc-error', 403)),
  },
  'POST /a2a #tasks/get of team A user\'s task': {
    rpc: true,
    req: () => ({ path: '/a2a', body: rpcBody('tasks/get', { id: R.task }) }),
    expect: every('rpc-error', { master: 200, admin: 200, operator: 200, user: 200 }),
  },
  'POST /a2a/{name}': {
    rpc: true,
    req: () => ({ path: `/a2a/${R.agent}`, body: rpcBody('message/send', { message: message('by name'), configuration: nonBlocking }) }),
    expect: teams(200, 403),
  },
  'GET /v1/agents': {
    req: () => ({ path: '/v1/agents' }), sees: (j) => has(j, (a) => a.name === R.agent),
    expect: teams(200, 'hidden'),
  },
  // Registering needs the admin API's roles or the permission register_agents.
  'POST /v1/agents': {
    req: () => ({ path: '/v1/agents', body: { name: uniq('mx-self'), skills: ['mx-self'] } }),
    expect: every(403, { master: 201, admin: 201, operator: 201, agent: 201 }),
  },
  'GET /v1/agents/{name}': {
    req: () => ({ path: `/v1/agents/${R.agent}` }),
    expect: teams(200, any(403, 404)),
  },
  'DELETE /v1/agents/{name}': {
    req: async () => ({ path: `/v1/agents/${await freshAgent()}` }),
    expect: every(200, { viewer: 403, user: 403, other: any(403, 404) }),
  },
  'GET /v1/agents/{name}/tasks': {
    req: () => ({ path: `/v1/agents/${R.agent}/tasks?wait_ms=0` }),
    expect: every(403, { master: any(200, 204), admin: any(200, 204), operator: any(200, 204), agent: any(200, 204) }),
  },
  'POST /v1/agents/{name}/tasks/{id}/ack': {
    req: () => ({ path: `/v1/agents/${R.agent}/tasks/${R.task}/ack` }),
    expect: every(403, { master: 200, admin: 200, operator: 200, agent: 200 }),
  },
  'POST /v1/agents/{name}/tasks/{id}/status': {
    req: () => ({ path: `/v1/agents/${R.agent}/tasks/${R.task}/status`, body: { state: 'working' } }),
    expect: every(403, { master: 200, admin: 200, operator: 200, agent: 200 }),
  },

  // Self-service: only the caller's own keys and usage; the master key has none (400).
  'GET /v1/me': { req: () => ({ path: '/v1/me' }), expect: every(200) },
  'GET /v1/me/keys': {
    req: () => ({ path: '/v1/me/keys' }), sees: (j) => has(j, (k) => k.id === R.key.id),
    expect: every('hidden', { master: 400, user: 200 }),
  },
  // A key of no user may not mint keys (403).
  'POST /v1/me/keys': { req: () => ({ path: '/v1/me/keys', body: { name: uniq('mx-self-key') } }), expect: every(403, { master: 400, user: 201, other: 201 }) },
  'DELETE /v1/me/keys/{id}': {
    req: async () => ({ path: `/v1/me/keys/${(await freshKey({ user_id: R.userA.id })).id}` }),
    expect: every(404, { master: 400, user: 200 }),
  },
  'GET /v1/me/usage': { req: () => ({ path: '/v1/me/usage' }), expect: every(200, { master: 400 }) },

  // The admin API: the role table, whatever the team.
  'GET /admin/teams': { req: () => ({ path: '/admin/teams' }), expect: viewers(200), sees: (j) => has(j, (t) => t.id === R.teamA.id) },
  'POST /admin/teams': { req: () => ({ path: '/admin/teams', body: { name: uniq('mx-new-team') } }), expect: admins(201) },
  'GET /admin/teams/{id}': { req: () => ({ path: `/admin/teams/${R.teamA.id}` }), expect: viewers(200) },
  'PUT /admin/teams/{id}': { req: async () => ({ path: `/admin/teams/${(await freshTeam()).id}`, body: { rpm: 7 } }), expect: admins(200) },
  'PATCH /admin/teams/{id}': { req: async () => ({ path: `/admin/teams/${(await freshTeam()).id}`, body: { name: uniq('mx-renamed') } }), expect: admins(200) },
  'DELETE /admin/teams/{id}': { req: async () => ({ path: `/admin/teams/${(await freshTeam()).id}` }), expect: admins(200) },
  'GET /admin/users': { req: () => ({ path: '/admin/users' }), expect: viewers(200), sees: (j) => has(j, (u) => u.id === R.userA.id) },
  'POST /admin/users': { req: () => ({ path: '/admin/users', body: { name: uniq('mx-new-user'), team: R.teamA.id } }), expect: admins(201) },
  'GET /admin/users/{id}': { req: () => ({ path: `/admin/users/${R.userA.id}` }), expect: viewers(200) },
  'PUT /admin/users/{id}': { req: async () => ({ path: `/admin/users/${(await freshUser()).id}`, body: { name: uniq('mx-put') } }), expect: admins(200) },
  'PATCH /admin/users/{id}': { req: async () => ({ path: `/admin/users/${(await freshUser()).id}`, body: { name: uniq('mx-patch') } }), expect: admins(200) },
  'DELETE /admin/users/{id}': { req: async () => ({ path: `/admin/users/${(await freshUser()).id}` }), expect: admins(200) },
  'GET /admin/keys': { req: () => ({ path: '/admin/keys' }), expect: viewers(200), sees: (j) => has(j, (k) => k.id === R.key.id) },
  'POST /admin/keys': { req: () => ({ path: '/admin/keys', body: { name: uniq('mx-new-key'), role: 'user', team: R.teamA.id } }), expect: operators(201) },
  'GET /admin/keys/{id}': { req: () => ({ path: `/admin/keys/${R.key.id}` }), expect: viewers(200) },
  'PUT /admin/keys/{id}': { req: async () => ({ path: `/admin/keys/${(await freshKey()).id}`, body: { name: uniq('mx-put') } }), expect: operators(200) },
  'PATCH /admin/keys/{id}': { req: async () => ({ path: `/admin/keys/${(await freshKey()).id}`, body: { rpm: 5 } }), expect: operators(200) },
  'POST /admin/keys/{id}/rotate': { req: async () => ({ path: `/admin/keys/${(await freshKey()).id}/rotate` }), expect: operators(200) },
  'DELETE /admin/keys/{id}': { req: async () => ({ path: `/admin/keys/${(await freshKey()).id}` }), expect: operators(200) },
  // (models before providers, as in rbac.test.mjs)
  'GET /admin/models': { req: () => ({ path: '/admin/models' }), expect: viewers(200) },
  'POST /admin/models': { req: () => ({ path: '/admin/models', body: { name: uniq('mx-new-model'), deployments: deployments() } }), expect: operators(201) },
  'GET /admin/models/{name}': { req: () => ({ path: '/admin/models/gpt-demo' }), expect: viewers(200) },
  'PUT /admin/models/{name}': { req: async () => ({ path: `/admin/models/${await freshModel()}`, body: { deployments: deployments('mock-model-2') } }), expect: operators(200) },
  'PATCH /admin/models/{name}': { req: async () => ({ path: `/admin/models/${await freshModel()}`, body: { deployments: deployments('mock-model-3') } }), expect: operators(200) },
  'DELETE /admin/models/{name}': { req: async () => ({ path: `/admin/models/${await freshModel()}` }), expect: operators(200) },
  'GET /admin/providers': { req: () => ({ path: '/admin/providers' }), expect: viewers(200) },
  'POST /admin/providers': {
    req: () => ({ path: '/admin/providers', body: { name: uniq('mx-new-prov'), kind: 'openai', base_url: `${mock.url}/v1` } }),
    expect: operators(201),
  },
  'GET /admin/providers/{name}': { req: () => ({ path: '/admin/providers/mock' }), expect: viewers(200) },
  'PUT /admin/providers/{name}': { req: async () => ({ path: `/admin/providers/${await freshProvider()}`, body: { connect_timeout_ms: 1500 } }), expect: operators(200) },
  'PATCH /admin/providers/{name}': { req: async () => ({ path: `/admin/providers/${await freshProvider()}`, body: { verify_tls: true } }), expect: operators(200) },
  'DELETE /admin/providers/{name}': { req: async () => ({ path: `/admin/providers/${await freshProvider()}` }), expect: operators(200) },
  'GET /admin/prices': { req: () => ({ path: '/admin/prices' }), expect: viewers(200) },
  'GET /admin/prices/{model}': { req: () => ({ path: '/admin/prices/gpt-demo' }), expect: viewers(200) },
  'PUT /admin/prices/{model}': { req: () => ({ path: `/admin/prices/${uniq('mx-priced')}`, body: { input_per_1m: 1 } }), expect: operators(201) },
  'PATCH /admin/prices/{model}': { req: () => ({ path: '/admin/prices/gpt-demo', body: { output_per_1m: 2 } }), expect: operators(200) },
  'DELETE /admin/prices/{model}': {
    req: async () => {
      const model = uniq('mx-unpriced');
      await must('PUT', `/admin/prices/${model}`, { input_per_1m: 1 }, 201);
      return { path: `/admin/prices/${model}` };
    },
    expect: operators(200),
  },
  'GET /admin/audit': { req: () => ({ path: '/admin/audit?limit=5' }), expect: viewers(200) },
  'GET /admin/usage': { req: () => ({ path: '/admin/usage?group_by=team' }), expect: viewers(200) },
  'GET /admin/logs': { req: () => ({ path: '/admin/logs?limit=5' }), expect: viewers(200) },
  'GET /admin/logs/{request_id}': { req: () => ({ path: '/admin/logs/no-such-request' }), expect: viewers(404) },
  'GET /admin/breakers': { req: () => ({ path: '/admin/breakers' }), expect: viewers(200) },
  'GET /admin/mcp': { req: () => ({ path: '/admin/mcp' }), expect: viewers(200), sees: (j) => has(j, (s) => s.name === 'ev') },
  'POST /admin/mcp/register': {
    req: () => ({ path: '/admin/mcp/register', body: { name: uniq('mx-ev'), command: 'node', args: [EVERYTHING, 'stdio'] } }),
    expect: operators(201),
  },
  'DELETE /admin/mcp/{name}': {
    req: async () => {
      const name = uniq('mx-doomed');
      await must('POST', '/admin/mcp/register', { name, command: 'node', args: [EVERYTHING, 'stdio'] });
      return { path: `/admin/mcp/${name}` };
    },
    expect: operators(200),
  },
  'GET /admin/mcp/policies': { req: () => ({ path: '/admin/mcp/policies' }), expect: viewers(200) },
  'POST /admin/mcp/policies': { req: () => ({ path: '/admin/mcp/policies', body: { tool: `ev__${uniq('mx')}`, policy: 'auto' } }), expect: operators(201) },
  'DELETE /admin/mcp/policies/{id}': {
    req: async () => ({ path: `/admin/mcp/policies/${(await must('POST', '/admin/mcp/policies', { tool: `ev__${uniq('mx')}`, policy: 'deny' })).id}` }),
    expect: operators(200),
  },
  'GET /admin/approvals': { req: () => ({ path: '/admin/approvals' }), expect: viewers(200), sees: (j) => has(j, (a) => a.approval_id === R.approval) },
  'GET /admin/approvals/{id}': { req: () => ({ path: `/admin/approvals/${R.approval}` }), expect: viewers(200) },
  'POST /admin/approvals/{id}/approve': {
    req: async () => ({ path: `/admin/approvals/${await freshApproval()}/approve`, body: { scope: 'call' } }), expect: operators(200),
  },
  'POST /admin/approvals/{id}/deny': { req: async () => ({ path: `/admin/approvals/${await freshApproval()}/deny` }), expect: operators(200) },
  'GET /admin/scripts': { req: () => ({ path: '/admin/scripts' }), expect: viewers(200) },
  'GET /admin/scripts/{name}': { req: () => ({ path: '/admin/scripts/comfyui_txt2img.lua' }), expect: viewers(200) },
  'PUT /admin/scripts/{name}': { req: () => ({ path: `/admin/scripts/${uniq('mx')}.json`, body: '{"a":1}' }), expect: operators(200) },
  'POST /admin/scripts/{name}': { req: () => ({ path: `/admin/scripts/${uniq('mx')}.json`, body: '{"b":2}' }), expect: operators(200) },
  'DELETE /admin/scripts/{name}': {
    req: async () => {
      const name = `${uniq('mx-doomed')}.json`;
      await must('PUT', `/admin/scripts/${name}`, '{"c":3}', 200);
      return { path: `/admin/scripts/${name}` };
    },
    expect: operators(200),
  },
  'GET /admin/jobs': { req: () => ({ path: '/admin/jobs' }), expect: viewers(200), sees: (j) => has(j, (x) => x.id === R.job.id) },
  'GET /admin/jobs/{id}': { req: () => ({ path: `/admin/jobs/${R.job.id}` }), expect: viewers(200) },
  'DELETE /admin/jobs/{id}': { req: () => ({ path: `/admin/jobs/${R.job.id}` }), expect: operators(409) },
  'GET /admin/jobs/{id}/files/{file}': { req: () => ({ path: `/admin/jobs/${R.job.id}/files/${R.job.files[0].name}` }), expect: viewers(200) },
  'GET /admin/agents': { req: () => ({ path: '/admin/agents' }), expect: viewers(200), sees: (j) => has(j, (a) => a.name === R.agent) },
  'POST /admin/agents': { req: () => ({ path: '/admin/agents', body: { name: uniq('mx-admin-agent'), skills: ['mx-spare'] } }), expect: operators(201) },
  'GET /admin/agents/tasks': { req: () => ({ path: '/admin/agents/tasks' }), expect: viewers(200) },
  'GET /admin/agents/dead-letters': { req: () => ({ path: '/admin/agents/dead-letters' }), expect: viewers(200) },
  // (a2a_faults.test.mjs replays a real dead letter; here the role check on an unknown one)
  'POST /admin/agents/dead-letters/{id}/replay': { req: () => ({ path: `/admin/agents/dead-letters/${randomUUID()}/replay` }), expect: operators(404) },
  'GET /admin/agents/{name}': { req: () => ({ path: `/admin/agents/${R.agent}` }), expect: viewers(200) },
  'DELETE /admin/agents/{name}': { req: async () => ({ path: `/admin/agents/${await freshAgent()}` }), expect: operators(200) },
};

const routeOf = (row) => row.split(' #')[0];

// --- the gateway and team A's resources ------------------------------------------------------------

let routes; // from `lowart --routes`

before(async () => {
  const printed = await run(LOWART_BIN, ['--routes']);
  assert.equal(printed.code, 0, printed.stderr);
  routes = printed.stdout.split('\n').filter((l) => l.trim()).map((l) => JSON.parse(l));

  const dir = await tempDir();
  const ui = path.join(dir, 'ui');
  await fsp.mkdir(path.join(dir, 'scripts'));
  await fsp.mkdir(ui);
  await fsp.writeFile(path.join(ui, 'index.html'), '<!doctype html><title>matrix</title>');
  for (const f of ['comfyui_txt2img.lua', 'txt2img.json'])
    await fsp.copyFile(path.join(EXAMPLES, f), path.join(dir, 'scripts', f));
  mock = await startMock();
  comfy = await spawnComfyMock({ stepMs: 5, concurrency: 2 });
  gw = await startGateway({
    dir,
    config: `
[server]
listen = "127.0.0.1:3000"
[scripts]
dir = "${path.join(dir, 'scripts')}"
[jobs]
dir = "${path.join(dir, 'jobs')}"
poll_ms = 40
[mcp]
allowed_commands = ["node"]
[a2a]
ack_timeout_ms = 120000
lease_ms = 120000
[[providers]]
name = "mock"
kind = "openai"
base_url = "${mock.url}/v1"
api_key_env = "MOCK_API_KEY"
[[providers]]
name = "comfy"
kind = "comfyui"
base_url = "${comfy.url}"
[[models]]
name = "gpt-demo"
[[models.deployments]]
provider = "mock"
model = "mock-model"
[[models]]
name = "sdxl"
script = "comfyui_txt2img.lua"
workflow = "txt2img.json"
[[models.deployments]]
provider = "comfy"
model = "sdxl"
`,
    env: { MOCK_API_KEY: 'sk-upstream-matrix', LOWART_UI_DIR: ui, LOWART_ENCRYPTION_KEY: randomBytes(32).toString('hex') },
  });
  keys.master = { key: gw.masterKey };
  keys.none = { key: null };

  R.teamA = await must('POST', '/admin/teams', { name: 'team-a' });
  R.teamB = await must('POST', '/admin/teams', { name: 'team-b' });
  R.userA = await must('POST', '/admin/users', { name: 'ada@a.example', team: R.teamA.id });
  R.userB = await must('POST', '/admin/users', { name: 'bob@b.example', team: R.teamB.id });
  for (const role of ['admin', 'operator', 'viewer'])
    keys[role] = await createKey(gw, { name: `a-${role}`, role, team: R.teamA.id });
  keys.user = await createKey(gw, { name: 'a-user', role: 'user', team: R.teamA.id, user_id: R.userA.id });
  keys.agent = await createKey(gw, { name: 'a-agent', role: 'user', team: R.teamA.id, permissions: ['register_agents'] });
  keys.other = await createKey(gw, { name: 'b-user', role: 'user', team: R.teamB.id, user_id: R.userB.id });

  // Team A's resources: a key, a finished job, a pending tool call, an agent, a task.
  await must('PUT', '/admin/prices/gpt-demo', { input_per_1m: 1 }, 201);
  R.key = await createKey(gw, { name: 'a-user-second', role: 'user', team: R.teamA.id, user_id: R.userA.id });
  const job = await send('user', 'POST', '/v1/jobs', { body: { model: 'sdxl', input: { prompt: 'team a', steps: 1 } } });
  assert.equal(job.status, 202, job.text);
  R.job = await waitFor(async () => {
    const j = (await send('user', 'GET', `/v1/jobs/${job.json.id}`)).json;
    if (j?.status === 'failed' || j?.status === 'cancelled') throw Object.assign(new Error(JSON.stringify(j)), { fatal: true });
    return j?.status === 'succeeded' && j;
  }, { timeoutMs: 15000, what: "team A's job" });
  R.response = { id: await freshResponse() };
  await must('POST', '/admin/mcp/register', { name: 'ev', command: 'node', args: [EVERYTHING, 'stdio'] });
  await must('POST', '/admin/mcp/policies', { tool: 'ev__echo', policy: 'confirm', key_id: keys.user.id });
  await waitFor(async () => (await must('GET', '/admin/mcp')).data.find((s) => s.name === 'ev')?.state === 'ready',
    { timeoutMs: 20000, intervalMs: 100, what: 'MCP server ev ready' });
  R.approval = await freshApproval();
  R.agent = 'agent-a';
  await must('POST', '/admin/agents', { name: R.agent, skills: ['mx-skill'], key_id: keys.agent.id, team: R.teamA.id });
  const task = await send('user', 'POST', `/a2a/${R.agent}`, {
    body: rpcBody('message/send', { message: message('team a task'), configuration: nonBlocking }),
  });
  assert.equal(task.status, 200, task.text);
  R.task = task.json?.result?.id;
  assert.ok(R.task, task.text);
});

after(async () => {
  await comfy?.stop();
  await cleanupAll();
});

// --- the tests -------------------------------------------------------------------------------------

test('the table lists every route lowart serves, and only those (lowart --routes)', () => {
  const served = new Set(routes.flatMap((r) => r.methods.map((m) => `${m} ${r.path}`)));
  const listed = new Set(Object.keys(MATRIX).map(routeOf));
  const missing = [...served].filter((r) => !listed.has(r));
  const extra = [...listed].filter((r) => !served.has(r));
  assert.deepEqual(missing, [], `routes without a row in MATRIX:\n${missing.join('\n')}`);
  assert.deepEqual(extra, [], `rows for routes lowart does not serve:\n${extra.join('\n')}`);
  // A route's auth kind and its rows agree: a key route is 401 without a key, a public one never.
  const auth = Object.fromEntries(routes.map((r) => [r.path, r.auth]));
  const mismatched = Object.entries(MATRIX).filter(([k, row]) => (row.expect.none === 401) !== (auth[routeOf(k).split(' ')[1]] === 'key'));
  assert.deepEqual(mismatched.map(([k]) => k), [], 'rows whose no-key cell contradicts the route\'s auth kind');
});

test('before any key is looked at, a path the table lacks is 404 and a method it lacks is 405', async () => {
  const wrong = [];
  for (const r of routes) {
    const method = ['PATCH', 'PUT', 'DELETE', 'POST', 'GET'].find((m) => !r.methods.includes(m));
    const p = r.path.replace(/\{[^}]+\}/g, 'x1');
    const res = await send('none', method, p);
    const allow = res.headers.get('allow');
    if (res.status !== 405 || allow !== r.methods.join(', ') || !res.json?.error)
      wrong.push(`${method} ${p}: ${res.status} allow=${allow} ${res.text.slice(0, 120)}`);
  }
  for (const p of ['/v1/nothing', '/admin/nothing', '/admin/keys/x/y', '/v1/me/x', '/v1/jobs/x/y', '/v1/agents/x/y',
    '/v1/mcp/calls/', '/a2a/x/y', '/agents', '/ui2', '/v1/models/']) {
    const res = await send('none', 'GET', p);
    if (res.status !== 404 || !res.json?.error) wrong.push(`GET ${p}: ${res.status} ${res.text.slice(0, 120)}`);
  }
  assert.deepEqual(wrong, [], wrong.join('\n'));
});

const knownBugs = [];

for (const [row, spec] of Object.entries(MATRIX)) {
  test(`${row}: every caller on team A's resource`, async () => {
    const [method] = row.split(' ');
    const wrong = [];
    for (const caller of CALLERS) {
      const want = spec.expect[caller];
      assert.notEqual(want, undefined, `${row}: no cell for ${caller}`);
      const req = await spec.req(caller);
      const r = await send(caller, method, req.path, { body: req.body, headers: req.headers });
      const miss = verdict(spec, want, r);
      const line = `${caller.padEnd(8)} ${method} ${req.path}: ${miss} ${r.text.slice(0, 160)}`;
      if (miss && want?.bug) knownBugs.push(`${line}\n         BUG: ${want.bug}`);
      else if (miss) wrong.push(line);
    }
    assert.deepEqual(wrong, [], `${wrong.length} wrong cell(s):\n${wrong.join('\n')}`);
  });
}

test('known bugs: cells lowart does not answer as it should yet', { todo: true }, () => {
  assert.deepEqual(knownBugs, [], `${knownBugs.length} cell(s):\n${knownBugs.join('\n')}`);
});
