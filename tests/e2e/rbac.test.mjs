// The admin API's access control and bookkeeping: the role table (admin, operator,
// viewer, user) on every admin resource, who may mint which keys, changes taking effect
// on the very next request, the audit log, request validation, and the /v1/me
// self-service endpoints.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import {
  api, cleanupAll, createKey, mockReset, mockStats, renderConfig, startGateway, startMock, waitFor,
} from './harness.mjs';

let mock;
let gw;

before(async () => {
  mock = await startMock();
  gw = await startGateway({
    config: renderConfig({
      providers: [{ name: 'mock', base_url: `${mock.url}/v1`, api_key_env: 'MOCK_API_KEY' }],
      models: [
        { name: 'gpt-demo', deployments: [{ provider: 'mock', model: 'mock-model' }] },
        { name: 'other-model', deployments: [{ provider: 'mock', model: 'other-upstream' }] },
      ],
    }),
    env: { MOCK_API_KEY: 'sk-upstream-rbac', LOWART_ENCRYPTION_KEY: randomBytes(32).toString('hex') },
  });
});

after(cleanupAll);

/** A name no other call in this run uses. */
const uniq = (prefix) => `${prefix}-${randomBytes(4).toString('hex')}`;

/** An admin call with the master key that must answer `status`; returns the JSON body. */
async function must(method, path, body, status = method === 'POST' ? 201 : 200) {
  const r = await api(gw, method, path, { body });
  if (r.status !== status) throw new Error(`setup: ${method} ${path} answered ${r.status}, expected ${status}: ${r.text}`);
  return r.json;
}

const chat = (key, model = 'gpt-demo', content = 'hello world') => api(gw, 'POST', '/v1/chat/completions', {
  key, body: { model, messages: [{ role: 'user', content }] },
});

/** Asserts an admin error {"error":{"message","type"[,"param"]}} with `status` (and `param` when given). */
function assertAdminError(r, status, param) {
  assert.equal(r.status, status, r.text);
  assert.equal(typeof r.json?.error?.message, 'string', r.text);
  assert.ok(r.json.error.message.length > 0, r.text);
  assert.equal(typeof r.json.error.type, 'string', r.text);
  if (param !== undefined) assert.equal(r.json.error.param, param, r.text);
}

const deployment = (model = 'mock-model') => [{ provider: 'mock', model }];

describe('the role table', () => {
  // "master" is the master key (acts as admin); the others are virtual keys with that role.
  const ROLES = ['master', 'admin', 'operator', 'viewer', 'user'];
  const ADMIN = ['master', 'admin'];
  const OPERATOR = [...ADMIN, 'operator'];
  const VIEWER = [...OPERATOR, 'viewer'];

  /**
   * One cell per call: `prep` (run with the master key before each call) returns the
   * request; `allowed` roles expect `ok`, the others 403. Every call is valid, so an
   * allowed role really succeeds; resources a call consumes are made fresh per call.
   */
  const cells = [
    // reads
    { call: 'GET /admin/users', allowed: VIEWER, ok: 200, prep: async () => ({ method: 'GET', path: '/admin/users' }) },
    { call: 'GET /admin/users/{id}', allowed: VIEWER, ok: 200, prep: async () => {
      const u = await must('POST', '/admin/users', { name: uniq('reader-target') });
      return { method: 'GET', path: `/admin/users/${u.id}` };
    } },
    { call: 'GET /admin/teams', allowed: VIEWER, ok: 200, prep: async () => ({ method: 'GET', path: '/admin/teams' }) },
    { call: 'GET /admin/teams/{id}', allowed: VIEWER, ok: 200, prep: async () => {
      const t = await must('POST', '/admin/teams', { name: uniq('team-read') });
      return { method: 'GET', path: `/admin/teams/${t.id}` };
    } },
    { call: 'GET /admin/keys', allowed: VIEWER, ok: 200, prep: async () => ({ method: 'GET', path: '/admin/keys' }) },
    { call: 'GET /admin/keys/{id}', allowed: VIEWER, ok: 200, prep: async () => {
      const k = await createKey(gw, { name: uniq('key-read') });
      return { method: 'GET', path: `/admin/keys/${k.id}` };
    } },
    { call: 'GET /admin/providers', allowed: VIEWER, ok: 200, prep: async () => ({ method: 'GET', path: '/admin/providers' }) },
    { call: 'GET /admin/providers/{name}', allowed: VIEWER, ok: 200, prep: async () => ({ method: 'GET', path: '/admin/providers/mock' }) },
    { call: 'GET /admin/models', allowed: VIEWER, ok: 200, prep: async () => ({ method: 'GET', path: '/admin/models' }) },
    { call: 'GET /admin/models/{name}', allowed: VIEWER, ok: 200, prep: async () => ({ method: 'GET', path: '/admin/models/gpt-demo' }) },
    { call: 'GET /admin/audit', allowed: VIEWER, ok: 200, prep: async () => ({ method: 'GET', path: '/admin/audit?limit=5' }) },
    { call: 'GET /admin/logs', allowed: VIEWER, ok: 200, prep: async () => ({ method: 'GET', path: '/admin/logs?limit=5' }) },
    // users and teams: admin only
    { call: 'POST /admin/users', allowed: ADMIN, ok: 201, prep: async () => ({
      method: 'POST', path: '/admin/users', body: { name: uniq('new-user') },
    }) },
    { call: 'PATCH /admin/users/{id}', allowed: ADMIN, ok: 200, prep: async () => {
      const u = await must('POST', '/admin/users', { name: uniq('patch-user') });
      return { method: 'PATCH', path: `/admin/users/${u.id}`, body: { name: uniq('patched-user') } };
    } },
    { call: 'DELETE /admin/users/{id}', allowed: ADMIN, ok: 200, prep: async () => {
      const u = await must('POST', '/admin/users', { name: uniq('doomed-user') });
      return { method: 'DELETE', path: `/admin/users/${u.id}` };
    } },
    { call: 'POST /admin/teams', allowed: ADMIN, ok: 201, prep: async () => ({
      method: 'POST', path: '/admin/teams', body: { name: uniq('new-team'), rpm: 100 },
    }) },
    { call: 'PATCH /admin/teams/{id}', allowed: ADMIN, ok: 200, prep: async () => {
      const t = await must('POST', '/admin/teams', { name: uniq('patch-team') });
      return { method: 'PATCH', path: `/admin/teams/${t.id}`, body: { rpm: 7 } };
    } },
    { call: 'DELETE /admin/teams/{id}', allowed: ADMIN, ok: 200, prep: async () => {
      const t = await must('POST', '/admin/teams', { name: uniq('doomed-team') });
      return { method: 'DELETE', path: `/admin/teams/${t.id}` };
    } },
    // keys, providers, models: admin and operator
    { call: 'POST /admin/keys (role user)', allowed: OPERATOR, ok: 201, prep: async () => ({
      method: 'POST', path: '/admin/keys', body: { name: uniq('new-key'), role: 'user' },
    }) },
    { call: 'PATCH /admin/keys/{id}', allowed: OPERATOR, ok: 200, prep: async () => {
      const k = await createKey(gw, { name: uniq('patch-key') });
      return { method: 'PATCH', path: `/admin/keys/${k.id}`, body: { name: uniq('patched-key'), rpm: 5 } };
    } },
    { call: 'POST /admin/keys/{id}/rotate', allowed: OPERATOR, ok: 200, prep: async () => {
      const k = await createKey(gw, { name: uniq('rotate-key') });
      return { method: 'POST', path: `/admin/keys/${k.id}/rotate` };
    } },
    { call: 'DELETE /admin/keys/{id}', allowed: OPERATOR, ok: 200, prep: async () => {
      const k = await createKey(gw, { name: uniq('doomed-key') });
      return { method: 'DELETE', path: `/admin/keys/${k.id}` };
    } },
    // Model cells come before provider cells so that a failure of model writes once API
    // providers exist (tested on its own in 'models and providers through the API') does
    // not hide the role checks here.
    { call: 'POST /admin/models', allowed: OPERATOR, ok: 201, prep: async () => ({
      method: 'POST', path: '/admin/models', body: { name: uniq('model'), deployments: deployment() },
    }) },
    { call: 'PUT /admin/models/{name}', allowed: OPERATOR, ok: 200, prep: async () => {
      const name = uniq('model-put');
      await must('POST', '/admin/models', { name, deployments: deployment() });
      return { method: 'PUT', path: `/admin/models/${name}`, body: { deployments: deployment('mock-model-2') } };
    } },
    { call: 'PATCH /admin/models/{name}', allowed: OPERATOR, ok: 200, prep: async () => {
      const name = uniq('model-patch');
      await must('POST', '/admin/models', { name, deployments: deployment() });
      return { method: 'PATCH', path: `/admin/models/${name}`, body: { deployments: [{ provider: 'mock', model: 'm', weight: 2 }] } };
    } },
    { call: 'DELETE /admin/models/{name}', allowed: OPERATOR, ok: 200, prep: async () => {
      const name = uniq('model-del');
      await must('POST', '/admin/models', { name, deployments: deployment() });
      return { method: 'DELETE', path: `/admin/models/${name}` };
    } },
    { call: 'POST /admin/providers', allowed: OPERATOR, ok: 201, prep: async () => ({
      method: 'POST', path: '/admin/providers', body: { name: uniq('prov'), kind: 'openai', base_url: `${mock.url}/v1` },
    }) },
    { call: 'PUT /admin/providers/{name}', allowed: OPERATOR, ok: 200, prep: async () => {
      const name = uniq('prov-put');
      await must('POST', '/admin/providers', { name, kind: 'openai', base_url: `${mock.url}/v1` });
      return { method: 'PUT', path: `/admin/providers/${name}`, body: { base_url: `${mock.url}/v2`, connect_timeout_ms: 1500 } };
    } },
    { call: 'PATCH /admin/providers/{name}', allowed: OPERATOR, ok: 200, prep: async () => {
      const name = uniq('prov-patch');
      await must('POST', '/admin/providers', { name, kind: 'openai', base_url: `${mock.url}/v1` });
      return { method: 'PATCH', path: `/admin/providers/${name}`, body: { verify_tls: true } };
    } },
    { call: 'DELETE /admin/providers/{name}', allowed: OPERATOR, ok: 200, prep: async () => {
      const name = uniq('prov-del');
      await must('POST', '/admin/providers', { name, kind: 'openai', base_url: `${mock.url}/v1` });
      return { method: 'DELETE', path: `/admin/providers/${name}` };
    } },
    // Decided by the route table (net/routing.hpp) before any key is looked at: the audit
    // log has no writes (405 for every role) and an unknown admin resource is 404.
    { call: 'POST /admin/audit', allowed: ROLES, ok: 405, routing: true, prep: async () => ({ method: 'POST', path: '/admin/audit', body: {} }) },
    { call: 'GET /admin/nothing', allowed: ROLES, ok: 404, routing: true, prep: async () => ({ method: 'GET', path: '/admin/nothing' }) },
    { call: 'POST /admin/nothing', allowed: ROLES, ok: 404, routing: true, prep: async () => ({ method: 'POST', path: '/admin/nothing', body: {} }) },
  ];

  let keys;

  before(async () => {
    keys = { master: gw.masterKey };
    for (const role of ['admin', 'operator', 'viewer', 'user']) {
      const k = await createKey(gw, { name: uniq(`matrix-${role}`), role });
      assert.equal(k.role, role);
      keys[role] = k.key;
    }
  });

  test('every role gets exactly the admin access the role table grants (success or 403, per call)', async () => {
    const wrong = [];
    let checked = 0;
    for (const cell of cells) {
      for (const role of ROLES) {
        const req = await cell.prep();
        const r = await api(gw, req.method, req.path, { body: req.body, key: keys[role] });
        const expected = cell.allowed.includes(role) ? cell.ok : 403;
        checked++;
        if (r.status !== expected) {
          wrong.push(`${role.padEnd(8)} ${cell.call} (${req.method} ${req.path}): expected ${expected}, got ${r.status} ${r.text.slice(0, 200)}`);
        } else if (expected >= 400 && typeof r.json?.error?.message !== 'string') {
          wrong.push(`${role.padEnd(8)} ${cell.call}: ${expected} without an admin error body: ${r.text.slice(0, 200)}`);
        }
      }
    }
    assert.equal(checked, cells.length * ROLES.length);
    assert.deepEqual(wrong, [], `${wrong.length} wrong cell(s):\n${wrong.join('\n')}`);
  });

  test('every admin call without a key, or with a wrong key, is 401 (unless the route table refuses it first)', async () => {
    const wrong = [];
    const bad = {
      'no key': null,
      'unknown sk-lw key': `sk-lw-${randomBytes(24).toString('hex')}`,
      'master key + x': `${gw.masterKey}x`,
    };
    for (const cell of cells) {
      if (cell.routing) continue; // 404/405 for every caller, checked above
      // Authentication comes first, so the ids in the path need not exist.
      const [method, template] = cell.call.split(' ');
      const path = template.replace(/\{(id|name)\}/, 'x-does-not-matter');
      const body = method === 'GET' || method === 'DELETE' ? undefined : { name: uniq('unauthenticated') };
      for (const [label, key] of Object.entries(bad)) {
        const r = await api(gw, method, path, { body, key });
        if (r.status !== 401 || typeof r.json?.error?.message !== 'string')
          wrong.push(`${label.padEnd(18)} ${method} ${path}: expected 401, got ${r.status} ${r.text.slice(0, 200)}`);
      }
    }
    assert.deepEqual(wrong, [], `${wrong.length} wrong cell(s):\n${wrong.join('\n')}`);
  });

  test('a refused write changes nothing and is not audited', async () => {
    const teamName = uniq('refused-team');
    const userName = uniq('refused-user');
    const victim = await createKey(gw, { name: uniq('victim') });
    const lastAudit = (await must('GET', '/admin/audit?limit=1')).data[0].id;

    assertAdminError(await api(gw, 'POST', '/admin/teams', { key: keys.operator, body: { name: teamName } }), 403);
    assertAdminError(await api(gw, 'POST', '/admin/users', { key: keys.viewer, body: { name: userName } }), 403);
    assertAdminError(await api(gw, 'DELETE', `/admin/keys/${victim.id}`, { key: keys.viewer }), 403);
    assertAdminError(await api(gw, 'DELETE', `/admin/keys/${victim.id}`, { key: keys.user }), 403);
    assertAdminError(await api(gw, 'POST', '/admin/models', {
      key: keys.viewer, body: { name: 'refused-model', deployments: deployment() },
    }), 403);

    const teams = (await must('GET', '/admin/teams')).data;
    assert.ok(!teams.some((t) => t.name === teamName), 'the refused team exists');
    const users = (await must('GET', '/admin/users')).data;
    assert.ok(!users.some((u) => u.name === userName), 'the refused user exists');
    assert.equal((await must('GET', `/admin/keys/${victim.id}`)).revoked_at, null, 'the refused revoke happened');
    assert.equal((await chat(victim.key)).status, 200);
    assertAdminError(await api(gw, 'GET', '/admin/models/refused-model'), 404);
    const newer = (await must('GET', '/admin/audit?limit=50')).data.filter((e) => e.id > lastAudit);
    assert.deepEqual(newer, [], 'refused calls must not be audited');
  });
});

describe('who may mint which keys', () => {
  test('an operator changes and revokes only keys of lower roles (not a peer operator, not an admin key)', async () => {
    const op = await createKey(gw, { name: uniq('editing-op'), role: 'operator' });
    const peer = await createKey(gw, { name: uniq('peer-op'), role: 'operator' });
    const admin = await createKey(gw, { name: uniq('an-admin'), role: 'admin' });
    const user = await createKey(gw, { name: uniq('a-user') });
    for (const target of [peer, admin]) {
      assertAdminError(await api(gw, 'PATCH', `/admin/keys/${target.id}`, { key: op.key, body: { rpm: 1 } }), 403);
      assertAdminError(await api(gw, 'DELETE', `/admin/keys/${target.id}`, { key: op.key }), 403);
      const after = (await must('GET', `/admin/keys/${target.id}`));
      assert.equal(after.rpm, null, 'unchanged');
      assert.equal(after.revoked_at, null, 'not revoked');
    }
    assert.equal((await api(gw, 'PATCH', `/admin/keys/${user.id}`, { key: op.key, body: { rpm: 7 } })).status, 200);
    assert.equal((await api(gw, 'DELETE', `/admin/keys/${user.id}`, { key: op.key })).status, 200);
    // An admin changes any key.
    assert.equal((await api(gw, 'PATCH', `/admin/keys/${peer.id}`, { body: { rpm: 3 } })).status, 200);
  });


  test('an operator may create user and viewer keys (which work) but not operator or admin keys', async () => {
    const op = await createKey(gw, { name: uniq('minting-op'), role: 'operator' });
    const asOp = (body) => api(gw, 'POST', '/admin/keys', { key: op.key, body });

    const plain = await asOp({ name: uniq('op-made-default') });
    assert.equal(plain.status, 201, plain.text);
    assert.equal(plain.json.role, 'user', 'the default role is user');
    const user = await asOp({ name: uniq('op-made-user'), role: 'user' });
    assert.equal(user.status, 201, user.text);
    assert.equal(user.json.role, 'user');
    const viewer = await asOp({ name: uniq('op-made-viewer'), role: 'viewer' });
    assert.equal(viewer.status, 201, viewer.text);
    assert.equal(viewer.json.role, 'viewer');

    // The keys it made work with their role.
    assert.equal((await chat(user.json.key)).status, 200);
    assert.equal((await api(gw, 'GET', '/admin/keys', { key: viewer.json.key })).status, 200);
    assert.equal((await api(gw, 'GET', '/admin/keys', { key: user.json.key })).status, 403);

    const names = [uniq('op-made-operator'), uniq('op-made-admin')];
    assertAdminError(await asOp({ name: names[0], role: 'operator' }), 403, 'role');
    assertAdminError(await asOp({ name: names[1], role: 'admin' }), 403, 'role');
    const all = (await must('GET', '/admin/keys')).data;
    for (const n of names) assert.ok(!all.some((k) => k.name === n), `a refused key '${n}' was created`);
  });

  test('a viewer cannot create keys of any role, not even user', async () => {
    const viewer = await createKey(gw, { name: uniq('minting-viewer'), role: 'viewer' });
    for (const role of ['user', 'viewer', 'operator', 'admin']) {
      assertAdminError(await api(gw, 'POST', '/admin/keys', { key: viewer.key, body: { name: uniq('v-made'), role } }), 403);
    }
    assertAdminError(await api(gw, 'POST', '/admin/keys', { key: viewer.key, body: { name: uniq('v-made') } }), 403);
  });

  test('an admin key may create admin keys; only admins change a key\'s role', async () => {
    const admin = await createKey(gw, { name: uniq('minting-admin'), role: 'admin' });
    const made = await api(gw, 'POST', '/admin/keys', { key: admin.key, body: { name: uniq('admin-made'), role: 'admin' } });
    assert.equal(made.status, 201, made.text);
    assert.equal(made.json.role, 'admin');
    assert.equal((await api(gw, 'GET', '/admin/users', { key: made.json.key })).status, 200);

    const op = await createKey(gw, { name: uniq('patching-op'), role: 'operator' });
    const target = await createKey(gw, { name: uniq('patch-target'), role: 'user' });
    // An operator may rename a key, but not change a role (its own or another's).
    const renamed = await api(gw, 'PATCH', `/admin/keys/${target.id}`, { key: op.key, body: { name: uniq('renamed') } });
    assert.equal(renamed.status, 200, renamed.text);
    assertAdminError(await api(gw, 'PATCH', `/admin/keys/${target.id}`, { key: op.key, body: { role: 'viewer' } }), 403, 'role');
    // A non-admin key may not change itself at all (its limits no more than its role).
    const self = await api(gw, 'PATCH', `/admin/keys/${op.id}`, { key: op.key, body: { role: 'admin' } });
    assertAdminError(self, 403);
    assert.match(self.json.error.message, /may not change itself/);
    assert.equal((await must('GET', `/admin/keys/${target.id}`)).role, 'user');
    assert.equal((await must('GET', `/admin/keys/${op.id}`)).role, 'operator');
    // The operator is still not an admin.
    assertAdminError(await api(gw, 'POST', '/admin/teams', { key: op.key, body: { name: uniq('t') } }), 403);

    const promoted = await api(gw, 'PATCH', `/admin/keys/${target.id}`, { key: admin.key, body: { role: 'viewer' } });
    assert.equal(promoted.status, 200, promoted.text);
    assert.equal(promoted.json.role, 'viewer');
    assert.equal((await api(gw, 'GET', '/admin/keys', { key: target.key })).status, 200, 'the new role applies at once');
  });
});

describe('changes apply on the next request', () => {
  test('a revoked key is refused (401) on its very next request', async () => {
    const k = await createKey(gw, { name: uniq('revoke-me') });
    assert.equal((await chat(k.key)).status, 200);
    const del = await api(gw, 'DELETE', `/admin/keys/${k.id}`);
    assert.equal(del.status, 200, del.text);
    assert.deepEqual(del.json, { id: k.id, revoked: true });
    const r = await chat(k.key);
    assert.equal(r.status, 401, r.text);
    assert.equal((await api(gw, 'GET', '/v1/me', { key: k.key })).status, 401);
  });

  test('PATCHing a key\'s models to exclude a model makes the next request to it 403', async () => {
    const k = await createKey(gw, { name: uniq('narrowed'), models: ['gpt-demo', 'other-model'] });
    assert.equal((await chat(k.key, 'other-model')).status, 200);
    const p = await api(gw, 'PATCH', `/admin/keys/${k.id}`, { body: { models: ['gpt-demo'] } });
    assert.equal(p.status, 200, p.text);
    assert.deepEqual(p.json.models, ['gpt-demo']);
    await mockReset(mock);
    const r = await chat(k.key, 'other-model');
    assert.equal(r.status, 403, r.text);
    assert.equal(r.json.error.code, 'model_not_allowed', r.text);
    assert.equal((await mockStats(mock)).requests, 0, 'a refused request must not reach the upstream');
    assert.equal((await chat(k.key, 'gpt-demo')).status, 200);
    const listed = await api(gw, 'GET', '/v1/models', { key: k.key });
    assert.deepEqual(listed.json.data.map((m) => m.id), ['gpt-demo']);
  });

  test('deleting a user revokes their keys (401 on the next request) but not other users\' keys', async () => {
    const u = await must('POST', '/admin/users', { name: uniq('leaver') });
    const stay = await must('POST', '/admin/users', { name: uniq('stayer') });
    const k1 = await createKey(gw, { name: uniq('leaver-1'), user_id: u.id });
    const k2 = await createKey(gw, { name: uniq('leaver-2'), user_id: u.id });
    const other = await createKey(gw, { name: uniq('stayer-1'), user_id: stay.id });
    for (const k of [k1, k2, other]) assert.equal((await chat(k.key)).status, 200);

    const del = await api(gw, 'DELETE', `/admin/users/${u.id}`);
    assert.equal(del.status, 200, del.text);
    assert.equal((await chat(k1.key)).status, 401);
    assert.equal((await chat(k2.key)).status, 401);
    assert.equal((await chat(other.key)).status, 200);
    assertAdminError(await api(gw, 'GET', `/admin/users/${u.id}`), 404);
    for (const k of [k1, k2]) assert.equal(typeof (await must('GET', `/admin/keys/${k.id}`)).revoked_at, 'number');
    assert.equal((await must('GET', `/admin/keys/${other.id}`)).revoked_at, null);
  });

  test('a role change by PATCH applies to the key\'s next admin request', async () => {
    const k = await createKey(gw, { name: uniq('demoted'), role: 'operator' });
    assert.equal((await api(gw, 'GET', '/admin/keys', { key: k.key })).status, 200);
    assert.equal((await api(gw, 'PATCH', `/admin/keys/${k.id}`, { body: { role: 'user' } })).status, 200);
    assertAdminError(await api(gw, 'GET', '/admin/keys', { key: k.key }), 403);
  });

});

describe('models and providers through the API', () => {
  test('model options the admin API cannot store are refused, not dropped', async () => {
    const r = await api(gw, 'POST', '/admin/models', {
      body: { name: uniq('with-fallbacks'), deployments: [{ provider: 'mock', model: 'a' }], fallbacks: ['x'] },
    });
    assertAdminError(r, 400);
    assert.equal(r.json.error.param, 'fallbacks');
    assert.match(r.json.error.message, /lowart\.toml/);
  });

  test('models can be created and updated while a provider made through the API exists', async () => {
    const prov = uniq('api-prov');
    await must('POST', '/admin/providers', { name: prov, kind: 'openai', base_url: `${mock.url}/v1` });
    const onFile = uniq('on-file-provider');
    const a = await api(gw, 'POST', '/admin/models', { body: { name: onFile, deployments: [{ provider: 'mock', model: 'a' }] } });
    assert.equal(a.status, 201, a.text);
    const onApi = uniq('on-api-provider');
    const b = await api(gw, 'POST', '/admin/models', { body: { name: onApi, deployments: [{ provider: prov, model: 'b', priority: 1, weight: 3 }] } });
    assert.equal(b.status, 201, b.text);
    assert.deepEqual(b.json.deployments, [{ provider: prov, model: 'b', priority: 1, weight: 3 }]);
    const put = await api(gw, 'PUT', `/admin/models/${onFile}`, { body: { deployments: [{ provider: prov, model: 'c' }] } });
    assert.equal(put.status, 200, put.text);
    const got = await api(gw, 'GET', `/admin/models/${onFile}`);
    assert.deepEqual(got.json.deployments, [{ provider: prov, model: 'c', priority: 0, weight: 1 }]);
  });

  test('a model created through the API routes on the next request with the provider\'s key', async () => {
    const prov = uniq('routed-prov');
    const secret = `sk-routed-${randomBytes(8).toString('hex')}`;
    await must('POST', '/admin/providers', { name: prov, kind: 'openai', base_url: `${mock.url}/v1`, api_key: secret });
    const model = uniq('routed-model');
    const created = await api(gw, 'POST', '/admin/models', {
      body: { name: model, deployments: [{ provider: prov, model: 'upstream-routed' }] },
    });
    assert.equal(created.status, 201, created.text);
    assert.equal(created.json.source, 'api');
    await mockReset(mock);
    const r = await chat(gw.masterKey, model, 'routed now');
    assert.equal(r.status, 200, r.text);
    const stats = await mockStats(mock);
    assert.equal(stats.last_authorization, `Bearer ${secret}`);
    assert.equal(JSON.parse(stats.last_body).model, 'upstream-routed');
    // ... and after DELETE it is gone at once.
    assert.equal((await api(gw, 'DELETE', `/admin/models/${model}`)).status, 200);
    assert.equal((await chat(gw.masterKey, model)).status, 404);
  });
});

describe('catalog changes are seen by the very next request', () => {
  test('over 100 rounds, a model is routable right after POST, gone right after DELETE, and a new provider key is sent right after PUT', async () => {
    // A gateway of its own: one file provider, no models yet.
    const own = await startGateway({
      config: renderConfig({ providers: [{ name: 'vendor', base_url: `${mock.url}/v1` }] }),
      env: { LOWART_ENCRYPTION_KEY: randomBytes(32).toString('hex') },
    });
    const ownChat = (model) => api(own, 'POST', '/v1/chat/completions', {
      key: own.masterKey, body: { model, messages: [{ role: 'user', content: 'next request' }] },
    });
    const stale = [];
    for (let i = 0; i < 100; i++) {
      const model = `race-${i}`;
      const created = await api(own, 'POST', '/admin/models', { key: own.masterKey, body: { name: model, deployments: [{ provider: 'vendor', model: 'up' }] } });
      assert.equal(created.status, 201, created.text);
      const first = await ownChat(model);
      if (first.status !== 200) stale.push(`round ${i}: chat right after POST /admin/models answered ${first.status}`);

      const key = `sk-round-${i}-${randomBytes(4).toString('hex')}`;
      const put = await api(own, 'PUT', '/admin/providers/vendor', { key: own.masterKey, body: { api_key: key } });
      assert.equal(put.status, 200, put.text);
      await ownChat(model);
      const auth = (await mockStats(mock)).last_authorization;
      if (auth !== `Bearer ${key}`) stale.push(`round ${i}: upstream got '${auth}' right after PUT set '${key}'`);

      assert.equal((await api(own, 'DELETE', `/admin/models/${model}`, { key: own.masterKey })).status, 200);
      const gone = await ownChat(model);
      if (gone.status !== 404) stale.push(`round ${i}: chat right after DELETE /admin/models answered ${gone.status}`);
    }
    assert.deepEqual(stale, [], `${stale.length} stale route(s):\n${stale.join('\n')}`);
  });
});

describe('audit log', () => {
  test('changes are listed newest first with the acting key (master or the operator\'s key id) and action', async () => {
    const op = await createKey(gw, { name: uniq('audited-op'), role: 'operator' });
    const asOp = (method, path, body) => api(gw, method, path, { key: op.key, body });
    const expected = []; // oldest first

    const team = await must('POST', '/admin/teams', { name: uniq('audit-team') });
    expected.push({ actor: 'master', action: 'team.create', target: team.id });
    const user = await must('POST', '/admin/users', { name: uniq('audit-user') });
    expected.push({ actor: 'master', action: 'user.create', target: user.id });
    const k = await asOp('POST', '/admin/keys', { name: uniq('audit-key'), team: team.id });
    assert.equal(k.status, 201, k.text);
    expected.push({ actor: op.id, action: 'key.create', target: k.json.id });
    const pname = uniq('audit-prov');
    const secret = `sk-audit-SECRET-${randomBytes(8).toString('hex')}`;
    assert.equal((await asOp('POST', '/admin/providers', { name: pname, kind: 'openai', base_url: `${mock.url}/v1`, api_key: secret })).status, 201);
    expected.push({ actor: op.id, action: 'provider.create', target: pname });
    const mname = uniq('audit-model');
    assert.equal((await asOp('POST', '/admin/models', { name: mname, deployments: [{ provider: pname, model: 'x' }] })).status, 201);
    expected.push({ actor: op.id, action: 'model.create', target: mname });
    assert.equal((await asOp('PATCH', `/admin/providers/${pname}`, { api_key: `${secret}-2` })).status, 200);
    expected.push({ actor: op.id, action: 'provider.update', target: pname });
    assert.equal((await asOp('DELETE', `/admin/keys/${k.json.id}`)).status, 200);
    expected.push({ actor: op.id, action: 'key.revoke', target: k.json.id });
    assert.equal((await api(gw, 'PATCH', `/admin/teams/${team.id}`, { body: { tpm: 1000 } })).status, 200);
    expected.push({ actor: 'master', action: 'team.update', target: team.id });

    const r = await api(gw, 'GET', `/admin/audit?limit=${expected.length}`);
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.object, 'list');
    const got = r.json.data.map(({ actor, action, target }) => ({ actor, action, target }));
    assert.deepEqual(got, [...expected].reverse());
    for (let i = 1; i < r.json.data.length; i++) {
      assert.ok(r.json.data[i - 1].id > r.json.data[i].id, 'ids must decrease (newest first)');
      assert.ok(r.json.data[i - 1].ts_ms >= r.json.data[i].ts_ms, 'ts_ms must not increase');
    }
    const now = Date.now();
    for (const e of r.json.data) assert.ok(Math.abs(now - e.ts_ms) < 60_000, `ts_ms ${e.ts_ms} is not a recent unix ms time`);
    // An update names the fields it changed (names only: values may be secrets).
    assert.deepEqual(r.json.data.find((e) => e.action === 'team.update').detail, { fields: ['tpm'] });
    // Paging: before=<id> gives the entries older than that one.
    const older = await api(gw, 'GET', `/admin/audit?limit=2&before=${r.json.data[1].id}`);
    assert.deepEqual(older.json.data.map((e) => e.id), r.json.data.slice(2, 4).map((e) => e.id));
    assertAdminError(await api(gw, 'GET', '/admin/audit?before=x'), 400, 'before');
    const create = r.json.data.find((e) => e.action === 'provider.create');
    assert.equal(typeof create.detail, 'object');
    assert.equal(create.detail.base_url, `${mock.url}/v1`);
    assert.ok(!r.text.includes(secret), 'the audit log must not contain a provider key');

    // Filters: actor, action prefix; a viewer may read the log.
    const mine = await api(gw, 'GET', `/admin/audit?actor=${op.id}`);
    assert.deepEqual(mine.json.data.map((e) => e.action), ['key.revoke', 'provider.update', 'model.create', 'provider.create', 'key.create']);
    assert.ok(mine.json.data.every((e) => e.actor === op.id));
    const provs = await api(gw, 'GET', `/admin/audit?action=provider.&limit=1000`);
    assert.ok(provs.json.data.length >= 2);
    assert.ok(provs.json.data.every((e) => e.action.startsWith('provider.')), provs.text);
    assert.equal(provs.json.data[0].target, pname);
    const viewer = await createKey(gw, { name: uniq('audit-reader'), role: 'viewer' });
    const read = await api(gw, 'GET', '/admin/audit?limit=3', { key: viewer.key });
    assert.equal(read.status, 200, read.text);
    assert.equal(read.json.data.length, 3);
    assert.equal(read.json.data[0].action, 'key.create', 'creating the viewer key is the newest entry');
    assert.equal(read.json.data[0].target, viewer.id);
    assertAdminError(await api(gw, 'GET', '/admin/audit?limit=0'), 400, 'limit');
    assertAdminError(await api(gw, 'GET', '/admin/audit?limit=1001'), 400, 'limit');
  });
});

describe('validation', () => {
  test('invalid fields are 400 with param naming the field, and create nothing', async () => {
    const cases = [
      ['POST', '/admin/teams', { name: 42 }, 'name'],
      ['POST', '/admin/teams', { rpm: 5 }, 'name'],
      ['POST', '/admin/teams', { name: uniq('t'), rpm: -1 }, 'rpm'],
      ['POST', '/admin/teams', { name: uniq('t'), budget_period: 'week' }, 'budget_period'],
      ['POST', '/admin/keys', { name: uniq('k'), budget_period: 'week' }, 'budget_period'],
      ['POST', '/admin/keys', { name: uniq('k'), team: 'no-such-team' }, 'team'],
      ['POST', '/admin/keys', { name: uniq('k'), user_id: 'user_nope' }, 'user_id'],
      ['POST', '/admin/keys', { name: uniq('k'), expires_at: Math.floor(Date.now() / 1000) - 10 }, 'expires_at'],
      ['POST', '/admin/keys', { name: uniq('k'), role: 'root' }, 'role'],
      ['POST', '/admin/keys', { name: uniq('k'), budget_cost: 'lots' }, 'budget_cost'],
      ['POST', '/admin/users', { name: uniq('u'), role: 'root' }, 'role'],
      ['POST', '/admin/users', { name: uniq('u'), team: 'no-such-team' }, 'team'],
      ['POST', '/admin/models', { name: uniq('m'), deployments: [{ provider: 'nope', model: 'x' }] }, 'deployments[0].provider'],
      ['POST', '/admin/models', { name: uniq('m'), deployments: [{ provider: 'mock', model: 'x' }, { provider: 'nope', model: 'y' }] }, 'deployments[1].provider'],
      ['POST', '/admin/models', { name: uniq('m'), deployments: [{ provider: 'mock' }] }, 'deployments[0].model'],
      ['POST', '/admin/models', { name: uniq('m'), deployments: [{ provider: 'mock', model: 'x', weight: 0 }] }, 'deployments[0].weight'],
      ['POST', '/admin/models', { name: uniq('m'), deployments: [] }, 'deployments'],
      ['POST', '/admin/providers', { name: uniq('p'), kind: 'openai', base_url: 'ftp://x' }, 'base_url'],
      ['POST', '/admin/providers', { name: uniq('p'), kind: 'smoke-signals', base_url: `${mock.url}/v1` }, 'kind'],
      ['POST', '/admin/providers', { name: uniq('p'), kind: 'openai', base_url: `${mock.url}/v1`, connect_timeout_ms: 0 }, 'connect_timeout_ms'],
      ['POST', '/admin/providers', { name: uniq('p'), kind: 'openai', base_url: `${mock.url}/v1`, verify_tls: 'yes' }, 'verify_tls'],
    ];
    const wrong = [];
    for (const [method, path, body, param] of cases) {
      const r = await api(gw, method, path, { body });
      if (r.status !== 400 || r.json?.error?.param !== param || typeof r.json?.error?.message !== 'string')
        wrong.push(`${method} ${path} ${JSON.stringify(body)}: expected 400 param ${param}, got ${r.status} ${r.text}`);
    }
    assert.deepEqual(wrong, [], wrong.join('\n'));

    // Nothing named in a refused body exists afterwards.
    const names = new Set(cases.map(([, , b]) => b.name).filter((n) => typeof n === 'string'));
    for (const res of ['teams', 'keys', 'users', 'providers', 'models']) {
      const listed = (await must('GET', `/admin/${res}`)).data;
      const leaked = listed.filter((x) => names.has(x.name));
      assert.deepEqual(leaked, [], `a refused ${res} entry was created`);
    }
  });

  test('duplicates are 409: team name, user name, provider name (API or lowart.toml), model name', async () => {
    const team = uniq('dup-team');
    await must('POST', '/admin/teams', { name: team });
    assertAdminError(await api(gw, 'POST', '/admin/teams', { body: { name: team } }), 409, 'name');
    // Renaming another team onto that name is a conflict too.
    const other = await must('POST', '/admin/teams', { name: uniq('dup-team-2') });
    assertAdminError(await api(gw, 'PATCH', `/admin/teams/${other.id}`, { body: { name: team } }), 409, 'name');

    const user = uniq('dup-user');
    await must('POST', '/admin/users', { name: user });
    assertAdminError(await api(gw, 'POST', '/admin/users', { body: { name: user } }), 409, 'name');

    const prov = uniq('dup-prov');
    await must('POST', '/admin/providers', { name: prov, kind: 'openai', base_url: `${mock.url}/v1` });
    assertAdminError(await api(gw, 'POST', '/admin/providers', { body: { name: prov, kind: 'openai', base_url: `${mock.url}/v1` } }), 409, 'name');
    assertAdminError(await api(gw, 'POST', '/admin/providers', { body: { name: 'mock', kind: 'openai', base_url: `${mock.url}/v1` } }), 409, 'name');

    const model = uniq('dup-model');
    await must('POST', '/admin/models', { name: model, deployments: deployment() });
    assertAdminError(await api(gw, 'POST', '/admin/models', { body: { name: model, deployments: deployment() } }), 409, 'name');
    assertAdminError(await api(gw, 'POST', '/admin/models', { body: { name: 'gpt-demo', deployments: deployment() } }), 409, 'name');

    // Only one of each exists.
    assert.equal((await must('GET', '/admin/teams')).data.filter((t) => t.name === team).length, 1);
    assert.equal((await must('GET', '/admin/providers')).data.filter((p) => p.name === prov).length, 1);
  });

  test('deleting what lowart.toml defines, or a provider an API model uses, is 409', async () => {
    assertAdminError(await api(gw, 'DELETE', '/admin/providers/mock'), 409);
    assertAdminError(await api(gw, 'DELETE', '/admin/models/gpt-demo'), 409);
    const prov = uniq('used-prov');
    await must('POST', '/admin/providers', { name: prov, kind: 'openai', base_url: `${mock.url}/v1` });
    const model = uniq('user-of-prov');
    await must('POST', '/admin/models', { name: model, deployments: [{ provider: prov, model: 'x' }] });
    assertAdminError(await api(gw, 'DELETE', `/admin/providers/${prov}`), 409);
    assert.equal((await api(gw, 'GET', `/admin/providers/${prov}`)).status, 200, 'the provider must survive');
    await must('DELETE', `/admin/models/${model}`);
    await must('DELETE', `/admin/providers/${prov}`);
    assertAdminError(await api(gw, 'GET', `/admin/providers/${prov}`), 404);
  });

  test('unknown ids and names are 404 on GET, PATCH and DELETE', async () => {
    const wrong = [];
    const paths = ['/admin/teams/team_nope', '/admin/users/user_nope', '/admin/keys/key_nope',
      '/admin/providers/nope', '/admin/models/nope'];
    for (const p of paths) {
      for (const method of ['GET', 'PATCH', 'DELETE']) {
        // PATCH bodies are valid where that matters (models need deployments), so only the id is wrong.
        const body = method === 'PATCH' ? (p.includes('/models/') ? { deployments: deployment() } : { name: uniq('n') }) : undefined;
        // PATCH on a provider or model name upserts by design; an unknown name is only 404 for GET and DELETE.
        if (method === 'PATCH' && (p.includes('/models/') || p.includes('/providers/'))) continue;
        const r = await api(gw, method, p, { body });
        if (r.status !== 404 || typeof r.json?.error?.message !== 'string')
          wrong.push(`${method} ${p}: expected 404, got ${r.status} ${r.text}`);
      }
    }
    assert.deepEqual(wrong, [], wrong.join('\n'));
  });
});

describe('/v1/me', () => {
  test('a user\'s key sees itself and its user, mints and lists its own keys, revokes only its own, and sees its usage', async () => {
    const alice = await must('POST', '/admin/users', { name: uniq('alice') });
    const bob = await must('POST', '/admin/users', { name: uniq('bob') });
    const k1 = await createKey(gw, { name: uniq('alice-1'), user_id: alice.id, models: ['gpt-demo'] });
    const bobKey = await createKey(gw, { name: uniq('bob-1'), user_id: bob.id });
    const me = (method, path, body, key = k1.key) => api(gw, method, path, { key, body });

    const who = await me('GET', '/v1/me');
    assert.equal(who.status, 200, who.text);
    assert.equal(who.json.key.id, k1.id);
    assert.equal(who.json.key.user_id, alice.id);
    assert.ok(!('key' in who.json.key), '/v1/me must not reveal the key');
    assert.equal(who.json.user.id, alice.id);
    assert.equal(who.json.user.name, alice.name);

    // Minting: role user, same user, at most the caller's models.
    const made = await me('POST', '/v1/me/keys', { name: uniq('alice-2') });
    assert.equal(made.status, 201, made.text);
    assert.match(made.json.key, /^sk-lw-/);
    assert.equal(made.json.role, 'user');
    assert.equal(made.json.user_id, alice.id);
    assert.deepEqual(made.json.models, ['gpt-demo'], 'a self-service key inherits the caller\'s models');
    const k2 = made.json;
    assertAdminError(await me('POST', '/v1/me/keys', { name: uniq('alice-x'), role: 'admin' }), 403);
    assertAdminError(await me('POST', '/v1/me/keys', { name: uniq('alice-x'), models: ['other-model'] }), 403, 'models');
    assertAdminError(await me('POST', '/v1/me/keys', {}), 400, 'name');

    const listed = await me('GET', '/v1/me/keys');
    assert.equal(listed.status, 200, listed.text);
    assert.deepEqual(listed.json.data.map((k) => k.id).sort(), [k1.id, k2.id].sort());
    assert.ok(!listed.text.includes(k1.key) && !listed.text.includes(k2.key), 'listing must not reveal keys');
    const fromK2 = await me('GET', '/v1/me/keys', undefined, k2.key);
    assert.deepEqual(fromK2.json.data.map((k) => k.id).sort(), [k1.id, k2.id].sort());

    // Someone else's key: 404 and untouched.
    assertAdminError(await me('DELETE', `/v1/me/keys/${bobKey.id}`), 404);
    assert.equal((await chat(bobKey.key)).status, 200);

    // Usage over the user's keys (k1 twice, k2 once; bob's request is not counted).
    assert.equal((await chat(k1.key)).status, 200);
    assert.equal((await chat(k1.key)).status, 200);
    assert.equal((await chat(k2.key)).status, 200);
    const usage = await waitFor(async () => {
      const r = await me('GET', '/v1/me/usage');
      return r.status === 200 && r.json.data.find((u) => u.model === 'gpt-demo')?.requests >= 3 && r;
    }, { timeoutMs: 3000, what: '/v1/me/usage to count 3 requests' });
    assert.equal(usage.json.object, 'list');
    // "hello world": 2 prompt tokens, "mock reply: hello world": 4 completion tokens.
    assert.deepEqual(usage.json.data, [
      { model: 'gpt-demo', requests: 3, prompt_tokens: 6, completion_tokens: 12, cached_tokens: 0 },
    ]);
    const bobUsage = await waitFor(async () => {
      const r = await me('GET', '/v1/me/usage', undefined, bobKey.key);
      return r.json?.data?.length && r;
    }, { timeoutMs: 3000, what: 'bob\'s usage' });
    assert.deepEqual(bobUsage.json.data.map((u) => [u.model, u.requests]), [['gpt-demo', 1]]);

    // Revoking one of its own keys.
    const del = await me('DELETE', `/v1/me/keys/${k2.id}`);
    assert.equal(del.status, 200, del.text);
    assert.equal((await chat(k2.key)).status, 401);
    assert.equal((await chat(k1.key)).status, 200);
    const audit = (await must('GET', '/admin/audit?limit=1')).data[0];
    assert.deepEqual([audit.actor, audit.action, audit.target], [k1.id, 'key.revoke.self', k2.id]);
  });

  test('a key without a user sees user null, lists only itself, and may not mint keys', async () => {
    const k = await createKey(gw, { name: uniq('lonely') });
    const other = await createKey(gw, { name: uniq('lonely-neighbour') });
    const who = await api(gw, 'GET', '/v1/me', { key: k.key });
    assert.equal(who.status, 200, who.text);
    assert.equal(who.json.key.id, k.id);
    assert.equal(who.json.user, null);
    const listed = await api(gw, 'GET', '/v1/me/keys', { key: k.key });
    assert.deepEqual(listed.json.data.map((x) => x.id), [k.id]);
    assertAdminError(await api(gw, 'POST', '/v1/me/keys', { key: k.key, body: { name: 'more' } }), 403);
    assertAdminError(await api(gw, 'DELETE', `/v1/me/keys/${other.id}`, { key: k.key }), 404);
  });

  test('/v1/me names the master key as admin (its keys and usage are under /admin); 401 without a key', async () => {
    const who = await api(gw, 'GET', '/v1/me');
    assert.equal(who.status, 200, who.text);
    assert.deepEqual(who.json.key, { id: 'master', name: 'master key', role: 'admin' });
    assertAdminError(await api(gw, 'GET', '/v1/me/keys'), 400);
    const r = await api(gw, 'GET', '/v1/me', { key: null });
    assert.equal(r.status, 401, r.text);
  });
});
