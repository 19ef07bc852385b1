// The admin API: virtual keys are created, listed (never revealed) and revoked with the
// master key, and the proxy honours them at once.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { api, cleanupAll, createKey, renderConfig, startGateway, startMock } from './harness.mjs';

let mock;
let gw;

before(async () => {
  mock = await startMock();
  gw = await startGateway({
    config: renderConfig({
      providers: [{ name: 'mock', base_url: `${mock.url}/v1` }],
      models: [{ name: 'gpt-demo', deployments: [{ provider: 'mock', model: 'mock-model' }] }],
    }),
  });
});

after(cleanupAll);

const chat = (key, content = 'hi') => api(gw, 'POST', '/v1/chat/completions', {
  key, body: { model: 'gpt-demo', messages: [{ role: 'user', content }] },
});

/** Admin errors are {"error":{"message","type"}}. */
function assertAdminError(r, status) {
  assert.equal(r.status, status, r.text);
  assert.equal(typeof r.json?.error?.message, 'string', r.text);
  assert.ok(r.json.error.message.length > 0);
  assert.equal(typeof r.json.error.type, 'string', r.text);
}

describe('virtual keys', () => {
  test('POST /admin/keys creates a key (201, sk-lw-...) that can call the API', async () => {
    const team = await api(gw, 'POST', '/admin/teams', { body: { name: 'red' } });
    assert.equal(team.status, 201, team.text);
    const created = await createKey(gw, { name: 'alice', models: ['gpt-demo'], team: 'red' });
    assert.match(created.id, /\S/);
    assert.match(created.key, /^sk-lw-/);
    assert.equal(created.name, 'alice');
    assert.deepEqual(created.models, ['gpt-demo']);
    assert.equal(created.team_id, team.json.id, 'a team is named by name or id and stored by id');
    assert.ok(created.key.startsWith(created.key_prefix), 'key_prefix is a prefix of the key');
    assert.ok(created.key_prefix.length < created.key.length);
    const r = await chat(created.key, 'from alice');
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.choices[0].message.content, 'mock reply: from alice');
  });

  test('GET /admin/keys lists keys with their key_prefix but never the key itself', async () => {
    const a = await createKey(gw, { name: 'listed-a' });
    const b = await createKey(gw, { name: 'listed-b', role: 'viewer' });
    const r = await api(gw, 'GET', '/admin/keys');
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.object, 'list');
    const byId = new Map(r.json.data.map((k) => [k.id, k]));
    for (const k of [a, b]) {
      const row = byId.get(k.id);
      assert.ok(row, `key ${k.id} missing from the list`);
      assert.equal(row.name, k.name);
      assert.equal(row.key_prefix, k.key_prefix);
      assert.equal(row.revoked_at, null);
      assert.ok(!('key' in row), 'the list must not contain the key field');
      assert.ok(!r.text.includes(k.key), 'the list must not reveal a key');
    }
    assert.equal(byId.get(b.id).role, 'viewer');
  });

  test('DELETE /admin/keys/{id} revokes: the key gets 401 on its next request', async () => {
    const k = await createKey(gw, { name: 'short-lived' });
    assert.equal((await chat(k.key)).status, 200);
    const del = await api(gw, 'DELETE', `/admin/keys/${k.id}`);
    assert.equal(del.status, 200, del.text);
    const after = await chat(k.key);
    assert.equal(after.status, 401, after.text);
    assert.equal(after.json.error.type, 'invalid_request_error');
    const listed = (await api(gw, 'GET', '/admin/keys')).json.data.find((x) => x.id === k.id);
    assert.equal(typeof listed.revoked_at, 'number');
    // Revoking again, or an id that never existed: 404.
    assertAdminError(await api(gw, 'DELETE', `/admin/keys/${k.id}`), 404);
    assertAdminError(await api(gw, 'DELETE', '/admin/keys/key_does_not_exist'), 404);
  });

  test('POST /admin/keys/{id}/rotate: a new secret shown once, the old one 401 at once, settings kept', async () => {
    const k = await createKey(gw, { name: 'to-rotate', rpm: 50, models: ['gpt-demo'] });
    assert.equal((await chat(k.key)).status, 200);
    const rot = await api(gw, 'POST', `/admin/keys/${k.id}/rotate`);
    assert.equal(rot.status, 200, rot.text);
    assert.equal(rot.json.id, k.id, 'the same key');
    assert.match(rot.json.key, /^sk-lw-/);
    assert.notEqual(rot.json.key, k.key);
    assert.equal(rot.json.key_prefix, rot.json.key.slice(0, rot.json.key_prefix.length));
    assert.equal(rot.json.rpm, 50);
    assert.deepEqual(rot.json.models, ['gpt-demo']);
    assert.equal((await chat(rot.json.key)).status, 200, 'the new secret works');
    assert.equal((await chat(k.key)).status, 401, 'the old one does not');
    const shown = await api(gw, 'GET', `/admin/keys/${k.id}`);
    assert.equal(shown.json.key, undefined, 'the secret is shown once');
    const audit = await api(gw, 'GET', '/admin/audit?limit=5');
    assert.ok(audit.json.data.some((e) => e.action === 'key.rotate' && e.target === k.id), audit.text);
    assert.ok(!audit.text.includes(rot.json.key), 'the audit log has no secret');
    // An operator gets the secret: it rotates keys of lower roles only, and never itself.
    const op = await createKey(gw, { name: 'rotating-operator', role: 'operator' });
    const peer = await createKey(gw, { name: 'peer-operator', role: 'operator' });
    assertAdminError(await api(gw, 'POST', `/admin/keys/${peer.id}/rotate`, { key: op.key }), 403);
    assertAdminError(await api(gw, 'POST', `/admin/keys/${op.id}/rotate`, { key: op.key }), 403);
    const user = await createKey(gw, { name: 'operators-user' });
    assert.equal((await api(gw, 'POST', `/admin/keys/${user.id}/rotate`, { key: op.key })).status, 200);
    // A revoked key, or none: 404; GET: 405.
    await api(gw, 'DELETE', `/admin/keys/${user.id}`);
    assertAdminError(await api(gw, 'POST', `/admin/keys/${user.id}/rotate`), 404);
    assertAdminError(await api(gw, 'POST', '/admin/keys/key_nope/rotate'), 404);
    assert.equal((await api(gw, 'GET', `/admin/keys/${k.id}/rotate`)).status, 405);
  });

  test('PATCH /admin/keys/{id}: the owner can be changed or cleared, not to a user that does not exist', async () => {
    const k = await createKey(gw, { name: 'to-patch' });
    const u = (await api(gw, 'POST', '/admin/users', { body: { name: 'owner@example.com' } })).json;
    const owned = await api(gw, 'PATCH', `/admin/keys/${k.id}`, { body: { user_id: u.id } });
    assert.equal(owned.json.user_id, u.id, owned.text);
    assertAdminError(await api(gw, 'PATCH', `/admin/keys/${k.id}`, { body: { user_id: 'user_nope' } }), 400);
    const cleared = await api(gw, 'PATCH', `/admin/keys/${k.id}`, { body: { user_id: null } });
    assert.equal(cleared.json.user_id, null, cleared.text);
  });

  test('a key whose expires_at has passed is refused with 401', async () => {
    const past = Math.floor(Date.now() / 1000) - 60;
    const refused = await api(gw, 'POST', '/admin/keys', { body: { name: 'expired', expires_at: past } });
    assert.equal(refused.status, 400, 'a key cannot be created already expired');
    assert.equal(refused.json.error.param, 'expires_at');
    const k = await createKey(gw, { name: 'expiring', expires_at: past + 3600 });
    assert.equal((await chat(k.key)).status, 200);
    // Moving the expiry into the past takes effect on the very next request.
    const moved = await api(gw, 'PATCH', `/admin/keys/${k.id}`, { body: { expires_at: past } });
    assert.equal(moved.status, 200, moved.text);
    const r = await chat(k.key);
    assert.equal(r.status, 401, r.text);
    const future = await createKey(gw, { name: 'not-yet', expires_at: Math.floor(Date.now() / 1000) + 3600 });
    assert.equal((await chat(future.key)).status, 200);
  });

  test('invalid key requests are refused with 400 and an admin error body', async () => {
    assertAdminError(await api(gw, 'POST', '/admin/keys', { body: {} }), 400);            // no name
    assertAdminError(await api(gw, 'POST', '/admin/keys', { body: '{"name":' }), 400);     // bad JSON
    assertAdminError(await api(gw, 'POST', '/admin/keys', { body: { name: 'x', role: 'emperor' } }), 400);
    assertAdminError(await api(gw, 'POST', '/admin/keys', { body: { name: 'x', models: 'gpt-demo' } }), 400);
  });
});

describe('admin access control', () => {
  test('the admin API without a key is 401', async () => {
    assertAdminError(await api(gw, 'GET', '/admin/keys', { key: null }), 401);
    assertAdminError(await api(gw, 'POST', '/admin/keys', { key: null, body: { name: 'nope' } }), 401);
  });

  test('the admin API with a wrong key is 401', async () => {
    assertAdminError(await api(gw, 'GET', '/admin/keys', { key: `${gw.masterKey}x` }), 401);
  });

  test('a non-admin virtual key on the admin API is 403', async () => {
    const user = await createKey(gw, { name: 'plain-user' });
    const r = await api(gw, 'GET', '/admin/keys', { key: user.key });
    assertAdminError(r, 403);
    assertAdminError(await api(gw, 'POST', '/admin/keys', { key: user.key, body: { name: 'escalate' } }), 403);
    assertAdminError(await api(gw, 'DELETE', `/admin/keys/${user.id}`, { key: user.key }), 403);
    // The 403 did not revoke anything.
    assert.equal((await chat(user.key)).status, 200);
  });

  test('a virtual key with role admin may use the admin API', async () => {
    const admin = await createKey(gw, { name: 'ops', role: 'admin' });
    const r = await api(gw, 'GET', '/admin/keys', { key: admin.key });
    assert.equal(r.status, 200, r.text);
    assert.ok(r.json.data.some((k) => k.id === admin.id));
  });

  test('an unknown admin path is 404 and a wrong method is 405', async () => {
    assertAdminError(await api(gw, 'GET', '/admin/nothing'), 404);
    assertAdminError(await api(gw, 'PUT', '/admin/keys', { body: { name: 'x' } }), 405);
  });
});

describe('prices and usage reports', () => {
  test('PUT /admin/prices/{model} creates a price and every change bumps its version', async () => {
    const first = await api(gw, 'PUT', '/admin/prices/gpt-demo', { body: { input_per_1m: 1.5, output_per_1m: 6 } });
    assert.equal(first.status, 201, first.text);
    assert.equal(first.json.version, 1);
    assert.equal(first.json.input_per_1m, 1.5);
    const second = await api(gw, 'PATCH', '/admin/prices/gpt-demo', { body: { cached_input_per_1m: 0.75 } });
    assert.equal(second.status, 200, second.text);
    assert.equal(second.json.version, 2);
    assert.equal(second.json.output_per_1m, 6, 'a partial update keeps the other prices');
    const list = await api(gw, 'GET', '/admin/prices');
    assert.ok(list.json.data.some((p) => p.model === 'gpt-demo' && p.version === 2));
    const bad = await api(gw, 'PUT', '/admin/prices/gpt-demo', { body: { input_per_1m: -1 } });
    assert.equal(bad.status, 400);
    assert.equal(bad.json.error.param, 'input_per_1m');
  });

  test('GET /admin/usage groups the usage records by model, key or day, as JSON or CSV', async () => {
    const k = await createKey(gw, { name: 'reporter' });
    for (let i = 0; i < 3; i++) assert.equal((await chat(k.key, 'one two three')).status, 200);
    // Usage is written behind every 25 ms.
    let byKey;
    for (let i = 0; i < 40; i++) {
      byKey = await api(gw, 'GET', '/admin/usage?group_by=key');
      const row = byKey.json.data.find((r) => r.key === k.id);
      if (row && row.requests === 3) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    const row = byKey.json.data.find((r) => r.key === k.id);
    assert.ok(row, byKey.text);
    assert.equal(row.requests, 3);
    assert.equal(row.prompt_tokens, 9, 'the mock counts 3 words per prompt');
    const byDay = await api(gw, 'GET', '/admin/usage?group_by=day&from=2020-01-01');
    assert.equal(byDay.status, 200);
    assert.match(byDay.json.data[0].day, /^\d{4}-\d{2}-\d{2}$/);
    const future = await api(gw, 'GET', `/admin/usage?group_by=model&from=${Math.floor(Date.now() / 1000) + 3600}`);
    assert.deepEqual(future.json.data, [], 'the time range filters');
    const csv = await api(gw, 'GET', '/admin/usage?group_by=model&format=csv');
    assert.equal(csv.status, 200);
    assert.match(csv.headers.get('content-type'), /^text\/csv/);
    const lines = csv.text.trim().split('\n');
    assert.equal(lines[0], 'model,requests,prompt_tokens,completion_tokens,cached_tokens,errors,cost');
    assert.ok(lines.some((l) => l.startsWith('gpt-demo,')), csv.text);
    const bad = await api(gw, 'GET', '/admin/usage?group_by=planet');
    assert.equal(bad.status, 400);
    assert.equal(bad.json.error.param, 'group_by');
  });
});
