// Secrets at rest and restarts: provider keys sent through the admin API are stored
// AES-256-GCM sealed and never shown; the gateway refuses to start without the right
// LOWART_ENCRYPTION_KEY; `lowart secrets rotate` re-seals under a new key; and a
// restart on the same database keeps every team, user, key, provider and model.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import fsp from 'node:fs/promises';
import path from 'node:path';
import {
  LOWART_BIN, api, cleanupAll, createKey, freePort, mockReset, mockStats, renderConfig, run, sqliteQuery,
  startGateway, startMock, tempDir,
} from './harness.mjs';

let mock;

before(async () => {
  mock = await startMock();
});

after(cleanupAll);

const newKey = () => randomBytes(32).toString('hex');
/** The key id lowart writes into sealed values: the first 8 hex digits of SHA-256(raw key). */
const keyId = (hex) => createHash('sha256').update(Buffer.from(hex, 'hex')).digest('hex').slice(0, 8);
const uniq = (prefix) => `${prefix}-${randomBytes(4).toString('hex')}`;
/** Every provider key a test made: the last test of 'encryption at rest' scans the flushed log for all. */
const madeSecrets = [];
const secretKey = () => {
  const k = `sk-vendor-SECRET-${randomBytes(12).toString('hex')}`;
  madeSecrets.push(k);
  return k;
};

/** Encryption settings for a gateway: `key` (or none), never an inherited PREVIOUS. */
const encEnv = (key) => ({ LOWART_ENCRYPTION_KEY: key ?? '', LOWART_ENCRYPTION_KEY_PREVIOUS: '', LOWART_ENCRYPTION_KEY_FILE: '' });

/**
 * A config with a key-less file provider "vendor" and a file model "vendor-model" on it,
 * plus the plain provider "mock" and model "gpt-demo".
 */
const vendorConfig = () => renderConfig({
  providers: [
    { name: 'mock', base_url: `${mock.url}/v1` },
    { name: 'vendor', base_url: `${mock.url}/v1` },
  ],
  models: [
    { name: 'gpt-demo', deployments: [{ provider: 'mock', model: 'mock-model' }] },
    { name: 'vendor-model', deployments: [{ provider: 'vendor', model: 'vendor-upstream' }] },
  ],
});

const chat = (gw, model, key = gw.masterKey, content = 'hello world') => api(gw, 'POST', '/v1/chat/completions', {
  key, body: { model, messages: [{ role: 'user', content }] },
});

/** The raw bytes of the SQLite database and of its WAL and journal files (those that exist). */
async function databaseBytes(dbPath) {
  const parts = [];
  for (const p of [dbPath, `${dbPath}-wal`, `${dbPath}-journal`]) {
    try { parts.push(await fsp.readFile(p)); } catch (e) { if (e.code !== 'ENOENT') throw e; }
  }
  assert.ok(parts.length > 0, `no database file at ${dbPath}`);
  return Buffer.concat(parts);
}

/**
 * Runs `lowart serve` on `dir` expecting it to refuse to start: resolves { code, stderr, stdout }.
 * Bounded: a gateway that does start is killed after 8 s (code -1).
 */
async function serveExpectingRefusal(dir, env) {
  const port = await freePort();
  return run(LOWART_BIN, ['serve', '--config', path.join(dir, 'lowart.toml')], {
    timeoutMs: 8000,
    env: {
      LOWART_MASTER_KEY: `sk-master-${randomBytes(8).toString('hex')}`,
      LOWART_DB: path.join(dir, 'lowart.db'),
      LOWART_LISTEN: `127.0.0.1:${port}`,
      ...env,
    },
  });
}

/** `lowart secrets rotate` on `dir`'s config and database. */
const rotate = (dir, env) => run(LOWART_BIN, ['secrets', 'rotate', '--config', path.join(dir, 'lowart.toml')], {
  timeoutMs: 10000,
  env: { LOWART_DB: path.join(dir, 'lowart.db'), ...env },
});

const storedKey = async (dbPath, name) =>
  (await sqliteQuery(dbPath, `SELECT api_key FROM providers WHERE name = '${name}'`))[0]?.api_key;

describe('without LOWART_ENCRYPTION_KEY', () => {
  test('a provider api_key is refused with 400 (param api_key) and nothing is stored', async () => {
    const gw = await startGateway({ config: vendorConfig(), env: encEnv() });
    const secret = secretKey();
    const name = uniq('keyless');
    const r = await api(gw, 'POST', '/admin/providers', {
      body: { name, kind: 'openai', base_url: `${mock.url}/v1`, api_key: secret },
    });
    assert.equal(r.status, 400, r.text);
    assert.equal(r.json.error.param, 'api_key');
    assert.equal((await api(gw, 'GET', `/admin/providers/${name}`)).status, 404);
    // Overriding a file provider with a key is refused the same way.
    const put = await api(gw, 'PUT', '/admin/providers/vendor', { body: { api_key: secret } });
    assert.equal(put.status, 400, put.text);
    assert.equal(put.json.error.param, 'api_key');
    assert.deepEqual(await sqliteQuery(gw.dbPath, 'SELECT name FROM providers'), []);
    // A provider without a key needs no encryption.
    const plain = await api(gw, 'POST', '/admin/providers', { body: { name, kind: 'openai', base_url: `${mock.url}/v1` } });
    assert.equal(plain.status, 201, plain.text);
    assert.equal(plain.json.api_key_set, false);
    assert.ok(!(await databaseBytes(gw.dbPath)).includes(secret));
  });
});

describe('encryption at rest', () => {
  const encKey = newKey();
  let gw;
  let secret;
  let vendor;

  before(async () => {
    gw = await startGateway({ config: vendorConfig(), env: encEnv(encKey) });
    secret = secretKey();
    vendor = uniq('vendor-api');
  });

  test('a provider api key sent through the API is stored sealed (lwenc:v1:<key id>:...) and shown nowhere', async () => {
    const created = await api(gw, 'POST', '/admin/providers', {
      body: { name: vendor, kind: 'openai', base_url: `${mock.url}/v1`, api_key: secret, connect_timeout_ms: 2500 },
    });
    assert.equal(created.status, 201, created.text);
    assert.equal(created.json.name, vendor);
    assert.equal(created.json.source, 'api');
    assert.equal(created.json.api_key_set, true);
    assert.ok(!('api_key' in created.json), 'the response must not carry an api_key field');
    assert.equal(created.json.settings.connect_timeout_ms, 2500);

    const sealed = await storedKey(gw.dbPath, vendor);
    assert.match(sealed, new RegExp(`^lwenc:v1:${keyId(encKey)}:[A-Za-z0-9+/]+=*$`));
    assert.ok(!sealed.includes(secret));

    const listed = await api(gw, 'GET', '/admin/providers');
    const byName = Object.fromEntries(listed.json.data.map((p) => [p.name, p]));
    assert.equal(byName[vendor].api_key_set, true);
    assert.equal(byName[vendor].source, 'api');
    assert.equal(byName.mock.source, 'config');
    assert.equal(byName.mock.api_key_set, false);
    const one = await api(gw, 'GET', `/admin/providers/${vendor}`);
    assert.equal(one.json.api_key_set, true);
    const audit = await api(gw, 'GET', '/admin/audit?action=provider.');
    const entry = audit.json.data.find((e) => e.target === vendor);
    assert.equal(entry.action, 'provider.create');
    assert.equal(entry.detail.api_key_changed, true);
    for (const [what, text] of [['POST', created.text], ['GET list', listed.text], ['GET one', one.text], ['audit', audit.text]])
      assert.ok(!text.includes(secret), `${what} response contains the secret`);

    const bytes = await databaseBytes(gw.dbPath);
    // The row itself did reach the files read here (so the check below can fail).
    assert.ok(bytes.includes(vendor), 'the provider row is not in the database files');
    assert.ok(bytes.includes(sealed.slice(0, 40)), 'the sealed value is not in the database files');
    assert.ok(!bytes.includes(secret), 'the plain api key is in the SQLite files');
    assert.ok(!gw.rawLogs().includes(secret), 'the plain api key is in the logs');
  });

  test('re-keying a provider with PATCH reseals it; the old and new keys appear in no file, response or log', async () => {
    const second = secretKey();
    const before = await storedKey(gw.dbPath, vendor);
    const r = await api(gw, 'PATCH', `/admin/providers/${vendor}`, { body: { api_key: second } });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.api_key_set, true);
    const after = await storedKey(gw.dbPath, vendor);
    assert.notEqual(after, before);
    assert.match(after, new RegExp(`^lwenc:v1:${keyId(encKey)}:`));
    // A PATCH without api_key keeps the stored one.
    const keep = await api(gw, 'PATCH', `/admin/providers/${vendor}`, { body: { connect_timeout_ms: 3000 } });
    assert.equal(keep.status, 200, keep.text);
    assert.equal(await storedKey(gw.dbPath, vendor), after);
    const bytes = await databaseBytes(gw.dbPath);
    for (const s of [secret, second]) {
      assert.ok(!r.text.includes(s) && !keep.text.includes(s));
      assert.ok(!bytes.includes(s), 'a plain api key is in the SQLite files');
      assert.ok(!gw.rawLogs().includes(s), 'a plain api key is in the logs');
    }
    const audit = (await api(gw, 'GET', '/admin/audit')).text;
    assert.ok(!audit.includes(secret) && !audit.includes(second), 'the audit log contains a provider key');
    secret = second;
  });

  test('PUT with an api_key on a lowart.toml provider overrides it: the sealed key goes upstream, and stays secret', async () => {
    const overrideSecret = secretKey();
    const r = await api(gw, 'PUT', '/admin/providers/vendor', { body: { api_key: overrideSecret } });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.source, 'api');
    assert.equal(r.json.api_key_set, true);
    assert.equal(r.json.base_url, `${mock.url}/v1`, 'the override starts from the file\'s settings');
    assert.match(await storedKey(gw.dbPath, 'vendor'), new RegExp(`^lwenc:v1:${keyId(encKey)}:`));
    await mockReset(mock);
    const c = await chat(gw, 'vendor-model', gw.masterKey, 'through the override');
    assert.equal(c.status, 200, c.text);
    const stats = await mockStats(mock);
    assert.equal(stats.last_authorization, `Bearer ${overrideSecret}`);
    assert.equal(JSON.parse(stats.last_body).model, 'vendor-upstream');
    // Deleting the override falls back to the file's provider (no key).
    assert.equal((await api(gw, 'DELETE', '/admin/providers/vendor')).status, 200);
    const listed = (await api(gw, 'GET', '/admin/providers')).json.data.find((p) => p.name === 'vendor');
    assert.equal(listed.source, 'config');
    await mockReset(mock);
    assert.equal((await chat(gw, 'vendor-model')).status, 200);
    assert.equal((await mockStats(mock)).last_authorization ?? '', '', 'the removed override key must no longer be sent');
    const bytes = await databaseBytes(gw.dbPath);
    assert.ok(!bytes.includes(overrideSecret), 'the override key is in the SQLite files');
    assert.ok(!gw.rawLogs().includes(overrideSecret), 'the override key is in the logs');
  });

  test('a model created through the API on the sealed provider answers 200 and the upstream sees Bearer <secret>', async () => {
    const model = uniq('sealed-model');
    const m = await api(gw, 'POST', '/admin/models', {
      body: { name: model, deployments: [{ provider: vendor, model: 'sealed-upstream' }] },
    });
    assert.equal(m.status, 201, m.text);
    await mockReset(mock);
    const r = await chat(gw, model, gw.masterKey, 'sealed path');
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.choices[0].message.content, 'mock reply: sealed path');
    const stats = await mockStats(mock);
    assert.equal(stats.last_authorization, `Bearer ${secret}`);
    assert.equal(JSON.parse(stats.last_body).model, 'sealed-upstream');
    assert.ok(!(await databaseBytes(gw.dbPath)).includes(secret), 'the plain api key is in the SQLite files');
    assert.ok(!gw.rawLogs().includes(secret), 'the plain api key is in the logs');
  });

  test('after SIGTERM has flushed the log, no provider key used above is in it', async () => {
    // The log writer batches lines; only a stopped gateway's output is complete.
    const stopped = await gw.stop('SIGTERM', 10000);
    assert.equal(stopped.code, 0);
    const logs = gw.rawLogs();
    assert.ok(logs.includes('/admin/providers'), 'the access log of the calls above is there (so the scan can fail)');
    assert.ok(madeSecrets.length >= 3);
    for (const s of madeSecrets) assert.ok(!logs.includes(s), 'a provider key is in the log');
  });
});

describe('key rotation and start refusals', () => {
  const oldKey = newKey();
  const newKeyHex = newKey();
  const secret = secretKey();
  let dir;
  let masterKey;
  let sealedBefore;

  before(async () => {
    dir = await tempDir();
    const gw = await startGateway({ config: vendorConfig(), dir, env: encEnv(oldKey) });
    masterKey = gw.masterKey;
    const r = await api(gw, 'PUT', '/admin/providers/vendor', { body: { api_key: secret } });
    assert.equal(r.status, 200, r.text);
    await mockReset(mock);
    assert.equal((await chat(gw, 'vendor-model')).status, 200);
    assert.equal((await mockStats(mock)).last_authorization, `Bearer ${secret}`);
    const stopped = await gw.stop('SIGTERM');
    assert.equal(stopped.code, 0, `the gateway did not stop cleanly: ${JSON.stringify(stopped)}`);
    sealedBefore = await storedKey(path.join(dir, 'lowart.db'), 'vendor');
    assert.match(sealedBefore, new RegExp(`^lwenc:v1:${keyId(oldKey)}:`));
  });

  test('with sealed keys in the database, the gateway refuses to start without LOWART_ENCRYPTION_KEY', async () => {
    const r = await serveExpectingRefusal(dir, encEnv());
    assert.ok(r.code > 0, `expected a non-zero exit, got ${r.code} (-1: it kept running)\n${r.stderr}`);
    assert.match(r.stderr, /LOWART_ENCRYPTION_KEY/);
    // The harness reports the same refusal.
    await assert.rejects(startGateway({ config: vendorConfig(), dir, masterKey, env: encEnv() }),
      /lowart did not become ready[\s\S]*LOWART_ENCRYPTION_KEY/);
  });

  test('the gateway refuses to start with a wrong LOWART_ENCRYPTION_KEY', async () => {
    const r = await serveExpectingRefusal(dir, encEnv(newKey()));
    assert.ok(r.code > 0, `expected a non-zero exit, got ${r.code} (-1: it kept running)\n${r.stderr}`);
    assert.match(r.stderr, /key/i);
    assert.match(r.stderr, /LOWART_ENCRYPTION_KEY|encryption key/i);
    assert.ok(!r.stderr.includes(secret) && !r.stdout.includes(secret));
  });

  test('rotation without LOWART_ENCRYPTION_KEY_PREVIOUS (or with a wrong one) fails with exit 1 and changes nothing', async () => {
    const dbPath = path.join(dir, 'lowart.db');
    const noPrevious = await rotate(dir, encEnv(newKeyHex));
    assert.equal(noPrevious.code, 1, `stdout: ${noPrevious.stdout}\nstderr: ${noPrevious.stderr}`);
    assert.equal(await storedKey(dbPath, 'vendor'), sealedBefore);
    const wrongPrevious = await rotate(dir, { ...encEnv(newKeyHex), LOWART_ENCRYPTION_KEY_PREVIOUS: newKey() });
    assert.equal(wrongPrevious.code, 1, `stdout: ${wrongPrevious.stdout}\nstderr: ${wrongPrevious.stderr}`);
    assert.equal(await storedKey(dbPath, 'vendor'), sealedBefore);
    for (const r of [noPrevious, wrongPrevious]) assert.ok(!r.stderr.includes(secret) && !r.stdout.includes(secret));
  });

  test('rotation re-seals under the new key; the gateway then starts with the new key only, and not with the old', async () => {
    const dbPath = path.join(dir, 'lowart.db');
    const r = await rotate(dir, { ...encEnv(newKeyHex), LOWART_ENCRYPTION_KEY_PREVIOUS: oldKey });
    assert.equal(r.code, 0, `stdout: ${r.stdout}\nstderr: ${r.stderr}`);
    assert.match(r.stdout, new RegExp(`re-encrypted 1 provider key\\(s\\) under key id ${keyId(newKeyHex)}`));
    const sealedAfter = await storedKey(dbPath, 'vendor');
    assert.match(sealedAfter, new RegExp(`^lwenc:v1:${keyId(newKeyHex)}:`));
    assert.notEqual(sealedAfter, sealedBefore);
    assert.ok(!(await databaseBytes(dbPath)).includes(secret));

    const gw = await startGateway({ config: vendorConfig(), dir, masterKey, env: encEnv(newKeyHex) });
    await mockReset(mock);
    const c = await chat(gw, 'vendor-model', masterKey, 'after rotation');
    assert.equal(c.status, 200, c.text);
    assert.equal((await mockStats(mock)).last_authorization, `Bearer ${secret}`, 'the upstream must get the same api key');
    const listed = (await api(gw, 'GET', '/admin/providers')).json.data.find((p) => p.name === 'vendor');
    assert.equal(listed.api_key_set, true);
    assert.equal((await gw.stop('SIGTERM')).code, 0);

    const old = await serveExpectingRefusal(dir, encEnv(oldKey));
    assert.ok(old.code > 0, `the old key alone must no longer start the gateway; got ${old.code}\n${old.stderr}`);
    assert.match(old.stderr, /LOWART_ENCRYPTION_KEY|encryption key/i);
  });
});

describe('restart', () => {
  test('a restart on the same database keeps teams, users, keys, providers and models, and they still work', async () => {
    const dir = await tempDir();
    const encKey = newKey();
    const secret = secretKey();
    const config = vendorConfig();
    const gw1 = await startGateway({ config, dir, env: encEnv(encKey) });
    const must = async (method, p, body, status = method === 'POST' ? 201 : 200) => {
      const r = await api(gw1, method, p, { body });
      assert.equal(r.status, status, `${method} ${p}: ${r.text}`);
      return r.json;
    };
    const team = await must('POST', '/admin/teams', { name: uniq('persist-team'), rpm: 1000 });
    const user = await must('POST', '/admin/users', { name: uniq('persist-user'), team: team.id });
    // The API model sits on the file provider "mock"; "mock" is then overridden with a sealed key.
    const model = uniq('persist-model');
    await must('POST', '/admin/models', { name: model, deployments: [{ provider: 'mock', model: 'persist-upstream' }] });
    const prov = uniq('persist-prov');
    await must('POST', '/admin/providers', { name: prov, kind: 'openai', base_url: `${mock.url}/v1`, api_key: secretKey(), total_timeout_ms: 9000 });
    await must('PUT', '/admin/providers/mock', { api_key: secret });
    const key = await createKey(gw1, { name: uniq('persist-key'), team: team.id, user_id: user.id, models: [model], budget_period: 'month', budget_tokens: 1_000_000 });
    const revoked = await createKey(gw1, { name: uniq('persist-revoked') });
    await must('DELETE', `/admin/keys/${revoked.id}`);
    await mockReset(mock);
    assert.equal((await chat(gw1, model, key.key)).status, 200);
    assert.equal((await mockStats(mock)).last_authorization, `Bearer ${secret}`);
    const snapshot = {};
    for (const res of ['teams', 'users', 'keys', 'providers', 'models']) snapshot[res] = (await must('GET', `/admin/${res}`)).data;
    assert.equal((await gw1.stop('SIGTERM')).code, 0);

    const gw2 = await startGateway({ config, dir, masterKey: gw1.masterKey, env: encEnv(encKey) });
    for (const res of ['teams', 'users', 'keys', 'providers', 'models']) {
      const r = await api(gw2, 'GET', `/admin/${res}`);
      assert.equal(r.status, 200, r.text);
      assert.deepEqual(r.json.data, snapshot[res], `${res} differ after the restart`);
    }
    const providers = Object.fromEntries(snapshot.providers.map((p) => [p.name, p]));
    assert.equal(providers[prov].api_key_set, true);
    assert.equal(providers[prov].settings.total_timeout_ms, 9000);
    assert.equal(providers.mock.source, 'api');
    const k = snapshot.keys.find((x) => x.id === key.id);
    assert.deepEqual([k.team_id, k.user_id, k.models, k.budget_period], [team.id, user.id, [model], 'month']);

    await mockReset(mock);
    const c = await chat(gw2, model, key.key, 'after restart');
    assert.equal(c.status, 200, c.text);
    const stats = await mockStats(mock);
    assert.equal(stats.last_authorization, `Bearer ${secret}`);
    assert.equal(JSON.parse(stats.last_body).model, 'persist-upstream');
    assert.equal((await chat(gw2, 'gpt-demo', key.key)).status, 403, 'the key\'s model list survives the restart');
    assert.equal((await chat(gw2, model, revoked.key)).status, 401, 'a revoked key stays revoked');
    const me = await api(gw2, 'GET', '/v1/me', { key: key.key });
    assert.equal(me.json.user?.id, user.id);
  });
});
