// Run-time configuration: lowart.toml is watched; a valid edit changes routing for the
// next requests without a restart, an invalid one is refused and the old routes stay.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import fsp from 'node:fs/promises';
import { api, cleanupAll, renderConfig, startGateway, startMock, waitFor } from './harness.mjs';

let mock;
let gw;

const providers = () => [{ name: 'mock', base_url: `${mock.url}/v1` }];

before(async () => {
  mock = await startMock();
  gw = await startGateway({
    config: renderConfig({
      providers: providers(),
      models: [{ name: 'gpt-demo', deployments: [{ provider: 'mock', model: 'mock-model' }] }],
    }),
  });
});

after(cleanupAll);

const chat = (model) => api(gw, 'POST', '/v1/chat/completions', {
  body: { model, messages: [{ role: 'user', content: 'hi' }] },
});

test('an edited lowart.toml adds a model and re-points another without a restart', async () => {
  assert.equal((await chat('gpt-new')).status, 404);
  await fsp.writeFile(gw.configPath, renderConfig({
    providers: providers(),
    models: [
      { name: 'gpt-demo', deployments: [{ provider: 'mock', model: 'mock-other' }] },
      { name: 'gpt-new', deployments: [{ provider: 'mock', model: 'mock-model' }] },
    ],
  }));
  // The config actor polls every second and takes an edit once two polls see it alike.
  await waitFor(async () => (await chat('gpt-new')).status === 200, { timeoutMs: 8000, what: 'gpt-new routed' });
  const r = await chat('gpt-demo');
  assert.equal(r.status, 200);
  assert.equal(r.headers.get('x-lowart-deployment'), 'mock/mock-other');
  await gw.waitForLog((l) => l.msg === 'config reloaded');
  assert.ok(gw.running, 'the same process keeps serving');
});

test('an invalid lowart.toml is refused and the running routes stay', async () => {
  await fsp.writeFile(gw.configPath, '[[models]]\nname = "broken"\n');
  await gw.waitForLog((l) => l.msg === 'config reload refused; the running configuration stays', 8000);
  assert.equal((await chat('gpt-new')).status, 200);
  assert.equal((await chat('broken')).status, 404);
});
