// The request log, the dashboard's history and usage by two dimensions with budgets in
// the web console (web/, served by lowart at /ui), driven by Debian's chromium through
// playwright-core against a real gateway and lowart-mock: the log lists the requests
// just made, a filter narrows it and stands in the URL (opened again, it shows the same),
// a fallback request's drawer shows its two attempts in order (500, then 200), live tail
// shows a request made after the page opened, the CSV export has the rows; the dashboard
// draws history at once on entry and again after navigating away and back; usage by
// key × day names the key, and a key and a team with a budget get a bar of their spend.
// Nothing past the viewport at 1280 and 390 px; screenshots go to build/ui-screenshots.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { api, createKey, tempDir, waitFor, TIME_SCALE } from './harness.mjs';
import { DESKTOP, PHONE, SHOTS, cutTables, logIn, newSession, openPage, screenshot, sideways as layoutOf, startUi, stopUi } from './ui_harness.mjs';

let gw;
let context;
let page;
let team; // with a token budget
let key; // of `team`, with a token budget
const made = { ok: [], fallback: '', bad: '' }; // request ids made before the pages open
const problems = []; // console errors and uncaught exceptions in the page

const chat = (k, model = 'gpt-demo', content = 'hello log') =>
  api(gw, 'POST', '/v1/chat/completions', { key: k, body: { model, messages: [{ role: 'user', content }] } });

/** Waits until the log has a request (the usage records are written behind, every 25 ms). */
async function logged(id) {
  await waitFor(async () => (await api(gw, 'GET', `/admin/logs/${id}`)).status === 200, { timeoutMs: 5000, what: `the log row of ${id}` });
  return id;
}

before(async () => {
  ({ gw } = await startUi((mock) => `
[server]
listen = "127.0.0.1:3000"
[[providers]]
name = "mock"
base_url = "${mock.url}/v1"
[[models]]
name = "gpt-demo"
[[models.deployments]]
provider = "mock"
model = "mock-model"
[[models]]
name = "fallback-demo"
[[models.deployments]]
provider = "mock"
model = "mock-fail-500"
priority = 0
[[models.deployments]]
provider = "mock"
model = "mock-model"
priority = 1
`));
  const price = await api(gw, 'PUT', '/admin/prices/gpt-demo', { body: { input_per_1m: 3, output_per_1m: 15 } });
  assert.ok(price.status === 200 || price.status === 201, price.text);
  const t = await api(gw, 'POST', '/admin/teams', { body: { name: 'log-team', budget_tokens: 100000, budget_period: 'day' } });
  assert.equal(t.status, 201, t.text);
  team = t.json;
  key = await createKey(gw, { name: 'log-budget-key', team: team.id, budget_tokens: 5000 });
  for (let i = 0; i < 5; i++) {
    const r = await chat(key.key, 'gpt-demo', `hello ${i}`);
    assert.equal(r.status, 200, r.text);
    made.ok.push(r.headers.get('x-request-id'));
  }
  const fb = await chat(gw.masterKey, 'fallback-demo');
  assert.equal(fb.status, 200, fb.text);
  assert.equal(fb.headers.get('x-lowart-deployment'), 'mock/mock-model', 'the fallback answered');
  made.fallback = fb.headers.get('x-request-id');
  for (const id of [...made.ok, made.fallback]) await logged(id);

  page = await newSession(gw, { viewport: DESKTOP, problems, contextOptions: { acceptDownloads: true } });
  context = page.context();
  await logIn(page, gw, gw.masterKey);
});

after(stopUi);

const shot = (name) => screenshot(page, name);
const open = (name) => openPage(page, gw, name);

const row = (id) => page.locator(`[data-testid=log-row][data-request-id="${id}"]`);
const shownIds = () => page.locator('[data-testid=log-row]').evaluateAll((rows) => rows.map((r) => r.dataset.requestId));

test('the request log lists the requests just made, newest first', async () => {
  await open('logs');
  for (const id of [...made.ok, made.fallback]) await row(id).waitFor();
  const ids = await shownIds();
  assert.equal(ids[0], made.fallback, 'the newest first');
  assert.deepEqual(ids.slice(1, 6), [...made.ok].reverse(), 'then the earlier ones, newest first');
  const cells = await row(made.ok[0]).locator('td').allInnerTexts();
  assert.equal(cells[1].trim(), '200');
  assert.match(cells[2], /chat/);
  assert.equal(cells[3].trim(), 'gpt-demo');
  assert.match(cells[4], /mock\/mock-model/);
  assert.equal(cells[5].trim(), 'log-budget-key', 'the key by its name');
  assert.match(cells[8], /^\d+$/, 'tokens');
  assert.match(cells[9], /^\$/, 'cost');
  assert.match(await row(made.fallback).innerText(), /2 attempts/);
  await shot('request-log-1280');
});

test('a status filter narrows the log and stands in the URL, which shows the same view when opened', async () => {
  const bad = await chat('sk-lw-not-a-key');
  assert.equal(bad.status, 401);
  made.bad = await logged(bad.headers.get('x-request-id'));
  await open('logs');
  await row(made.bad).waitFor();
  await page.getByLabel('Status').selectOption('4xx');
  await page.waitForURL(/[?&]status=4xx\b/);
  await waitFor(async () => (await shownIds()).every((id) => id === made.bad) && (await shownIds()).length === 1,
    { timeoutMs: 5000, what: 'only the refused request listed' });
  assert.equal((await row(made.bad).locator('td').nth(10).innerText()).trim(), 'invalid_api_key');
  assert.equal((await row(made.bad).locator('td').nth(1).innerText()).trim(), '401');
  const shared = page.url();

  // the same URL, opened in a tab of its own (a colleague's: logged out, so the login page
  // first, then the view the URL names)
  const other = await context.newPage();
  try {
    await other.goto(shared);
    await other.getByLabel(/key/i).first().fill(gw.masterKey);
    await other.getByRole('button', { name: /log ?in/i }).click();
    assert.ok(other.url().includes('status=4xx'), other.url());
    await other.locator(`[data-testid=log-row][data-request-id="${made.bad}"]`).waitFor();
    assert.equal(await other.locator('[data-testid=log-row]').count(), 1);
    assert.equal(await other.getByLabel('Status').inputValue(), '4xx');
  } finally {
    await other.close();
  }

  // a filter of two: an error code that nothing has, with the class, lists none
  await page.getByLabel('Error code').fill('upstream_timeout');
  await page.getByRole('button', { name: 'Filter', exact: true }).click();
  await page.waitForURL(/error_code=upstream_timeout/);
  await page.getByText('No requests match.').waitFor();
  await page.getByRole('button', { name: 'Clear', exact: true }).click();
  await waitFor(async () => !page.url().includes('status='), { what: 'the URL without the filter' });
  await row(made.fallback).waitFor();
});

test("a fallback request's drawer shows both attempts in order: the 500, then the 200", async () => {
  for (const size of [DESKTOP, PHONE]) {
    await page.setViewportSize(size);
    await open('logs');
    await row(made.fallback).click();
    const drawer = page.getByTestId('log-drawer');
    await drawer.getByText(made.fallback).first().waitFor();
    await page.waitForURL(new RegExp(`open=${made.fallback}`));
    const attempts = drawer.getByTestId('log-attempt');
    assert.equal(await attempts.count(), 2);
    assert.deepEqual(await attempts.evaluateAll((list) => list.map((a) => a.dataset.outcome)), ['500', '200']);
    assert.match(await attempts.nth(0).innerText(), /mock\/mock-fail-500[\s\S]*HTTP 500/);
    assert.match(await attempts.nth(1).innerText(), /mock\/mock-model[\s\S]*HTTP 200/);
    assert.match(await drawer.innerText(), /master key/);
    assert.match(await drawer.innerText(), /fallback-demo/);
    const box = await drawer.boundingBox();
    assert.ok(box.x + box.width <= size.width + 1, `${size.tag}: the drawer fits (${JSON.stringify(box)})`);
    await page.screenshot({ path: path.join(SHOTS, `request-log-drawer-${size.width}.png`) });
    await page.keyboard.press('Escape');
    await waitFor(async () => !(await drawer.isVisible()), { what: 'the drawer closed' });
    // The router replaces the URL asynchronously, after the drawer is gone.
    await waitFor(async () => !page.url().includes('open='), { what: 'closed, it leaves the URL' });
  }
  await page.setViewportSize(DESKTOP);

  // a link with open=<request id> opens the drawer at once
  await page.goto(`${gw.url}/ui/logs?open=${made.fallback}`);
  await page.getByTestId('log-drawer').getByTestId('log-attempt').nth(1).waitFor();
  await page.keyboard.press('Escape');
});

test('live tail shows a request made after the page opened, on top', async () => {
  await open('logs');
  await row(made.fallback).waitFor();
  await page.getByTestId('live-tail').click();
  await page.waitForURL(/[?&]live=1\b/);
  assert.equal(await page.getByTestId('live-tail').getAttribute('aria-pressed'), 'true');
  const r = await chat(key.key, 'gpt-demo', 'after the page opened');
  assert.equal(r.status, 200);
  const id = r.headers.get('x-request-id');
  made.ok.push(id);
  await row(id).waitFor({ timeout: 8000 * TIME_SCALE }); // the next poll (every 2 s), no reload
  assert.equal((await shownIds())[0], id, 'on top');
  await shot('request-log-live-1280');
  await page.getByTestId('live-tail').click();
  await waitFor(async () => !page.url().includes('live='), { what: 'live tail off in the URL' });
});

test('the CSV export downloads the rows of the filter', async () => {
  await open(`logs?key=${key.id}`);
  await row(made.ok[0]).waitFor();
  const [download] = await Promise.all([page.waitForEvent('download'), page.getByTestId('export-logs-csv').click()]);
  assert.match(download.suggestedFilename(), /^lowart-requests-.*\.csv$/);
  const file = path.join(await tempDir(), 'logs.csv');
  await download.saveAs(file);
  const lines = fs.readFileSync(file, 'utf8').trim().split('\n');
  assert.match(lines[0], /^ts_ms,request_id,key_id,/);
  for (const id of made.ok) assert.ok(lines.some((l) => l.includes(id)), `${id} in the export`);
  assert.ok(!lines.some((l) => l.includes(made.fallback)), 'the master key\'s request is not (filtered by key)');
  assert.equal(lines.length - 1, made.ok.length, 'one line a request');
});

/** The total of a history chart, as drawn. */
const historyTotal = (id) => page.getByTestId(`history-${id}`).locator('figure').getAttribute('data-total').then(Number);

test('the dashboard draws history at once on entry, and again after navigating away and back', async () => {
  // every request on the record (the console's own calls to /admin are not)
  const requests = (await api(gw, 'GET', '/admin/usage?group_by=day')).json.data.reduce((n, r) => n + r.requests, 0);
  assert.ok(requests >= made.ok.length + 2, `${requests} requests on the record`);
  await page.goto(`${gw.url}/ui/dashboard`);
  // drawn from the server's records: there before the live part has two scrapes to compare
  await waitFor(async () => (await historyTotal('requests')) === requests, { timeoutMs: 3000, what: 'the history of requests' });
  assert.equal(await page.getByTestId('history-requests-total').innerText(), String(requests));
  assert.ok((await historyTotal('tokens')) > 0, 'tokens');
  assert.equal(await historyTotal('errors'), 1, 'the refused request');
  assert.ok((await historyTotal('cost')) > 0, 'cost');
  assert.equal(await page.getByTestId('history-requests').locator('figure').getAttribute('data-buckets'), '60', 'a bucket a minute');
  assert.equal(await page.getByTestId('history-requests').locator('rect.col').count() >= 1, true, 'bars drawn');
  await shot('dashboard-history-1280');

  await page.getByRole('link', { name: 'Keys', exact: true }).click();
  await page.waitForURL(/\/ui\/keys$/);
  await page.getByRole('link', { name: /dashboard/i }).first().click();
  await page.waitForURL(/\/ui\/dashboard$/);
  await waitFor(async () => (await historyTotal('requests')) === requests, { timeoutMs: 3000, what: 'the history again after coming back' });

  for (const [span, buckets] of [['day', '24'], ['week', '7']]) {
    await page.getByTestId('history-span').selectOption(span);
    await waitFor(async () => (await page.getByTestId('history-requests').locator('figure').getAttribute('data-buckets')) === buckets,
      { what: `the ${span} in ${buckets} buckets` });
    assert.equal(await historyTotal('requests'), requests, `${span}: every request`);
  }
  await page.getByTestId('history-span').selectOption('hour');
});

test('usage by key × day names the key, and a budget bar shows the spend of a key and a team', async () => {
  await open('usage');
  assert.ok(page.url().endsWith('/ui/usage'), 'nothing added to the URL');
  const table = page.getByTestId('usage-pair-table');
  const today = new Date().toISOString().slice(0, 10);
  const keyRow = table.locator('tr', { hasText: 'log-budget-key' });
  await keyRow.waitFor();
  const cells = await keyRow.locator('td').allInnerTexts();
  assert.match(cells[0], /log-budget-key/);
  assert.match(cells[0], new RegExp(key.id));
  assert.equal(cells[1].trim(), today);
  assert.equal(cells[2].trim(), String(made.ok.length), 'its requests');
  assert.ok(await page.getByTestId('usage-series').filter({ hasText: 'log-budget-key' }).count() >= 1, 'a line for the key');

  // the same query as CSV, from the gateway
  const [download] = await Promise.all([page.waitForEvent('download'), page.getByTestId('export-csv-pair').click()]);
  const file = path.join(await tempDir(), 'usage.csv');
  await download.saveAs(file);
  const csv = fs.readFileSync(file, 'utf8');
  assert.match(csv, /^key,day,requests,/);
  assert.match(csv, new RegExp(`${key.id},${today},${made.ok.length},`));

  // team × model: a pair without days
  await page.getByTestId('usage-pair').selectOption('team,model');
  await table.locator('tr', { hasText: 'log-team' }).filter({ hasText: 'gpt-demo' }).waitFor();

  // spend against budget: the key's tokens today (all of this month's are today's here)
  const usage = (await api(gw, 'GET', `/admin/usage?group_by=key&key=${key.id}`)).json.data[0];
  const spent = usage.prompt_tokens + usage.completion_tokens;
  assert.ok(spent > 0);
  const bar = page.getByTestId(`budget-key-${key.id}`);
  await bar.waitFor();
  const meter = bar.getByRole('meter', { name: 'Tokens' });
  assert.equal(Number(await meter.getAttribute('aria-valuenow')), spent);
  assert.equal(Number(await meter.getAttribute('aria-valuemax')), 5000);
  assert.match(await bar.innerText(), new RegExp(`${spent} of 5,000`));
  assert.match(await bar.innerText(), /this month/);
  const teamBar = page.getByTestId(`budget-team-${team.id}`);
  assert.equal(Number(await teamBar.getByRole('meter', { name: 'Tokens' }).getAttribute('aria-valuenow')), spent, "the team's spend is its key's");
  assert.match(await teamBar.innerText(), /today/);
  await shot('usage-pairs-budgets-1280');
});

test('a deployment skipped because its breaker is open shows as skipped in the timeline', async () => {
  // The default breaker opens at half of five outcomes failing: the failing primary opens.
  let last;
  for (let i = 0; i < 8; i++) last = await chat(gw.masterKey, 'fallback-demo');
  assert.equal(last.status, 200, last.text);
  const id = await logged(last.headers.get('x-request-id'));
  await page.goto(`${gw.url}/ui/logs?open=${id}`);
  const attempts = page.getByTestId('log-drawer').getByTestId('log-attempt');
  await attempts.nth(1).waitFor();
  assert.deepEqual(await attempts.evaluateAll((list) => list.map((a) => a.dataset.outcome)), ['breaker_open', '200']);
  assert.match(await attempts.nth(0).innerText(), /mock\/mock-fail-500[\s\S]*skipped \(breaker open\)/);
  assert.doesNotMatch(await attempts.nth(0).innerText(), /\d ms/, 'a skip took no time');
  await page.getByTestId('log-drawer').screenshot({ path: path.join(SHOTS, 'request-log-drawer-breaker-1280.png') });
  await page.keyboard.press('Escape');
});

// --- layout -------------------------------------------------------------------------------

/** Visible elements past the right edge of the viewport that no sideways-scrolling container holds. */
const sideways = async () => (await layoutOf(page)).beyond;

test('the log, dashboard and usage pages fit at 1280 and 390 px, tables uncut at 1280, no console errors', async () => {
  for (const size of [DESKTOP, PHONE]) {
    await page.setViewportSize(size);
    for (const name of ['logs', 'dashboard', 'usage']) {
      await open(name);
      if (name === 'logs') await row(made.fallback).waitFor();
      if (name === 'dashboard') await waitFor(async () => (await historyTotal('requests')) > 0, { what: 'history drawn' });
      if (name === 'usage') await page.getByTestId(`budget-key-${key.id}`).waitFor();
      assert.deepEqual(await sideways(), [], `${name} at ${size.width} px: nothing past the right edge`);
      if (size === DESKTOP) {
        const cut = await cutTables(page);
        assert.deepEqual(cut, [], `${name} at 1280 px: tables wider than their place`);
      }
      await shot(`${{ logs: 'request-log', dashboard: 'dashboard-history', usage: 'usage-pairs-budgets' }[name]}-${size.width}`);
    }
  }
  await page.setViewportSize(DESKTOP);
  assert.deepEqual(problems, []);
});
