// Lua hooks end to end: a model's on_request / on_response / on_chunk seen through the real
// openai client, refusals in the API's own envelope, hot reload of a file edited on disk, a
// broken script refused while the old one keeps serving, uploads through /admin/scripts, an
// endless loop stopped by the instruction budget, and the example adapter
// (config/scripts/tgi_adapter.lua) turning an upstream with a protocol of its own into
// OpenAI's chat API.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  api, cleanupAll, metricValue, mockStats, parseMetrics, startGateway, startMock, tempDir, waitFor,
} from './harness.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const EXAMPLES = path.resolve(here, '../../config/scripts');

let gw;
let mock;
let tgi; // the non-standard upstream
let tgiSeen = [];
let scriptsDir;

const HOOKS_V1 = `
function on_request(req)
  if req.body.user == "blocked" then return nil, 403, "user blocked by policy" end
  if req.body.user == "spin" then while true do end end
  table.insert(req.body.messages, 1, {role = "system", content = "be brief (v1)"})
  req.body.temperature = 0.25
  req.headers["x-team-tag"] = "lua-" .. req.key.id
  return req
end

function on_response(resp)
  if resp.status == 200 then
    local msg = resp.body.choices[1].message
    msg.content = msg.content .. " [checked by " .. resp.model .. "]"
  end
  return resp
end

function on_chunk(chunk)
  local c = chunk.data.choices and chunk.data.choices[1]
  if c and c.delta and c.delta.content then c.delta.content = string.upper(c.delta.content) end
  return chunk
end
`;

function startTgi() {
  // A text-generation-inference-like server: POST /generate {"inputs","parameters"}.
  return new Promise((resolve) => {
    const srv = http.createServer((req, res) => {
      let body = '';
      req.on('data', (d) => { body += d; });
      req.on('end', () => {
        tgiSeen.push({ path: req.url, headers: req.headers, body });
        if (req.url !== '/generate') {
          res.writeHead(404, { 'content-type': 'application/json' }).end('{"error":"not found"}');
          return;
        }
        const j = JSON.parse(body);
        const words = j.inputs.split(/\s+/).length;
        const out = JSON.stringify({
          generated_text: `tgi saw ${words} words, max ${j.parameters.max_new_tokens}`,
          details: { finish_reason: 'eos_token', generated_tokens: 7, prompt_tokens: words },
        });
        res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(out) }).end(out);
      });
    });
    srv.listen(0, '127.0.0.1', () => resolve(srv));
  });
}

before(async () => {
  mock = await startMock();
  tgi = await startTgi();
  const dir = await tempDir();
  scriptsDir = path.join(dir, 'scripts');
  await fsp.mkdir(scriptsDir);
  await fsp.writeFile(path.join(scriptsDir, 'hooks.lua'), HOOKS_V1);
  await fsp.copyFile(path.join(EXAMPLES, 'tgi_adapter.lua'), path.join(scriptsDir, 'tgi_adapter.lua'));
  const config = `
[server]
listen = "127.0.0.1:3000"
[scripts]
dir = "${scriptsDir}"
poll_ms = 50
instructions = 200000
[[providers]]
name = "mock"
base_url = "${mock.url}/v1"
[[providers]]
name = "tgi"
base_url = "http://127.0.0.1:${tgi.address().port}"
script = "tgi_adapter.lua"
[[models]]
name = "scripted"
script = "hooks.lua"
[[models.deployments]]
provider = "mock"
model = "mock-model"
[[models]]
name = "plain"
[[models.deployments]]
provider = "mock"
model = "mock-model"
[[models]]
name = "tgi-chat"
[[models.deployments]]
provider = "tgi"
model = "tgi-model"
[[models]]
name = "tgi-hooked"
script = "hooks.lua"
[[models.deployments]]
provider = "tgi"
model = "tgi-model"
`;
  gw = await startGateway({ config, dir });
});

after(async () => {
  tgi?.close();
  await cleanupAll();
});

async function listing() {
  const r = await api(gw, 'GET', '/admin/scripts');
  assert.equal(r.status, 200, r.text);
  return Object.fromEntries(r.json.data.map((s) => [s.name, s]));
}

test('GET /admin/scripts lists the loaded scripts with their hooks', async () => {
  const s = await listing();
  assert.equal(s['hooks.lua'].active, true);
  assert.deepEqual([...s['hooks.lua'].hooks].sort(), ['on_chunk', 'on_request', 'on_response']);
  assert.equal(s['hooks.lua'].error, null);
  assert.match(s['hooks.lua'].sha256, /^[0-9a-f]{64}$/);
  assert.deepEqual([...s['tgi_adapter.lua'].hooks].sort(), ['on_request', 'on_response']);
});

test('on_request changes the body and headers, on_response the answer (openai client)', async () => {
  const client = gw.client(gw.masterKey);
  const r = await client.chat.completions.create({ model: 'scripted', messages: [{ role: 'user', content: 'hi there' }] });
  assert.equal(r.choices[0].message.content, 'mock reply: hi there [checked by scripted]');
  const stats = await mockStats(mock);
  const sent = JSON.parse(stats.last_body);
  assert.equal(sent.temperature, 0.25);
  assert.deepEqual(sent.messages[0], { role: 'system', content: 'be brief (v1)' });
  assert.equal(sent.messages[1].content, 'hi there');
  // A model without a script is untouched.
  const p = await client.chat.completions.create({ model: 'plain', messages: [{ role: 'user', content: 'hi there' }] });
  assert.equal(p.choices[0].message.content, 'mock reply: hi there');
  assert.equal(JSON.parse((await mockStats(mock)).last_body).temperature, undefined);
});

test('on_chunk rewrites every streamed chunk as it passes', async () => {
  const client = gw.client(gw.masterKey);
  const stream = await client.chat.completions.create({
    model: 'scripted', stream: true, messages: [{ role: 'user', content: 'stream me please' }],
  });
  let text = '';
  for await (const chunk of stream) text += chunk.choices[0]?.delta?.content ?? '';
  assert.equal(text, 'MOCK REPLY: STREAM ME PLEASE');
});

test('a hook refusal answers with its status and message in the OpenAI envelope', async () => {
  const client = gw.client(gw.masterKey);
  await assert.rejects(
    client.chat.completions.create({ model: 'scripted', user: 'blocked', messages: [{ role: 'user', content: 'x' }] }),
    (e) => e.status === 403 && /user blocked by policy/.test(e.message) && e.code === 'rejected_by_script',
  );
});

test('an endless loop is stopped by the instruction budget with a clear 500; the next request works', async () => {
  const started = Date.now();
  const r = await api(gw, 'POST', '/v1/chat/completions', {
    body: { model: 'scripted', user: 'spin', messages: [{ role: 'user', content: 'x' }] },
  });
  assert.equal(r.status, 500, r.text);
  assert.match(r.json.error.message, /hooks\.lua.*on_request.*instruction budget/);
  assert.equal(r.json.error.code, 'script_error');
  assert.ok(Date.now() - started < 3000, 'the budget ends the loop quickly');
  const ok = await api(gw, 'POST', '/v1/chat/completions', {
    body: { model: 'scripted', messages: [{ role: 'user', content: 'after' }] },
  });
  assert.equal(ok.status, 200, ok.text);
  assert.equal(ok.json.choices[0].message.content, 'mock reply: after [checked by scripted]');
  await gw.waitForLog((l) => l.msg === 'hook failed' && /instruction budget/.test(l.error ?? ''));
});

test('a script edited on disk changes the next requests without a restart', async () => {
  const before = (await listing())['hooks.lua'].version;
  await fsp.writeFile(path.join(scriptsDir, 'hooks.lua'), HOOKS_V1.replace('be brief (v1)', 'be brief (v2)'));
  await waitFor(async () => (await listing())['hooks.lua'].version > before, { what: 'hooks.lua reloaded' });
  const r = await api(gw, 'POST', '/v1/chat/completions', {
    body: { model: 'scripted', messages: [{ role: 'user', content: 'reload' }] },
  });
  assert.equal(r.status, 200, r.text);
  assert.equal(JSON.parse((await mockStats(mock)).last_body).messages[0].content, 'be brief (v2)');
});

test('a broken script on disk is refused and the previous version keeps serving', async () => {
  const good = (await listing())['hooks.lua'];
  await fsp.writeFile(path.join(scriptsDir, 'hooks.lua'), 'function on_request(req)\n  return req\n-- missing end');
  await waitFor(async () => (await listing())['hooks.lua'].error !== null, { what: 'the refusal to show' });
  const s = (await listing())['hooks.lua'];
  assert.match(s.error, /hooks\.lua:3:.*'end' expected/);
  assert.equal(s.version, good.version, 'the old version stays active');
  assert.equal(s.sha256, good.sha256);
  await gw.waitForLog((l) => l.msg === 'script refused; the previous version stays active' && l.script === 'hooks.lua');
  const r = await api(gw, 'POST', '/v1/chat/completions', {
    body: { model: 'scripted', messages: [{ role: 'user', content: 'still' }] },
  });
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.choices[0].message.content, 'mock reply: still [checked by scripted]');
  // Fixing the file clears the error.
  await fsp.writeFile(path.join(scriptsDir, 'hooks.lua'), HOOKS_V1);
  await waitFor(async () => (await listing())['hooks.lua'].error === null, { what: 'the fixed script' });
});

test('uploads through PUT /admin/scripts/{name}: checked, written, live; a broken upload is refused', async () => {
  const src = 'function on_request(req) req.body.temperature = 0.75 return req end';
  const up = await api(gw, 'PUT', '/admin/scripts/hooks.lua', { body: src, headers: { 'content-type': 'text/x-lua' } });
  assert.equal(up.status, 200, up.text);
  assert.equal(up.json.origin, 'upload');
  assert.equal(fs.readFileSync(path.join(scriptsDir, 'hooks.lua'), 'utf8'), src, 'written to the scripts directory');
  let r = await api(gw, 'POST', '/v1/chat/completions', {
    body: { model: 'scripted', messages: [{ role: 'user', content: 'up' }] },
  });
  assert.equal(r.status, 200, r.text);
  assert.equal(JSON.parse((await mockStats(mock)).last_body).temperature, 0.75);
  assert.equal(r.json.choices[0].message.content, 'mock reply: up', 'the uploaded script has no on_response');

  const bad = await api(gw, 'PUT', '/admin/scripts/hooks.lua', { body: 'function on_request(' });
  assert.equal(bad.status, 400, bad.text);
  assert.match(bad.json.error.message, /script refused, the previous version stays active/);
  assert.equal(fs.readFileSync(path.join(scriptsDir, 'hooks.lua'), 'utf8'), src, 'the file is not overwritten');
  r = await api(gw, 'POST', '/v1/chat/completions', {
    body: { model: 'scripted', messages: [{ role: 'user', content: 'up' }] },
  });
  assert.equal(r.status, 200);
  assert.equal(JSON.parse((await mockStats(mock)).last_body).temperature, 0.75);

  const one = await api(gw, 'GET', '/admin/scripts/hooks.lua');
  assert.equal(one.json.source, src);
  assert.match(one.json.error, /expected/);
  const badName = await api(gw, 'PUT', '/admin/scripts/..%2Fescape.lua', { body: src });
  assert.equal(badName.status, 400);
  await api(gw, 'PUT', '/admin/scripts/hooks.lua', { body: HOOKS_V1 });
});

test('the example adapter serves an upstream with its own protocol through the OpenAI API', async () => {
  tgiSeen = [];
  const client = gw.client(gw.masterKey);
  const r = await client.chat.completions.create({
    model: 'tgi-chat', max_tokens: 33, messages: [{ role: 'user', content: 'one two three' }],
  });
  assert.equal(r.object, 'chat.completion');
  assert.equal(r.choices[0].message.content, 'tgi saw 5 words, max 33'); // "user: one two three\nassistant:"
  assert.equal(r.usage.completion_tokens, 7);
  assert.equal(tgiSeen.length, 1);
  assert.equal(tgiSeen[0].path, '/generate');
  assert.equal(tgiSeen[0].headers['x-adapter'], 'tgi_adapter.lua');
  assert.deepEqual(JSON.parse(tgiSeen[0].body).parameters, { max_new_tokens: 33 });
  await assert.rejects(
    client.chat.completions.create({ model: 'tgi-chat', stream: true, messages: [{ role: 'user', content: 'x' }] }),
    (e) => e.status === 400 && /does not stream/.test(e.message),
  );
});

test('model and provider hooks chain: the model hook in client terms, the provider hook in upstream terms', async () => {
  await waitFor(async () => (await listing())['hooks.lua'].hooks.length === 3, { what: 'hooks.lua v1 back' });
  tgiSeen = [];
  const r = await api(gw, 'POST', '/v1/chat/completions', {
    body: { model: 'tgi-hooked', messages: [{ role: 'user', content: 'one two three' }] },
    headers: { 'x-client-tag': 'abc' },
  });
  assert.equal(r.status, 200, r.text);
  // The model's on_request added a system message (4 more words), the adapter flattened it.
  assert.equal(r.json.choices[0].message.content, 'tgi saw 9 words, max 256 [checked by tgi-hooked]');
  const seen = tgiSeen[0];
  assert.equal(seen.headers['x-team-tag'], 'lua-master', 'a header the model hook set goes upstream');
  assert.equal(seen.headers['x-adapter'], 'tgi_adapter.lua');
  assert.equal(seen.headers['x-client-tag'], undefined, 'client headers are not forwarded by being handed back');
  assert.equal(seen.headers['content-type'], 'application/json', 'no header sent twice');
  assert.equal(seen.headers.authorization, undefined);
});

test('hook calls are counted in the metrics', async () => {
  const text = await (await fetch(`${gw.url}/metrics`)).text();
  const m = parseMetrics(text);
  assert.ok(metricValue(m, 'gateway_script_calls_total', { script: 'hooks.lua', hook: 'on_request', outcome: 'ok' }) >= 3);
  assert.ok(metricValue(m, 'gateway_script_calls_total', { script: 'hooks.lua', hook: 'on_request', outcome: 'error' }) >= 1);
  assert.ok(metricValue(m, 'gateway_script_reloads_total', { script: 'hooks.lua', result: 'refused' }) >= 1);
});
