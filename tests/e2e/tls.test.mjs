// HTTPS upstreams: lowart verifies the upstream certificate against the provider's
// ca_file (or the system trust store) and the host name (or IP address) it connects to,
// and fails closed with 502 naming the verification error when it cannot.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  api, cleanupAll, isOpenAIErrorEnvelope, renderConfig, selfSignedCert, startGateway, startMock, tempDir,
} from './harness.mjs';

let mock;
let gw;

before(async () => {
  const dir = await tempDir('lowart-e2e-tls-');
  const tls = await selfSignedCert(dir);
  mock = await startMock({ tls });
  const base = `https://localhost:${mock.port}/v1`;
  gw = await startGateway({
    config: renderConfig({
      providers: [
        { name: 'pinned', base_url: base, ca_file: tls.cert, api_key: 'sk-upstream-tls' },
        { name: 'default-trust', base_url: base },
        { name: 'no-verify', base_url: base, verify_tls: false },
        // The same trusted certificate (valid for the name localhost only), asked for by IP.
        { name: 'by-ip', base_url: `https://127.0.0.1:${mock.port}/v1`, ca_file: tls.cert },
      ],
      models: [
        { name: 'secure', deployments: [{ provider: 'pinned', model: 'mock-model' }] },
        { name: 'untrusted', deployments: [{ provider: 'default-trust', model: 'mock-model' }] },
        { name: 'unverified', deployments: [{ provider: 'no-verify', model: 'mock-model' }] },
        { name: 'wrong-host', deployments: [{ provider: 'by-ip', model: 'mock-model' }] },
      ],
    }),
  });
});

after(cleanupAll);

const chatBody = (model, content) => ({ model, messages: [{ role: 'user', content }] });

test('without ca_file the self-signed upstream fails verification and the client gets 502', async () => {
  // First request of this gateway to the mock: no pooled connection can be involved.
  const r = await api(gw, 'POST', '/v1/chat/completions', { body: chatBody('untrusted', 'should fail') });
  assert.equal(r.status, 502, r.text);
  assert.ok(isOpenAIErrorEnvelope(r.json), r.text);
  assert.equal(r.json.error.type, 'upstream_error');
});

test('a chat reaches an HTTPS upstream whose self-signed certificate is the provider ca_file', async () => {
  const client = gw.client(gw.masterKey);
  const { data, response } = await client.chat.completions.create(chatBody('secure', 'over tls')).withResponse();
  assert.equal(data.choices[0].message.content, 'mock reply: over tls');
  assert.equal(response.headers.get('x-lowart-deployment'), 'pinned/mock-model');
  // Streaming over TLS too.
  const stream = await client.chat.completions.create({ ...chatBody('secure', 'tls stream'), stream: true });
  let text = '';
  for await (const chunk of stream) text += chunk.choices[0]?.delta?.content ?? '';
  assert.equal(text, 'mock reply: tls stream');
});

test('a trusted certificate for localhost served at https://127.0.0.1 fails host-name verification: 502 naming why', async () => {
  // The positive control is the test above: the same CA file and certificate at https://localhost.
  const r = await api(gw, 'POST', '/v1/chat/completions', { body: chatBody('wrong-host', 'name check') });
  assert.equal(r.status, 502, r.text);
  assert.ok(isOpenAIErrorEnvelope(r.json), r.text);
  assert.match(r.json.error.message, /certificate verify failed/, r.text);
  assert.match(r.json.error.message, /IP address mismatch|hostname mismatch/, r.text);
  const ok = await api(gw, 'POST', '/v1/chat/completions', { body: chatBody('secure', 'by name') });
  assert.equal(ok.status, 200, ok.text);
});

test('without ca_file the failure names the untrusted certificate', async () => {
  const r = await api(gw, 'POST', '/v1/chat/completions', { body: chatBody('untrusted', 'why') });
  assert.equal(r.status, 502, r.text);
  assert.match(r.json.error.message, /certificate verify failed.*self-signed certificate/, r.text);
});

test('verify_tls = false accepts the self-signed upstream', async () => {
  const r = await api(gw, 'POST', '/v1/chat/completions', { body: chatBody('unverified', 'no checks') });
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.choices[0].message.content, 'mock reply: no checks');
});

test('a pooled connection opened under laxer TLS settings is not reused by a verifying provider', async () => {
  // Same host:port for all three providers. Leave idle connections from the lax providers
  // in the pool, then ask through the provider that trusts only the system store.
  for (const model of ['unverified', 'secure']) {
    const r = await api(gw, 'POST', '/v1/chat/completions', { body: chatBody(model, 'warm the pool') });
    assert.equal(r.status, 200, r.text);
  }
  const r = await api(gw, 'POST', '/v1/chat/completions', { body: chatBody('untrusted', 'must still fail') });
  assert.equal(r.status, 502, `the default-trust provider got an answer over a connection it never verified: ${r.text}`);
});
