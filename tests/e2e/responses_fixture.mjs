// The gateway and helpers the Responses API tests share (responses.test.mjs: the clients,
// stored responses, errors, structured output; responses_admission.test.mjs: what the route
// shares with chat): one lowart-mock, one gateway with a provider per upstream kind —
// passthrough (speaks Responses), Chat Completions only, Anthropic — and two keys.

import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { createKey, sqliteQuery, startGateway, startMock, waitFor } from './harness.mjs';
export let mock;
export let gw;
export let key;
export let otherKey;

// One model per upstream kind: passthrough (Responses), chat (Chat Completions), anthropic.
export const UPSTREAMS = [
  { model: 'gpt-resp', kind: 'responses', path: /\/v1\/responses$/ },
  { model: 'gpt-chat', kind: 'chat', path: /\/v1\/chat\/completions$/ },
  { model: 'claude', kind: 'anthropic', path: /\/v1\/messages$/ },
];

/** The gateway every Responses test file starts (in its before()): three providers, one per upstream kind. */
export async function startResponsesGateway() {
  mock = await startMock();
  const model = (name, provider, upstream) => `
[[models]]
name = "${name}"
[[models.deployments]]
provider = "${provider}"
model = "${upstream}"
`;
  // A chain of deployments by priority (lower first), optionally with fallback models.
  const chain = (name, deployments, fallbacks) => `
[[models]]
name = "${name}"
${fallbacks ? `fallbacks = ${JSON.stringify(fallbacks)}` : ''}
${deployments.map(([provider, upstream, priority]) => `[[models.deployments]]
provider = "${provider}"
model = "${upstream}"
priority = ${priority}`).join('\n')}
`;
  gw = await startGateway({
    config: `
# The fallback tests fail rs/mock-fail-500 (and others) many times in a row: breakers must
# not open, so every request really asks the failing deployment first.
[breaker]
min_requests = 1000

[[providers]]
name = "rs"
kind = "openai"
responses = true
base_url = "${mock.url}/v1"
api_key = "sk-upstream-responses"

[[providers]]
name = "oa"
kind = "openai"
base_url = "${mock.url}/v1"
api_key = "sk-upstream-chat"

[[providers]]
name = "an"
kind = "anthropic"
base_url = "${mock.url}/v1"
api_key = "sk-upstream-anthropic"
${model('gpt-resp', 'rs', 'mock-model')}
${model('gpt-chat', 'oa', 'mock-model')}
${model('claude', 'an', 'claude-mock')}
${model('resp-mid-error', 'rs', 'mock-mid-error')}
${model('chat-mid-error', 'oa', 'mock-mid-error')}
${model('claude-mid-error', 'an', 'mock-mid-error')}
${model('chat-reset', 'oa', 'mock-reset')}
${model('resp-slow', 'rs', 'mock-slow-300')}
${model('claude-slow', 'an', 'mock-slow-300')}
${model('resp-fail', 'rs', 'mock-fail-500')}
${chain('resp-then-chat', [['rs', 'mock-fail-500', 0], ['oa', 'mock-model', 1]])}
${chain('resp-then-claude', [['rs', 'mock-fail-500', 0], ['an', 'claude-mock', 1]])}
${chain('chat-then-resp', [['oa', 'mock-fail-500', 0], ['rs', 'mock-model', 1]])}
${chain('claude-then-resp', [['an', 'mock-fail-500', 0], ['rs', 'mock-model', 1]])}
${chain('resp-then-model-claude', [['rs', 'mock-fail-500', 0]], ['claude'])}
`,
  });
  key = (await createKey(gw, { name: 'responses-e2e' })).key;
  otherKey = (await createKey(gw, { name: 'responses-other' })).key;
}

export const client = (k = key) => new OpenAI({ baseURL: `${gw.url}/v1`, apiKey: k, maxRetries: 0, timeout: 5000 });
export const words = (s) => s.split(/\s+/).filter(Boolean).length;

export const weather = {
  type: 'function',
  name: 'get_weather',
  description: 'Weather for a city',
  parameters: { type: 'object', properties: { text: { type: 'string' } }, required: ['text'] },
  strict: false,
};

export async function usageRows(requestId, columns = 'route, model, status, stream, prompt_tokens, completion_tokens', g = gw) {
  let rows = [];
  await waitFor(async () => {
    rows = await sqliteQuery(g.dbPath, `SELECT ${columns} FROM usage_records WHERE request_id = '${requestId}'`);
    return rows.length === 1;
  }, { timeoutMs: 3000, what: 'the usage record' });
  return rows[0];
}

/** A raw streamed request: every event as { event, data } (data parsed). */
export async function rawStream(body, k = key, g = gw) {
  const res = await fetch(`${g.url}/v1/responses`, {
    method: 'POST',
    headers: { authorization: `Bearer ${k}`, 'content-type': 'application/json' },
    body: JSON.stringify({ ...body, stream: true }),
    signal: AbortSignal.timeout(10000),
  });
  const text = await res.text();
  const events = text.split(/\n\n/).filter((b) => b.trim()).map((block) => {
    const lines = block.split('\n');
    const event = lines.find((l) => l.startsWith('event: '))?.slice(7);
    const data = JSON.parse(lines.filter((l) => l.startsWith('data: ')).map((l) => l.slice(6)).join('\n'));
    return { event, data };
  });
  return { status: res.status, headers: res.headers, events, text };
}

/** Every event is named by its type, and sequence numbers count from 0 without a gap. */
export function assertWellFormed(events) {
  events.forEach((e, i) => {
    assert.equal(e.event, e.data.type, `event ${i} is named by its type`);
    assert.equal(e.data.sequence_number, i, `event ${i} (${e.data.type}) has sequence_number ${i}`);
  });
}

/** The event types of a stream, repeats folded: what every completed text answer looks like. */
export const TEXT_STREAM = [
  'response.created', 'response.in_progress', 'response.output_item.added', 'response.content_part.added',
  'response.output_text.delta', 'response.output_text.done', 'response.content_part.done',
  'response.output_item.done', 'response.completed',
];
export const foldedTypes = (events) => events.map((e) => e.event).filter((t, i, all) => t !== all[i - 1]);
