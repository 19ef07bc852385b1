// The OpenAI Responses API (POST /v1/responses and the stored responses), end to end with
// real clients: the official `openai` npm client (responses.create, responses.stream,
// retrieve, input_items, delete), the Vercel AI SDK (`ai` + `@ai-sdk/openai`, whose default
// provider model posts to /v1/responses) and the OpenAI Agents SDK (`@openai/agents`) —
// against three upstreams of lowart-mock: one that speaks Responses itself (passed
// through), one that speaks only Chat Completions and one that speaks Anthropic Messages
// (both translated). /mock/stats shows what lowart actually sent upstream. What the route
// shares with chat (fallbacks, hooks, reasoning items, metrics): responses_admission.test.mjs.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { generateObject, generateText, jsonSchema, stepCountIs, streamObject, streamText, tool as aiTool } from 'ai';
import { createOpenAI } from '@ai-sdk/openai';
import { Agent, Runner, setDefaultOpenAIClient, setOpenAIAPI, setTracingDisabled, tool as agentTool } from '@openai/agents';
import { api, cleanupAll, createKey, mockReset, mockStats, rawRequest, sleep, startGateway, waitFor } from './harness.mjs';
import {
  UPSTREAMS, assertWellFormed, client, gw, key, mock, otherKey, rawStream, startResponsesGateway, usageRows, weather, words,
} from './responses_fixture.mjs';

before(startResponsesGateway);
after(cleanupAll);

for (const up of UPSTREAMS) {
  describe(`openai client, ${up.kind} upstream`, () => {
    test('responses.create: text, usage, what the upstream got, the usage record', async () => {
      await mockReset(mock);
      const res = await client().responses.create({
        model: up.model, instructions: 'Be brief.', input: 'Hello from the Responses API', max_output_tokens: 64,
        metadata: { case: 'plain' },
      }).withResponse();
      const r = res.data;
      assert.equal(r.object, 'response');
      assert.equal(r.status, 'completed');
      assert.match(r.id, /^resp_/);
      assert.equal(r.output_text, 'mock reply: Hello from the Responses API');
      assert.equal(r.output.length, 1);
      assert.equal(r.output[0].type, 'message');
      assert.equal(r.output[0].role, 'assistant');
      assert.equal(r.output[0].content[0].type, 'output_text');
      assert.equal(r.instructions, 'Be brief.');
      assert.equal(r.usage.input_tokens, words('Be brief. Hello from the Responses API'));
      assert.equal(r.usage.output_tokens, words(r.output_text));
      assert.equal(r.usage.total_tokens, r.usage.input_tokens + r.usage.output_tokens);
      assert.equal(r.usage.input_tokens_details.cached_tokens, 0);
      if (up.kind !== 'responses') {
        assert.deepEqual(r.metadata, { case: 'plain' });
        assert.equal(r.max_output_tokens, 64);
      }
      const stats = await mockStats(mock);
      assert.match(stats.last_path, up.path);
      const sent = JSON.parse(stats.last_body);
      if (up.kind === 'responses') {
        assert.equal(stats.last_authorization, 'Bearer sk-upstream-responses');
        assert.equal(sent.instructions, 'Be brief.');
        assert.equal(sent.max_output_tokens, 64);
        assert.deepEqual(sent.input, [{ type: 'message', role: 'user', content: 'Hello from the Responses API' }]);
      } else if (up.kind === 'chat') {
        assert.deepEqual(sent.messages, [
          { role: 'system', content: 'Be brief.' },
          { role: 'user', content: 'Hello from the Responses API' },
        ]);
        assert.equal(sent.max_tokens, 64);
      } else {
        assert.deepEqual(sent.system, [{ type: 'text', text: 'Be brief.' }]);
        assert.equal(sent.max_tokens, 64);
        assert.deepEqual(sent.messages, [{ role: 'user', content: [{ type: 'text', text: 'Hello from the Responses API' }] }]);
      }
      const row = await usageRows(res.response.headers.get('x-request-id'));
      assert.deepEqual(row, {
        route: 'responses', model: up.model, status: 200, stream: 0,
        prompt_tokens: r.usage.input_tokens, completion_tokens: r.usage.output_tokens,
      });
    });

    test('responses.stream: typed events in order, each with its sequence_number', async () => {
      const stream = client().responses.stream({ model: up.model, input: [{ role: 'user', content: [{ type: 'input_text', text: 'Stream some words please' }] }] });
      const seen = [];
      let text = '';
      for await (const e of stream) {
        seen.push(e);
        if (e.type === 'response.output_text.delta') text += e.delta;
      }
      const final = await stream.finalResponse();
      assert.equal(text, 'mock reply: Stream some words please');
      assert.equal(final.output[0].content[0].text, text);
      assert.equal(final.status, 'completed');
      assert.equal(final.usage.output_tokens, words(text));
      assert.equal(final.usage.input_tokens, words('Stream some words please'));
      const types = seen.map((e) => e.type).filter((t, i, all) => t !== all[i - 1]);
      assert.deepEqual(types, [
        'response.created', 'response.in_progress', 'response.output_item.added', 'response.content_part.added',
        'response.output_text.delta', 'response.output_text.done', 'response.content_part.done',
        'response.output_item.done', 'response.completed',
      ]);
      seen.forEach((e, i) => assert.equal(e.sequence_number, i));
      const item = seen.find((e) => e.type === 'response.output_item.done').item;
      assert.equal(item.id, seen.find((e) => e.type === 'response.output_text.delta').item_id);
      assert.equal(seen[0].response.id, final.id);
    });

    test('function tools: the call and its output, JSON and streamed', async () => {
      const question = { role: 'user', content: 'What is the weather in Oslo?' };
      const first = await client().responses.create({ model: up.model, input: [question], tools: [weather], tool_choice: 'auto' });
      const call = first.output.find((o) => o.type === 'function_call');
      assert.ok(call, JSON.stringify(first.output));
      assert.equal(call.name, 'get_weather');
      assert.deepEqual(JSON.parse(call.arguments), { text: 'What is the weather in Oslo?' });
      assert.ok(call.call_id);
      assert.equal(call.status, 'completed');
      assert.deepEqual(first.tools.map((t) => t.name), ['get_weather']);

      // Streamed: function_call_arguments pieces assemble into the same arguments.
      const { events, status } = await rawStream({ model: up.model, input: [question], tools: [weather] });
      assert.equal(status, 200);
      assertWellFormed(events);
      const added = events.find((e) => e.event === 'response.output_item.added' && e.data.item.type === 'function_call');
      assert.equal(added.data.item.name, 'get_weather');
      assert.equal(added.data.item.arguments, '');
      const pieces = events.filter((e) => e.event === 'response.function_call_arguments.delta');
      assert.ok(pieces.length > 1, 'arguments arrive in pieces');
      pieces.forEach((p) => assert.equal(p.data.item_id, added.data.item.id));
      const args = pieces.map((p) => p.data.delta).join('');
      assert.equal(events.find((e) => e.event === 'response.function_call_arguments.done').data.arguments, args);
      assert.deepEqual(JSON.parse(args), { text: 'What is the weather in Oslo?' });
      const completed = events.at(-1);
      assert.equal(completed.event, 'response.completed');
      assert.equal(completed.data.response.output.find((o) => o.type === 'function_call').arguments, args);

      // The round trip: the call and its output go back; the answer uses the output.
      await mockReset(mock);
      const second = await client().responses.create({
        model: up.model, tools: [weather],
        input: [question, call, { type: 'function_call_output', call_id: call.call_id, output: 'sunny, 21 degrees' }],
      });
      assert.equal(second.output_text, 'mock reply: tool said sunny, 21 degrees');
      const sent = JSON.parse((await mockStats(mock)).last_body);
      if (up.kind === 'chat') {
        assert.equal(sent.messages[1].role, 'assistant');
        assert.equal(sent.messages[1].tool_calls[0].id, call.call_id);
        assert.deepEqual(sent.messages[2], { role: 'tool', tool_call_id: call.call_id, content: 'sunny, 21 degrees' });
      } else if (up.kind === 'anthropic') {
        assert.equal(sent.messages[1].content.find((b) => b.type === 'tool_use').id, call.call_id);
        assert.equal(sent.messages[2].content[0].type, 'tool_result');
      } else {
        assert.equal(sent.input[1].type, 'function_call');
        assert.equal(sent.input[2].type, 'function_call_output');
      }
    });

    test('previous_response_id continues the conversation from the stored response', async () => {
      const first = await client().responses.create({ model: up.model, input: 'My name is Ada' });
      await mockReset(mock);
      const second = await client().responses.create({ model: up.model, input: 'What is my name?', previous_response_id: first.id });
      assert.equal(second.previous_response_id, first.id);
      assert.equal(second.output_text, 'mock reply: What is my name?');
      const sent = JSON.parse((await mockStats(mock)).last_body);
      if (up.kind === 'responses') {
        assert.equal(sent.previous_response_id, undefined, 'lowart holds the conversation');
        assert.deepEqual(sent.input.map((i) => [i.role, i.content[0]?.text ?? i.content]), [
          ['user', 'My name is Ada'], ['assistant', 'mock reply: My name is Ada'], ['user', 'What is my name?'],
        ]);
      } else {
        assert.deepEqual(sent.messages.map((m) => [m.role, typeof m.content === 'string' ? m.content : m.content[0].text]), [
          ['user', 'My name is Ada'], ['assistant', 'mock reply: My name is Ada'], ['user', 'What is my name?'],
        ]);
      }
      // A third turn carries both earlier ones.
      await mockReset(mock);
      await client().responses.create({ model: up.model, input: 'And again?', previous_response_id: second.id });
      const third = JSON.parse((await mockStats(mock)).last_body);
      assert.equal((third.input ?? third.messages).length, 5);
    });
  });
}

describe('stored responses', () => {
  test('retrieve, input_items and delete; store: false keeps nothing', async () => {
    const c = client();
    const r = await c.responses.create({
      model: 'gpt-chat', input: [{ role: 'user', content: 'first' }, { role: 'user', content: [{ type: 'input_text', text: 'second' }] }],
    });
    const got = await c.responses.retrieve(r.id);
    assert.equal(got.id, r.id);
    assert.equal(got.output_text, r.output_text);
    assert.deepEqual(got.usage, r.usage);
    const items = await c.responses.inputItems.list(r.id);
    assert.deepEqual(items.data.map((i) => [i.type, i.role, i.content[0].text]), [
      ['message', 'user', 'second'], ['message', 'user', 'first'], // newest first, as OpenAI lists them
    ]);
    items.data.forEach((i) => assert.ok(i.id));
    const asc = await c.responses.inputItems.list(r.id, { order: 'asc', limit: 1 });
    assert.equal(asc.data.length, 1);
    assert.equal(asc.data[0].content[0].text, 'first');
    assert.equal(asc.has_more, true);
    await c.responses.delete(r.id);
    await assert.rejects(c.responses.retrieve(r.id), (e) => e.status === 404 && e.param === 'response_id');

    const unstored = await c.responses.create({ model: 'gpt-chat', input: 'forget me', store: false });
    assert.equal(unstored.store, false);
    await assert.rejects(c.responses.retrieve(unstored.id), (e) => e.status === 404);
    await assert.rejects(c.responses.create({ model: 'gpt-chat', input: 'x', previous_response_id: unstored.id }),
      (e) => e.status === 404 && e.param === 'previous_response_id');
    // A stream with store: false keeps nothing either.
    const { events } = await rawStream({ model: 'claude', input: 'forget me too', store: false });
    const id = events[0].data.response.id;
    assert.equal((await api(gw, 'GET', `/v1/responses/${id}`, { key })).status, 404);
  });

  test('a streamed response is stored as it ended', async () => {
    for (const up of UPSTREAMS) {
      const { events } = await rawStream({ model: up.model, input: 'keep this stream' });
      const completed = events.at(-1).data.response;
      const got = await client().responses.retrieve(completed.id);
      assert.deepEqual(got.output, completed.output, up.kind);
      assert.equal(got.status, 'completed');
    }
  });

  test('another key gets 404 for every stored response of this key', async () => {
    const mine = await client().responses.create({ model: 'gpt-chat', input: 'mine' });
    const other = client(otherKey);
    await assert.rejects(other.responses.retrieve(mine.id), (e) => e.status === 404);
    await assert.rejects(other.responses.inputItems.list(mine.id), (e) => e.status === 404);
    await assert.rejects(other.responses.delete(mine.id), (e) => e.status === 404);
    await assert.rejects(other.responses.create({ model: 'gpt-chat', input: 'x', previous_response_id: mine.id }),
      (e) => e.status === 404 && e.param === 'previous_response_id');
    const r = await api(gw, 'POST', '/v1/responses', {
      key: otherKey, body: { model: 'gpt-chat', input: [{ type: 'item_reference', id: mine.output[0].id }] },
    });
    assert.equal(r.status, 404);
    assert.equal(r.json.error.param, 'input');
    // The owner still has it, and may name its items.
    assert.equal((await client().responses.retrieve(mine.id)).id, mine.id);
    const ref = await api(gw, 'POST', '/v1/responses', {
      key, body: { model: 'gpt-chat', input: [{ type: 'item_reference', id: mine.output[0].id }, { role: 'user', content: 'next' }] },
    });
    assert.equal(ref.status, 200, ref.text);
  });
});

describe('errors and failures', () => {
  test("refusals in OpenAI's envelope, naming the parameter", async () => {
    const post = (body, k = key) => api(gw, 'POST', '/v1/responses', { key: k, body });
    let r = await post({ model: 'gpt-chat', input: 'x', max_output_tokens: 5 });
    assert.equal(r.status, 400);
    assert.equal(r.json.error.type, 'invalid_request_error');
    assert.equal(r.json.error.param, 'max_output_tokens');
    r = await post({ model: 'gpt-chat' });
    assert.equal(r.status, 400);
    assert.equal(r.json.error.param, 'input');
    r = await post({ model: 'gpt-chat', input: [{ role: 'robot', content: 'x' }] });
    assert.equal(r.json.error.param, 'input[0].role');
    r = await post({ model: 'gpt-chat', input: 'x', tools: [{ type: 'function' }] });
    assert.equal(r.json.error.param, 'tools[0].name');
    r = await post({ input: 'x' });
    assert.equal(r.json.error.param, 'model');
    r = await post({ model: 'no-such-model', input: 'x' });
    assert.equal(r.status, 404);
    assert.equal(r.json.error.code, 'model_not_found');
    r = await post({ model: 'gpt-chat', input: 'x' }, null);
    assert.equal(r.status, 401);
    r = await post({ model: 'gpt-chat', input: 'x' }, 'sk-wrong');
    assert.equal(r.status, 401);
    assert.equal(r.json.error.code, 'invalid_api_key');
    const restricted = (await createKey(gw, { name: 'responses-restricted', models: ['claude'] })).key;
    r = await post({ model: 'gpt-chat', input: 'x' }, restricted);
    assert.equal(r.status, 403);
    assert.equal(r.json.error.code, 'model_not_allowed');
    r = await api(gw, 'GET', '/v1/responses/resp_nope', { key });
    assert.equal(r.status, 404);
    // An upstream failure before the first byte: the upstream's status, OpenAI's envelope.
    r = await post({ model: 'resp-fail', input: 'x' });
    assert.equal(r.status, 500);
    assert.ok(r.json.error.message);
  });

  test('a stream that breaks ends with error and response.failed, and is stored as failed', async () => {
    for (const model of ['chat-mid-error', 'resp-mid-error', 'claude-mid-error', 'chat-reset']) {
      const { events, status } = await rawStream({ model, input: 'break after a few words please' });
      assert.equal(status, 200, model);
      assertWellFormed(events);
      const tail = events.slice(-2).map((e) => e.event);
      assert.deepEqual(tail, ['error', 'response.failed'], `${model}: ${events.map((e) => e.event).join(' ')}`);
      const failed = events.at(-1).data.response;
      assert.equal(failed.status, 'failed');
      assert.ok(failed.error.message, model);
      assert.ok(events.some((e) => e.event === 'response.output_text.delta'), `${model}: text before the break`);
      const stored = await client().responses.retrieve(failed.id);
      assert.equal(stored.status, 'failed', model);
    }
  });

  test('the openai client sees a broken stream end with its error event', async () => {
    const stream = client().responses.stream({ model: 'chat-mid-error', input: 'break please now ok' });
    const types = [];
    for await (const e of stream) types.push(e.type);
    // The SDK ends the iteration at the error event (as with OpenAI) and has no final response.
    assert.equal(types.at(-1), 'error');
    assert.ok(types.includes('response.output_text.delta'));
    await assert.rejects(stream.finalResponse());
  });

  test('streams are relayed as they arrive (an event every 300 ms upstream)', async () => {
    for (const model of ['resp-slow', 'claude-slow']) {
      const started = Date.now();
      let firstDelta = 0;
      const stream = client().responses.stream({ model, input: 'one two three four five six' });
      for await (const e of stream) if (e.type === 'response.output_text.delta' && !firstDelta) firstDelta = Date.now();
      const ended = Date.now();
      assert.ok(ended - firstDelta > 1500, `${model}: first delta ${firstDelta - started} ms, end ${ended - started} ms`);
    }
  });
});

describe('Vercel AI SDK (default openai(model): the Responses API)', () => {
  const provider = () => createOpenAI({ baseURL: `${gw.url}/v1`, apiKey: key });

  for (const up of UPSTREAMS) {
    test(`generateText, streamText and a tool call, ${up.kind} upstream`, async () => {
      await mockReset(mock);
      const openai = provider();
      const plain = await generateText({ model: openai(up.model), prompt: 'Hello from the AI SDK' });
      assert.equal(plain.text, 'mock reply: Hello from the AI SDK');
      assert.equal(plain.usage.outputTokens, words(plain.text));
      assert.match((await mockStats(mock)).last_path, up.path);

      const streamed = streamText({ model: openai(up.model), prompt: 'Stream from the AI SDK' });
      let text = '';
      for await (const piece of streamed.textStream) text += piece;
      assert.equal(text, 'mock reply: Stream from the AI SDK');
      assert.equal((await streamed.usage).outputTokens, words(text));

      const calls = [];
      const withTool = await generateText({
        model: openai(up.model),
        prompt: 'What is the weather in Oslo?',
        tools: {
          get_weather: aiTool({
            description: 'Weather for a city',
            inputSchema: jsonSchema({ type: 'object', properties: { text: { type: 'string' } }, required: ['text'] }),
            execute: async (input) => { calls.push(input); return `sunny in ${input.text}`; },
          }),
        },
        stopWhen: stepCountIs(3),
      });
      assert.deepEqual(calls, [{ text: 'What is the weather in Oslo?' }]);
      assert.equal(withTool.steps.length, 2);
      assert.match(withTool.text, /^mock reply: tool said .*sunny in What is the weather in Oslo\?/);
    });
  }
});

// Structured output: a JSON schema asked for through text.format (Responses) or
// response_format (Chat). An OpenAI-kind upstream answers JSON of the schema itself; an
// Anthropic upstream has no such option, so lowart makes the schema a tool the model must
// call and hands its input back as the text (docs/translation.md "Structured output").
describe('Structured output (a JSON schema) on every upstream kind', () => {
  const WEATHER = {
    type: 'object',
    properties: { city: { type: 'string' }, words: { type: 'integer' }, sunny: { type: 'boolean' } },
    required: ['city', 'words', 'sunny'],
    additionalProperties: false,
  };
  // lowart-mock fills a schema in from the prompt: strings the prompt, integers its word count.
  const expected = (prompt) => ({ city: prompt, words: prompt.split(/\s+/).length, sunny: true });

  for (const up of UPSTREAMS) {
    test(`the AI SDK's generateObject and streamObject, Responses and Chat, ${up.kind} upstream`, async () => {
      const openai = createOpenAI({ baseURL: `${gw.url}/v1`, apiKey: key });
      for (const [api, model] of [['responses', openai(up.model)], ['chat', openai.chat(up.model)]]) {
        await mockReset(mock);
        const prompt = `Weather in Zürich for ${api}`;
        const { object } = await generateObject({ model, schema: jsonSchema(WEATHER), prompt });
        assert.deepEqual(object, expected(prompt), `${api}: generateObject`);
        const stats = await mockStats(mock);
        if (up.kind === 'anthropic') assert.match(stats.last_path, /\/v1\/messages$/);
        const sprompt = `Stream the weather in Oslo for ${api}`;
        const streamed = streamObject({ model, schema: jsonSchema(WEATHER), prompt: sprompt });
        const partials = [];
        for await (const partial of streamed.partialObjectStream) partials.push(partial);
        assert.deepEqual(await streamed.object, expected(sprompt), `${api}: streamObject`);
        assert.ok(partials.length >= 1, `${api}: partial objects while streaming`);
      }
    });

    test(`the openai client's json_schema formats, streamed and not, ${up.kind} upstream`, async () => {
      const c = client();
      const format = { type: 'json_schema', name: 'weather', schema: WEATHER, strict: true };
      const r = await c.responses.create({ model: up.model, input: 'Weather in Bergen', text: { format } });
      assert.deepEqual(JSON.parse(r.output_text), expected('Weather in Bergen'));
      assert.equal(r.status, 'completed');
      const chat = await c.chat.completions.create({
        model: up.model,
        messages: [{ role: 'user', content: 'Weather in Tromsø' }],
        response_format: { type: 'json_schema', json_schema: { name: 'weather', schema: WEATHER, strict: true } },
      });
      assert.deepEqual(JSON.parse(chat.choices[0].message.content), expected('Weather in Tromsø'));
      assert.equal(chat.choices[0].finish_reason, 'stop');
      assert.equal(chat.choices[0].message.tool_calls ?? undefined, undefined, 'no tool call reaches the client');
      const stream = await c.chat.completions.create({
        model: up.model,
        stream: true,
        messages: [{ role: 'user', content: 'Weather in Bodø' }],
        response_format: { type: 'json_schema', json_schema: { name: 'weather', schema: WEATHER, strict: true } },
      });
      let text = '';
      let finish;
      for await (const chunk of stream) {
        text += chunk.choices[0]?.delta?.content ?? '';
        assert.equal(chunk.choices[0]?.delta?.tool_calls, undefined);
        finish = chunk.choices[0]?.finish_reason ?? finish;
      }
      assert.deepEqual(JSON.parse(text), expected('Weather in Bodø'));
      assert.equal(finish, 'stop');
    });
  }
});

// `responses` is a provider setting of the admin API too: a provider made there with it
// gets /v1/responses passed through; PATCHed off, the same model is translated to Chat.
test('a provider made through the admin API with responses = true is passed through, and PATCHed off is translated', async () => {
  const name = `rs-api-${Date.now()}`;
  const made = await api(gw, 'POST', '/admin/providers', {
    body: { name, kind: 'openai', base_url: `${mock.url}/v1`, responses: true },
  });
  assert.equal(made.status, 201, JSON.stringify(made.text));
  const shown = await api(gw, 'GET', `/admin/providers/${name}`);
  assert.equal(shown.json.settings.responses, true);
  const model = `${name}-model`;
  assert.equal((await api(gw, 'POST', '/admin/models', {
    body: { name: model, deployments: [{ provider: name, model: 'mock-model' }] },
  })).status, 201);
  const pathOf = async () => {
    await mockReset(mock);
    const r = await client().responses.create({ model, input: 'hello there' });
    assert.equal(r.status, 'completed');
    return (await mockStats(mock)).last_path;
  };
  await waitFor(async () => /\/v1\/responses$/.test(await pathOf().catch(() => '')), { what: 'passthrough to /v1/responses' });
  const off = await api(gw, 'PATCH', `/admin/providers/${name}`, { body: { responses: false } });
  assert.equal(off.status, 200, JSON.stringify(off.text));
  assert.equal(off.json.settings.responses, false);
  await waitFor(async () => /\/v1\/chat\/completions$/.test(await pathOf().catch(() => '')), { what: 'translated to chat' });
  assert.equal((await api(gw, 'PATCH', `/admin/providers/${name}`, { body: { responses: 'yes' } })).json.error.param, 'responses');
});

describe('OpenAI Agents SDK', () => {
  before(() => {
    setTracingDisabled(true); // nothing goes to OpenAI's trace exporter
    setOpenAIAPI('responses');
    setDefaultOpenAIClient(new OpenAI({ baseURL: `${gw.url}/v1`, apiKey: key, maxRetries: 0, timeout: 5000 }));
  });

  for (const up of UPSTREAMS) {
    test(`an agent with a function tool, ${up.kind} upstream`, async () => {
      const calls = [];
      const getWeather = agentTool({
        name: 'get_weather',
        description: 'Weather for a city',
        parameters: { type: 'object', properties: { text: { type: 'string' } }, required: ['text'], additionalProperties: false },
        strict: false,
        execute: async (input) => { calls.push(input); return `rainy in ${input.text}`; },
      });
      const agent = new Agent({ name: 'Weather agent', instructions: 'Answer about the weather.', model: up.model, tools: [getWeather] });
      const result = await new Runner({ tracingDisabled: true }).run(agent, 'Weather in Bergen?');
      assert.deepEqual(calls, [{ text: 'Weather in Bergen?' }]);
      assert.equal(result.finalOutput, 'mock reply: tool said rainy in Weather in Bergen?');
    });
  }
});

describe('retention', () => {
  test('stored responses go after [storage] responses_ttl_s', async () => {
    const short = await startGateway({
      config: `
[storage]
responses_ttl_s = 1

[[providers]]
name = "oa"
kind = "openai"
base_url = "${mock.url}/v1"

[[models]]
name = "gpt-chat"
[[models.deployments]]
provider = "oa"
model = "mock-model"
`,
    });
    const c = new OpenAI({ baseURL: `${short.url}/v1`, apiKey: short.masterKey, maxRetries: 0, timeout: 5000 });
    const r = await c.responses.create({ model: 'gpt-chat', input: 'short-lived' });
    assert.equal((await c.responses.retrieve(r.id)).id, r.id);
    await waitFor(async () => (await rawRequest({
      port: short.port, path: `/v1/responses/${r.id}`, headers: { authorization: `Bearer ${short.masterKey}` },
    })).status === 404, { timeoutMs: 5000, intervalMs: 200, what: 'the response to expire' });
    await sleep(0);
  });
});

// --- fallback, hooks, reasoning items and metrics: "everything the chat route has" ----------
