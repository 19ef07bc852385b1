// The web console (web/, served by lowart at /ui) driven by Debian's chromium through
// playwright-core, against a real gateway: log in, every page renders without console
// errors (screenshots of each at desktop and phone size go to build/ui-screenshots),
// create a key and see its secret once, stream a playground answer token by token,
// approve a pending tool call as it arrives, and watch the dashboard numbers move.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { api, cleanupAll, createKey, startGateway, startMock, tempDir, waitFor, TIME_SCALE } from './harness.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(here, '../..');
const DIST = process.env.LOWART_UI_DIR || path.join(ROOT, 'web/dist');
const SHOTS = path.join(ROOT, 'build/ui-screenshots');
const EVERYTHING = path.join(here, 'node_modules/@modelcontextprotocol/server-everything/dist/index.js');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';

let gw;
let mock;
let browser;
let page;
const problems = []; // console errors and uncaught exceptions in the page

before(async () => {
  assert.ok(fs.existsSync(path.join(DIST, 'index.html')), `the console is not built in ${DIST} (scripts/build_web.sh)`);
  assert.ok(fs.existsSync(CHROMIUM), `no chromium at ${CHROMIUM} (scripts/setup.sh installs it)`);
  fs.mkdirSync(SHOTS, { recursive: true });
  mock = await startMock();
  const config = `
[server]
listen = "127.0.0.1:3000"
[mcp]
allowed_commands = ["node"]
[[providers]]
name = "mock"
base_url = "${mock.url}/v1"
[[models]]
name = "gpt-demo"
[[models.deployments]]
provider = "mock"
model = "mock-model"
[[models]]
name = "slow-demo"
[[models.deployments]]
provider = "mock"
model = "mock-slow-120"
`;
  gw = await startGateway({ config, dir: await tempDir(), env: { LOWART_UI_DIR: DIST } });
  const reg = await api(gw, 'POST', '/admin/mcp/register', { body: { name: 'ev', command: 'node', args: [EVERYTHING, 'stdio'] } });
  assert.equal(reg.status, 201, reg.text);
  const pol = await api(gw, 'POST', '/admin/mcp/policies', { body: { tool: 'ev__echo', policy: 'confirm' } });
  assert.ok(pol.status === 201 || pol.status === 200, pol.text);
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-dev-shm-usage'],
  });
  page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  page.setDefaultTimeout(10000 * TIME_SCALE);
  page.on('console', (m) => { if (m.type() === 'error') problems.push(`console: ${m.text()}`); });
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
});

after(async () => {
  await browser?.close();
  await cleanupAll();
});

async function shot(name) {
  await page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true });
}

test('log in with the admin key (kept in session storage, not in the URL)', async () => {
  await page.goto(`${gw.url}/ui/`);
  await page.getByLabel(/key/i).fill(gw.masterKey);
  await page.getByRole('button', { name: /log ?in|sign ?in/i }).click();
  await page.getByRole('link', { name: /dashboard/i }).first().waitFor();
  assert.ok(!page.url().includes(gw.masterKey));
  const stored = await page.evaluate(() => JSON.stringify(sessionStorage));
  assert.ok(stored.includes(gw.masterKey), 'kept in session storage');
  assert.equal(await page.evaluate(() => JSON.stringify(localStorage).includes('sk-')), false);
});

test('the dashboard numbers move with traffic', async () => {
  await page.getByRole('link', { name: /dashboard/i }).first().click();
  const total = page.getByTestId('total-requests');
  await total.waitFor();
  const before = Number((await total.textContent()).replace(/[^0-9.]/g, ''));
  for (let i = 0; i < 20; i++)
    await api(gw, 'POST', '/v1/chat/completions', { body: { model: 'gpt-demo', messages: [{ role: 'user', content: `hi ${i}` }] } });
  await waitFor(async () => Number((await total.textContent()).replace(/[^0-9.]/g, '')) >= before + 20,
    { timeoutMs: 10000, what: 'the request total to move' });
  await waitFor(async () => Number((await page.getByTestId('rps').textContent()).replace(/[^0-9.]/g, '')) > 0,
    { timeoutMs: 10000, what: 'requests per second above 0' });
  await shot('dashboard');
});

test('create a key: its secret is shown once, and it works', async () => {
  await page.getByRole('link', { name: /keys/i }).first().click();
  await page.getByRole('button', { name: /create|new key/i }).first().click();
  await page.getByLabel(/name/i).first().fill('from-the-console');
  await page.getByRole('button', { name: /^create( key)?$/i }).last().click();
  const secret = page.getByTestId('new-key-secret');
  await secret.waitFor();
  const key = (await secret.textContent()).trim();
  assert.match(key, /^sk-/);
  await shot('keys-created');
  const models = await api(gw, 'GET', '/v1/models', { key });
  assert.equal(models.status, 200, 'the new key works');
  await page.keyboard.press('Escape');
  await page.getByRole('button', { name: /close|done|ok/i }).first().click().catch(() => {});
  await page.getByText('from-the-console').first().waitFor();
  assert.equal(await page.getByText(key).count(), 0, 'the secret is not shown again');
});

test('the playground streams the answer as it comes', async () => {
  await page.getByRole('link', { name: /playground/i }).first().click();
  await page.getByRole('combobox').first().selectOption('slow-demo');
  await page.getByTestId('playground-input').fill('stream these words to me slowly please');
  await page.getByTestId('playground-send').click();
  const out = page.getByTestId('playground-output');
  // Partial text first (the mock sends a piece every 120 ms), then the whole answer.
  await waitFor(async () => {
    const t = (await out.textContent()) ?? '';
    return t.startsWith('mock') && !t.includes('slowly please');
  }, { timeoutMs: 10000, intervalMs: 20, what: 'a partial answer' });
  await waitFor(async () => ((await out.textContent()) ?? '').includes('mock reply: stream these words to me slowly please'),
    { timeoutMs: 15000, what: 'the whole answer' });
  await shot('playground');
});

test('a pending tool call shows up in approvals and is approved from the console', async () => {
  await page.getByRole('link', { name: /approvals/i }).first().click();
  await waitFor(async () => (await api(gw, 'GET', '/admin/mcp')).json?.data?.find((x) => x.name === 'ev')?.state === 'ready',
    { timeoutMs: 20000, what: 'the MCP server ready' });
  const user = await createKey(gw, { name: 'tool-user' }); // the master key is never asked
  const pending = api(gw, 'POST', '/v1/mcp/tools/call', {
    key: user.key, body: { name: 'ev__echo', arguments: { message: 'from ui' }, wait_ms: 20000 },
  });
  let id;
  await waitFor(async () => {
    const r = await api(gw, 'GET', '/admin/approvals?status=pending');
    id = r.json?.data?.[0]?.id ?? r.json?.data?.[0]?.approval_id;
    return id;
  }, { what: 'the pending approval' });
  const approve = page.getByTestId(`approve-${id}`);
  await approve.waitFor({ timeout: 10000 * TIME_SCALE }); // it arrives by polling, no reload
  await shot('approvals');
  await approve.click();
  const r = await pending;
  assert.equal(r.status, 200, r.text);
  assert.match(JSON.stringify(r.json), /from ui/);
});

test('agents and their open tasks', async () => {
  const reg = await api(gw, 'POST', '/admin/agents', { body: { name: 'idle-agent', skills: ['wait'] } });
  assert.equal(reg.status, 201, reg.text);
  const sent = await api(gw, 'POST', '/a2a/idle-agent', {
    body: { jsonrpc: '2.0', id: 1, method: 'message/send', params: {
      message: { role: 'user', kind: 'message', messageId: 'm-ui', parts: [{ kind: 'text', text: 'waiting in the mailbox' }] },
      configuration: { blocking: false } } },
  });
  const id = sent.json.result.id;
  await page.getByRole('link', { name: /agents/i }).first().click();
  await page.getByTestId('open-tasks').getByText(id).waitFor();
  await page.getByText('waiting in the mailbox').first().waitFor();
  await shot('agents-open-tasks');
});

test('keyboard only: tab to a page link and open it', async () => {
  await page.goto(`${gw.url}/ui/dashboard`);
  await page.getByTestId('total-requests').waitFor();
  let reached = false;
  for (let i = 0; i < 30 && !reached; i++) {
    await page.keyboard.press('Tab');
    reached = await page.evaluate(() => document.activeElement?.textContent?.trim() === 'Scripts');
  }
  assert.ok(reached, 'the Scripts link is reachable with Tab');
  await page.keyboard.press('Enter');
  await page.waitForURL(/\/ui\/scripts$/);
});

test('every page renders at desktop and phone size without console errors', async () => {
  const pages = ['dashboard', 'users', 'keys', 'providers', 'usage', 'jobs', 'mcp', 'approvals', 'agents', 'scripts', 'playground'];
  for (const size of [{ width: 1280, height: 800, tag: 'desktop' }, { width: 390, height: 844, tag: 'phone' }]) {
    await page.setViewportSize(size);
    for (const name of pages) {
      await page.goto(`${gw.url}/ui/${name}`);
      await page.waitForLoadState('networkidle');
      // Measured so that clipping cannot hide it: html and body must not clip (with
      // overflow-x: hidden there, scrollWidth is the viewport whatever overflows), and no
      // element may reach past the viewport unless a scroll container of its own holds it.
      const layout = await page.evaluate(() => {
        const clips = [document.documentElement, document.body].map((e) => getComputedStyle(e).overflowX);
        const scrolls = (e) => ['auto', 'scroll'].includes(getComputedStyle(e).overflowX);
        const beyond = [];
        for (const e of document.body.querySelectorAll('*')) {
          const r = e.getBoundingClientRect();
          if (r.width === 0 || r.right <= window.innerWidth + 1) continue;
          let held = false;
          for (let p = e.parentElement; p && p !== document.body; p = p.parentElement) if (scrolls(p)) { held = true; break; }
          if (!held && !e.classList.contains('sr-only')) beyond.push(`${e.tagName.toLowerCase()}.${e.className} right=${Math.round(r.right)}`);
        }
        return { clips, beyond: beyond.slice(0, 5), overflow: document.documentElement.scrollWidth - window.innerWidth };
      });
      assert.deepEqual(layout.clips, ['visible', 'visible'], `${name}: html/body clip sideways overflow`);
      assert.ok(layout.overflow <= 1, `${name} at ${size.tag}: the page scrolls sideways by ${layout.overflow}px`);
      assert.deepEqual(layout.beyond, [], `${name} at ${size.tag}: elements past the viewport`);
      await shot(`${name}-${size.tag}`);
    }
  }
  assert.deepEqual(problems, []);
});
