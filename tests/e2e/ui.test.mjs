// The web console (web/, served by lowart at /ui) driven by Debian's chromium through
// playwright-core, against a real gateway: log in, every page renders without console
// errors and nothing past the viewport at 1280 and 390 px (full-page screenshots of each go
// to build/ui-screenshots), the navigation in view on a long page,
// create a key and see its secret once, stream a playground answer token by token,
// approve a pending tool call as it arrives, and watch the dashboard numbers move.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { api, createKey, waitFor, TIME_SCALE } from './harness.mjs';
import { DESKTOP, PHONE, cutTables, logIn, newSession, screenshot, sideways as layoutOf, startUi, stopUi } from './ui_harness.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const EVERYTHING = path.join(here, 'node_modules/@modelcontextprotocol/server-everything/dist/index.js');

let gw;
let page;
const problems = []; // console errors and uncaught exceptions in the page

before(async () => {
  ({ gw } = await startUi((mock) => `
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
`));
  const reg = await api(gw, 'POST', '/admin/mcp/register', { body: { name: 'ev', command: 'node', args: [EVERYTHING, 'stdio'] } });
  assert.equal(reg.status, 201, reg.text);
  const pol = await api(gw, 'POST', '/admin/mcp/policies', { body: { tool: 'ev__echo', policy: 'confirm' } });
  assert.ok(pol.status === 201 || pol.status === 200, pol.text);
  page = await newSession(gw, { viewport: DESKTOP, problems });
});

after(stopUi);

const shot = (name) => screenshot(page, name);

test('log in with the admin key (kept in session storage, not in the URL)', async () => {
  await logIn(page, gw, gw.masterKey, /log ?in|sign ?in/i);
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

// --- layout: nothing past the viewport, the navigation in view ------------------------------

const sideways = () => layoutOf(page);

const SIZES = [DESKTOP, PHONE];

test('the sideways check reports an element wider than the viewport, even when html and body clip it', async () => {
  await page.setViewportSize({ width: 1280, height: 800 });
  await page.goto(`${gw.url}/ui/dashboard`);
  await page.getByTestId('total-requests').waitFor();
  assert.deepEqual((await sideways()).beyond, [], 'nothing past the viewport to begin with');
  await page.evaluate(() => {
    const probe = document.createElement('div');
    probe.id = 'too-wide';
    probe.className = 'probe wide';
    probe.textContent = 'an element wider than the viewport';
    probe.style.width = `${window.innerWidth + 300}px`;
    document.querySelector('main').append(probe);
  });
  try {
    let r = await sideways();
    assert.equal(r.count, 1, r.beyond.join('\n'));
    assert.match(r.beyond[0], /^div#too-wide\.probe\.wide "an element wider than the viewport" \(left \d+, right \d+ > \d+\)$/);

    // The reported cause: with overflow-x: hidden on html and body, the page's scrollWidth is
    // the viewport whatever is too wide, and the old check passed; this one still reports it.
    await page.evaluate(() => { for (const e of [document.documentElement, document.body]) e.style.overflowX = 'hidden'; });
    r = await sideways();
    assert.equal(r.overflow, 0, 'the clipping hides the overflow from scrollWidth');
    assert.deepEqual(r.clips, ['hidden', 'hidden']);
    assert.equal(r.count, 1, r.beyond.join('\n'));
    assert.match(r.beyond[0], /^div#too-wide/);
    await page.evaluate(() => { for (const e of [document.documentElement, document.body]) e.style.overflowX = ''; });

    // Inside a container that scrolls sideways by design it is no failure, as in .table-wrap.
    await page.evaluate(() => {
      const box = document.createElement('div');
      box.id = 'scroll-box';
      box.style.overflowX = 'auto';
      box.append(document.getElementById('too-wide'));
      document.querySelector('main').append(box);
    });
    r = await sideways();
    assert.deepEqual(r.beyond, [], 'held by a container that scrolls sideways');
    assert.ok(r.overflow <= 1);
  } finally {
    await page.evaluate(() => {
      for (const id of ['too-wide', 'scroll-box']) document.getElementById(id)?.remove();
      for (const e of [document.documentElement, document.body]) e.style.overflowX = '';
    });
  }
  assert.deepEqual((await sideways()).beyond, [], 'and nothing once it is removed');
});

test('the navigation stays in view at the bottom of a long page', async () => {
  // A long Providers & models page: more models, each a card with its deployments.
  const names = Array.from({ length: 12 }, (_, i) => `long-page-${i}`);
  for (const name of names) {
    const r = await api(gw, 'POST', '/admin/models', { body: { name, deployments: [{ provider: 'mock', model: 'mock-model' }] } });
    assert.equal(r.status, 201, r.text);
  }
  try {
    for (const size of SIZES) {
      await page.setViewportSize(size);
      await page.goto(`${gw.url}/ui/providers`);
      await page.getByText(names.at(-1), { exact: true }).waitFor();
      const scrolled = await page.evaluate(() => {
        const doc = document.documentElement;
        const height = doc.scrollHeight;
        window.scrollTo(0, height);
        return { height, viewport: window.innerHeight, y: window.scrollY, bottom: window.scrollY + window.innerHeight };
      });
      assert.ok(scrolled.height >= 2 * scrolled.viewport, `${size.tag}: a long page (${scrolled.height}px for ${scrolled.viewport}px)`);
      // the document itself scrolls (not some container that holds the whole page)
      assert.ok(scrolled.y > scrolled.viewport && scrolled.bottom >= scrolled.height - 1, `${size.tag}: scrolled to the bottom: ${JSON.stringify(scrolled)}`);
      // In view: inside the viewport and the topmost element at its middle (not covered).
      const inView = (selector) => page.evaluate((sel) => [...document.querySelectorAll(sel)].map((e) => {
        const r = e.getBoundingClientRect();
        const shown = r.width > 0 && r.height > 0;
        const inside = shown && r.top >= 0 && r.left >= 0 && r.bottom <= window.innerHeight && r.right <= document.documentElement.clientWidth;
        const top = inside && e.contains(document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2));
        return { ok: Boolean(top), what: `${e.textContent.trim()} (top ${Math.round(r.top)}, bottom ${Math.round(r.bottom)}${inside && !top ? ', covered' : ''})` };
      }), selector);
      if (size.tag === 'desktop') {
        const links = await inView('.nav-link');
        assert.ok(links.length >= 11, `the navigation links: ${JSON.stringify(links)}`);
        assert.deepEqual(links.filter((l) => !l.ok).map((l) => l.what), [], `desktop: every navigation link in view at the bottom of the page (viewport ${size.height} px high)`);
      } else {
        const button = await inView('.menu-button');
        assert.deepEqual(button.map((b) => b.ok), [true], `phone: the Menu button in view at the bottom of the page: ${button.map((b) => b.what)}`);
        await page.getByRole('button', { name: 'Menu', exact: true }).click();
        const links = await inView('.nav-link');
        assert.ok(links.length >= 11);
        assert.deepEqual(links.filter((l) => !l.ok).map((l) => l.what), [], 'phone: the open menu shows every link');
        await page.locator('.nav-link', { hasText: 'Usage' }).click();
        await page.waitForURL(/\/ui\/usage$/);
        assert.equal(await page.locator('.sidebar-body.open').count(), 0, 'the menu closes on navigating');
      }
    }
  } finally {
    for (const name of names) await api(gw, 'DELETE', `/admin/models/${name}`);
  }
});

test('every page renders at desktop and phone size without console errors', async () => {
  // Every page the navigation offers (a new page is checked without being listed here).
  await page.setViewportSize(SIZES[0]);
  await page.goto(`${gw.url}/ui/dashboard`);
  await page.locator('.nav-link').first().waitFor();
  const pages = (await page.locator('.nav-link').evaluateAll((links) => links.map((a) => new URL(a.href).pathname)))
    .map((p) => p.replace(/^\/ui\//, ''));
  for (const known of ['dashboard', 'users', 'keys', 'providers', 'usage', 'jobs', 'mcp', 'approvals', 'agents', 'scripts', 'playground'])
    assert.ok(pages.includes(known), `the navigation offers ${known}: ${pages}`);
  for (const size of SIZES) {
    await page.setViewportSize(size);
    for (const name of pages) {
      await page.goto(`${gw.url}/ui/${name}`);
      await page.waitForLoadState('networkidle');
      const r = await sideways();
      assert.deepEqual(r.beyond, [], `${name} at ${size.tag} (${size.width} px): ${r.count} element(s) past the right edge of the viewport`);
      assert.deepEqual(r.clips, ['visible', 'visible'], `${name}: html/body must not clip sideways overflow (it makes body the scroll container, so the navigation scrolls away)`);
      assert.ok(r.overflow <= 1, `${name} at ${size.tag}: the page scrolls sideways by ${r.overflow}px`);
      if (size.tag === 'desktop') {
        // No table cut off at 1280 px: each fits its wrap (narrower, a table scrolls in it).
        const cut = await cutTables(page);
        assert.deepEqual(cut, [], `${name} at ${size.tag}: tables wider than their place`);
      }
      await shot(`${name}-${size.tag}`);
    }
  }
  assert.deepEqual(problems, []);
});
