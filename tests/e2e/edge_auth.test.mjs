// Authentication at the edge, in each protocol's own terms: the A2A bus and /mcp refuse a
// missing, wrong or expired key with HTTP 401, a Bearer challenge and a JSON-RPC error
// that carries the request's id; OAuth discovery documents are absent (404), so MCP
// clients (the official SDK client and the MCP Inspector CLI) report the refused key
// instead of starting an OAuth flow; agent cards declare the bearer scheme for protocol
// 0.3 and 1.0; card URLs come from [server] public_url, or the Host header, with
// X-Forwarded-Proto/-Host believed only from [server] trusted_proxies.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { A2AClient } from '@a2a-js/sdk/client';
import { DefaultAgentCardResolver } from 'a2a-sdk-v1/client';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import {
  api, cleanupAll, createKey, rawRequest, renderConfig, run, startGateway, tempDir,
} from './harness.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const INSPECTOR = path.join(here, 'node_modules/.bin/mcp-inspector');

after(cleanupAll);

/** POSTs a JSON-RPC body (text) and parses the answer. */
async function rpcRaw(gw, target, text, headers = {}) {
  const r = await rawRequest({
    port: gw.port, method: 'POST', path: target, body: text,
    headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', ...headers },
  });
  let json;
  try { json = JSON.parse(r.body); } catch { json = undefined; }
  return { ...r, json };
}

function assertRpcRefusal(r, status, id, what) {
  assert.equal(r.status, status, `${what}: ${r.body}`);
  assert.match(r.headers['content-type'], /application\/json/, what);
  assert.equal(r.json?.jsonrpc, '2.0', `${what}: not a JSON-RPC answer: ${r.body}`);
  assert.deepEqual(r.json.id, id, `${what}: the request's id is echoed`);
  assert.equal(typeof r.json.error?.code, 'number', what);
  assert.ok(r.json.error.message.length > 0, what);
  assert.equal(r.json.result, undefined, what);
  assert.equal(r.json.error.code, -32010, `${what}: the code for a refused key`);
}

describe('401 on the JSON-RPC endpoints', () => {
  let gw;
  let expired;
  before(async () => {
    gw = await startGateway({ config: renderConfig({}) });
    const past = Math.floor(Date.now() / 1000) - 60;
    expired = await createKey(gw, { name: 'expiring', expires_at: past + 3600 });
    const moved = await api(gw, 'PATCH', `/admin/keys/${expired.id}`, { body: { expires_at: past } });
    assert.equal(moved.status, 200, moved.text);
  });

  const send = { jsonrpc: '2.0', id: 'rq-7', method: 'message/send', params: { message: { role: 'user', parts: [] } } };

  for (const target of ['/a2a', '/a2a/alpha']) {
    test(`${target}: no key, a wrong key and an expired key are JSON-RPC errors with the id and a Bearer challenge`, async () => {
      const none = await rpcRaw(gw, target, JSON.stringify(send));
      assertRpcRefusal(none, 401, 'rq-7', 'no key');
      assert.match(none.headers['www-authenticate'], /^Bearer\b/);
      assert.match(none.json.error.message, /missing API key/);

      const wrong = await rpcRaw(gw, target, JSON.stringify({ ...send, id: 42 }), { authorization: 'Bearer sk-wrong' });
      assertRpcRefusal(wrong, 401, 42, 'wrong key');
      assert.match(wrong.headers['www-authenticate'], /^Bearer\b.*error="invalid_token"/);

      const old = await rpcRaw(gw, target, JSON.stringify({ ...send, id: 43 }), { 'x-api-key': expired.key });
      assertRpcRefusal(old, 401, 43, 'expired key');
      assert.match(old.json.error.message, /expired/);

      const unreadable = await rpcRaw(gw, target, '{"jsonrpc":"2.0","id":', {});
      assertRpcRefusal(unreadable, 401, null, 'unreadable body');
    });
  }

  test('/mcp: 401 with WWW-Authenticate: Bearer realm="lowart" and a JSON-RPC error with the id', async () => {
    const body = JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/list' });
    const none = await rpcRaw(gw, '/mcp', body);
    assertRpcRefusal(none, 401, 1, 'no key');
    assert.match(none.headers['www-authenticate'], /^Bearer realm="lowart"/);
    const wrong = await rpcRaw(gw, '/mcp', body, { authorization: 'Bearer sk-nope' });
    assertRpcRefusal(wrong, 401, 1, 'wrong key');
    assert.match(wrong.headers['www-authenticate'], /^Bearer realm="lowart", error="invalid_token"/);
  });

  test('the other endpoints keep their own envelopes, with the Bearer challenge', async () => {
    const agents = await api(gw, 'GET', '/v1/agents', { key: null });
    assert.equal(agents.status, 401);
    assert.equal(agents.json.error.code, 'invalid_api_key', agents.text);
    assert.match(agents.headers.get('www-authenticate'), /^Bearer realm="lowart"/);
    const models = await api(gw, 'GET', '/v1/models', { key: 'sk-wrong' });
    assert.equal(models.status, 401);
    assert.equal(typeof models.json.error.message, 'string');
  });

  test('OAuth discovery documents are 404 (JSON) without a key, so clients do not start OAuth', async () => {
    for (const p of ['/.well-known/oauth-protected-resource', '/.well-known/oauth-protected-resource/mcp',
      '/.well-known/oauth-authorization-server', '/.well-known/oauth-authorization-server/mcp',
      '/.well-known/openid-configuration']) {
      const r = await api(gw, 'GET', p, { key: null });
      assert.equal(r.status, 404, `${p}: ${r.text}`);
      assert.equal(typeof r.json?.error?.message, 'string', `${p}: ${r.text}`);
    }
    // The agent card is still there.
    assert.equal((await api(gw, 'GET', '/.well-known/agent-card.json', { key: null })).status, 200);
  });

  test('the official MCP client reports the refused key (401), and works with a good one', async () => {
    for (const headers of [{}, { authorization: 'Bearer sk-not-a-key' }]) {
      const client = new Client({ name: 'edge-auth', version: '0.0.0' });
      const transport = new StreamableHTTPClientTransport(new URL(`${gw.url}/mcp`), { requestInit: { headers } });
      await assert.rejects(client.connect(transport, { timeout: 5000 }), (e) => {
        assert.match(String(e.message), /401|invalid API key|missing API key/i);
        return true;
      });
      await client.close().catch(() => {});
    }
    const client = new Client({ name: 'edge-auth', version: '0.0.0' });
    const transport = new StreamableHTTPClientTransport(new URL(`${gw.url}/mcp`), {
      requestInit: { headers: { authorization: `Bearer ${gw.masterKey}` } },
    });
    await client.connect(transport, { timeout: 5000 });
    assert.deepEqual((await client.listTools()).tools, []);
    await client.close();
  });

  test('the MCP Inspector CLI reports the refused key for a bad or missing key, and lists tools with a good one', {
    skip: fs.existsSync(INSPECTOR) ? false : 'npm ci has not installed @modelcontextprotocol/inspector',
  }, async () => {
    // Its own home and catalog: the inspector keeps state under ~/.mcp-inspector.
    const home = await tempDir('lowart-inspector-');
    const inspect = (headers, extra = []) => run(INSPECTOR, ['--cli', `${gw.url}/mcp`, '--transport', 'http',
      '--method', 'tools/list', ...headers.flatMap((h) => ['--header', h]), ...extra],
    { timeoutMs: 30000, env: { HOME: home, MCP_CATALOG_PATH: path.join(home, 'mcp.json'), MCP_INSPECTOR_SECRET_STORE: 'memory' } });
    for (const [headers, message] of [[[], /missing API key/], [['Authorization: Bearer sk-not-a-key'], /invalid API key/]]) {
      // --stored-auth-only: the inspector's non-interactive mode (never starts OAuth itself).
      const r = await inspect(headers, ['--stored-auth-only']);
      const out = r.stdout + r.stderr;
      assert.ok(!r.error?.killed, `the inspector hung (killed after 30 s): ${out}`);
      assert.notEqual(r.code, 0, `the inspector succeeded without a valid key: ${out}`);
      assert.match(out, /auth_required/, out);
      assert.match(out, message, `the inspector shows lowart's own refusal: ${out}`);
      // Without the flag and without a terminal it reports that authentication is required.
      const plain = await inspect(headers);
      assert.ok(!plain.error?.killed, `the inspector hung: ${plain.stdout + plain.stderr}`);
      assert.notEqual(plain.code, 0);
      assert.match(plain.stdout + plain.stderr, /auth_required/);
    }
    const ok = await inspect([`Authorization: Bearer ${gw.masterKey}`]);
    assert.equal(ok.code, 0, ok.stdout + ok.stderr);
    assert.deepEqual(JSON.parse(ok.stdout).tools, []);
  });
});

describe('agent cards', () => {
  let gw;
  before(async () => {
    gw = await startGateway({ config: renderConfig({}) });
    const k = await createKey(gw, { name: 'agent-key' });
    const r = await api(gw, 'POST', '/admin/agents', { body: { name: 'alpha', skills: ['summarize'], key_id: k.id } });
    assert.equal(r.status, 201, r.text);
  });

  const card = async (p, headers = {}) => {
    const r = await rawRequest({ port: gw.port, path: p, headers });
    assert.equal(r.status, 200, r.body);
    return JSON.parse(r.body);
  };

  test('declare the bearer scheme for protocol 0.3 (security) and 1.0 (securityRequirements)', async () => {
    for (const p of ['/.well-known/agent-card.json', '/a2a/alpha/.well-known/agent-card.json']) {
      const c = await card(p);
      assert.equal(c.securitySchemes.bearer.type, 'http', p);
      assert.equal(c.securitySchemes.bearer.scheme, 'bearer', p);
      assert.deepEqual(c.security, [{ bearer: [] }], p);
      assert.equal(c.securitySchemes.bearer.httpAuthSecurityScheme.scheme, 'Bearer', p);
      assert.deepEqual(c.securityRequirements, [{ schemes: { bearer: { list: [] } } }], p);
    }
  });

  test('both SDK generations read the cards', async () => {
    const v03 = await A2AClient.fromCardUrl(`${gw.url}/a2a/alpha/.well-known/agent-card.json`);
    const c03 = await v03.getAgentCard();
    assert.equal(c03.name, 'alpha');
    assert.equal(c03.securitySchemes.bearer.scheme, 'bearer');
    const c10 = await new DefaultAgentCardResolver().resolve(`${gw.url}/a2a/alpha/`);
    assert.equal(c10.name, 'alpha');
    assert.equal(c10.supportedInterfaces[0].url, `${gw.url}/a2a/alpha`);
    assert.deepEqual(c10.securityRequirements, [{ schemes: { bearer: { list: [] } } }]);
  });

  test('without trusted proxies, forged X-Forwarded-Proto/-Host do not change the card URL', async () => {
    const forged = { 'x-forwarded-host': 'evil.example', 'x-forwarded-proto': 'https' };
    const top = await card('/.well-known/agent-card.json', forged);
    assert.equal(top.url, `${gw.url}/a2a`);
    const alpha = await card('/a2a/alpha/.well-known/agent-card.json', forged);
    assert.equal(alpha.url, `${gw.url}/a2a/alpha`);
    assert.equal(alpha.supportedInterfaces[0].url, `${gw.url}/a2a/alpha`);
    // The Host header names the gateway as the client reached it.
    const viaHost = await card('/a2a/alpha/.well-known/agent-card.json', { host: `localhost:${gw.port}` });
    assert.equal(viaHost.url, `http://localhost:${gw.port}/a2a/alpha`);
  });
});

describe('card URLs behind a proxy', () => {
  test('[server] public_url is what the cards say, whatever Host and X-Forwarded-Host say', async () => {
    const gw = await startGateway({
      config: renderConfig({ server: { public_url: 'https://gw.example.com/', trusted_proxies: ['127.0.0.1'] } }),
    });
    const headers = { host: 'other.example', 'x-forwarded-host': 'evil.example', 'x-forwarded-proto': 'http' };
    const r = await rawRequest({ port: gw.port, path: '/.well-known/agent-card.json', headers });
    const top = JSON.parse(r.body);
    assert.equal(top.url, 'https://gw.example.com/a2a');
    assert.equal(top.supportedInterfaces[0].url, 'https://gw.example.com/a2a');
    await gw.stop();
  });

  test('LOWART_PUBLIC_URL sets it from the environment', async () => {
    const gw = await startGateway({ config: renderConfig({}), env: { LOWART_PUBLIC_URL: 'https://env.example.com/lowart' } });
    const top = (await api(gw, 'GET', '/.well-known/agent-card.json', { key: null })).json;
    assert.equal(top.url, 'https://env.example.com/lowart/a2a');
    await gw.stop();
  });

  test('X-Forwarded-Proto/-Host are believed from a trusted proxy (and only well-formed hosts)', async () => {
    const gw = await startGateway({ config: renderConfig({ server: { trusted_proxies: ['::1', '127.0.0.1'] } }) });
    const get = async (headers) => JSON.parse((await rawRequest({ port: gw.port, path: '/.well-known/agent-card.json', headers })).body);
    const top = await get({ 'x-forwarded-host': 'gw.proxy.example, inner.example', 'x-forwarded-proto': 'https' });
    assert.equal(top.url, 'https://gw.proxy.example/a2a');
    const bad = await get({ 'x-forwarded-host': 'evil.example/path?x=1', 'x-forwarded-proto': 'gopher' });
    assert.equal(bad.url, `${gw.url}/a2a`);
    await gw.stop();
  });

  test('a malformed public_url or trusted_proxies entry stops the start, naming the field', async () => {
    await assert.rejects(startGateway({ config: renderConfig({ server: { public_url: 'gw.example.com' } }) }),
      /server\.public_url/);
    await assert.rejects(startGateway({ config: renderConfig({ server: { trusted_proxies: ['10.0.0.0/8'] } }) }),
      /server\.trusted_proxies\[0\]/);
  });
});
