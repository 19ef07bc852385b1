// Translated streams are relayed as they arrive, not buffered whole: the upstream sends one
// event every 300 ms, and the client must see its first text delta long before the
// upstream's last event — in both directions, through both official SDKs.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import Anthropic from '@anthropic-ai/sdk';
import { cleanupAll, createKey, startGateway, startMock } from './harness.mjs';

let gw;
let key;
const GAP_MS = 300;

before(async () => {
  const mock = await startMock();
  gw = await startGateway({
    config: `
[[providers]]
name = "oa"
kind = "openai"
base_url = "${mock.url}/v1"
[[providers]]
name = "an"
kind = "anthropic"
base_url = "${mock.url}/v1"
api_key = "sk-ant"
[[models]]
name = "gpt-slow-via-anthropic"
[[models.deployments]]
provider = "an"
model = "mock-slow-${GAP_MS}"
[[models]]
name = "claude-slow-via-openai"
[[models.deployments]]
provider = "oa"
model = "mock-slow-${GAP_MS}"
`,
  });
  key = (await createKey(gw, { name: 'stream-timing' })).key;
});
after(cleanupAll);

const PROMPT = 'one two three four five six';

test('OpenAI client, Anthropic upstream: the first delta arrives while the upstream is still sending', async () => {
  const started = Date.now();
  const stream = await gw.client(key, { timeout: 20000 }).chat.completions.create({
    model: 'gpt-slow-via-anthropic', stream: true, messages: [{ role: 'user', content: PROMPT }],
  });
  let first = null;
  let text = '';
  for await (const chunk of stream) {
    const d = chunk.choices[0]?.delta?.content;
    if (d) { text += d; first ??= Date.now(); }
  }
  const ended = Date.now();
  assert.equal(text, `mock reply: ${PROMPT}`);
  // 8 words + start/stop events at 300 ms each: the stream lasts about 4 s.
  assert.ok(ended - started > 8 * GAP_MS, `the upstream took only ${ended - started} ms`);
  assert.ok(ended - first > 5 * GAP_MS, `the first delta came ${ended - first} ms before the end: buffered`);
});

test('Anthropic client, OpenAI upstream: the first delta arrives while the upstream is still sending', async () => {
  const client = new Anthropic({ baseURL: gw.url, apiKey: key, maxRetries: 0, timeout: 20000 });
  const started = Date.now();
  const stream = client.messages.stream({ model: 'claude-slow-via-openai', max_tokens: 64, messages: [{ role: 'user', content: PROMPT }] });
  let first = null;
  stream.on('text', () => { first ??= Date.now(); });
  const final = await stream.finalMessage();
  const ended = Date.now();
  assert.equal(final.content[0].text, `mock reply: ${PROMPT}`);
  assert.ok(ended - started > 8 * GAP_MS, `the upstream took only ${ended - started} ms`);
  assert.ok(ended - first > 5 * GAP_MS, `the first delta came ${ended - first} ms before the end: buffered`);
});
