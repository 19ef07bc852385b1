// What the UI tests (ui*.test.mjs) share: lowart-mock and a gateway that serves the built
// console (web/dist, or LOWART_UI_DIR) at /ui, Debian's chromium through playwright-core,
// pages that collect their console errors, logging in, screenshots to build/ui-screenshots
// and the layout checks (nothing past the viewport, no table cut off).

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { cleanupAll, startGateway, startMock, tempDir, TIME_SCALE } from './harness.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(here, '../..');
export const DIST = process.env.LOWART_UI_DIR || path.join(ROOT, 'web/dist');
export const SHOTS = path.join(ROOT, 'build/ui-screenshots');
export const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
export const DESKTOP = { width: 1280, height: 800, tag: 'desktop' };
export const PHONE = { width: 390, height: 844, tag: 'phone' };

let browser;

/**
 * Starts lowart-mock and a gateway serving the console, with the config `configFor(mock)`
 * returns (it names the mock's URL). Resolves { gw, mock }.
 */
export async function startUi(configFor) {
  assert.ok(fs.existsSync(path.join(DIST, 'index.html')), `the console is not built in ${DIST} (scripts/build_web.sh)`);
  assert.ok(fs.existsSync(CHROMIUM), `no chromium at ${CHROMIUM} (scripts/setup.sh installs it)`);
  fs.mkdirSync(SHOTS, { recursive: true });
  const mock = await startMock();
  const gw = await startGateway({ config: configFor(mock), dir: await tempDir(), env: { LOWART_UI_DIR: DIST } });
  return { gw, mock };
}

/** Launches chromium (once; `stopUi` closes it). */
export async function launchBrowser() {
  browser ??= await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-dev-shm-usage'],
  });
  return browser;
}

/** Closes chromium and stops what the harness started. */
export async function stopUi() {
  await browser?.close();
  browser = undefined;
  await cleanupAll();
}

/**
 * Collects the console errors and uncaught exceptions of page `p` in `problems`, except the
 * console errors `ignore(message)` says to pass over.
 */
export function watch(p, problems, ignore = () => false) {
  p.setDefaultTimeout(10000 * TIME_SCALE);
  p.on('console', (m) => { if (m.type() === 'error' && !ignore(m)) problems.push(`console: ${m.text()}`); });
  p.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
}

/** Logs in to the console of `gw` on page `p` with `key`. */
export async function logIn(p, gw, key, button = /log ?in/i) {
  await p.goto(`${gw.url}/ui/`);
  await p.getByLabel(/key/i).fill(key);
  await p.getByRole('button', { name: button }).click();
  await p.getByRole('link', { name: /dashboard/i }).first().waitFor();
}

/**
 * A watched page in a browser context of its own (its own session storage), logged in with
 * `key` when one is given.
 */
export async function newSession(gw, { key, viewport = DESKTOP, problems, ignore, contextOptions = {} }) {
  const ctx = await (await launchBrowser()).newContext({ viewport, ...contextOptions });
  const p = await ctx.newPage();
  watch(p, problems, ignore);
  if (key) await logIn(p, gw, key);
  return p;
}

/** A full-page screenshot of `p` to build/ui-screenshots/<name>.png. */
export async function screenshot(p, name) {
  await p.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true });
}

/** Opens a page of the console and waits until it has loaded its data. */
export async function openPage(p, gw, name) {
  await p.goto(`${gw.url}/ui/${name}`);
  await p.waitForLoadState('networkidle');
}

/** The tables of `p` wider than their .table-wrap, named by their first header. */
export function cutTables(p) {
  return p.locator('.table-wrap').evaluateAll((wraps) => wraps
    .filter((w) => w.scrollWidth > w.clientWidth + 1)
    .map((w) => `${(w.querySelector('th')?.textContent ?? '').trim()}…: ${w.scrollWidth}px in ${w.clientWidth}px`));
}

// What reaches past the right edge of the viewport, measured box by box so that no CSS can
// hide it (overflow-x: hidden on html and body clips the overflow, and with it the page's
// scrollWidth, which then always equals the viewport). A failure is a visible element (a
// box, not visibility: hidden, not visually hidden .sr-only text) whose right edge is past
// the viewport and which no container below body that scrolls sideways by design
// (overflow-x auto or scroll, like .table-wrap) holds; named by tag, id, classes and text,
// only the outermost of a run (a row past the edge, not each of its cells).
// Resolves { beyond: [names], count, width, clips: [html, body overflow-x], overflow }.
export async function sideways(p) {
  return p.evaluate(() => {
    const width = document.documentElement.clientWidth; // the viewport, without a vertical scrollbar
    const scrollsSideways = (e) => ['auto', 'scroll'].includes(getComputedStyle(e).overflowX);
    const held = (e) => {
      for (let q = e.parentElement; q && q !== document.body && q !== document.documentElement; q = q.parentElement)
        if (scrollsSideways(q)) return true;
      return false;
    };
    const name = (e, r) => {
      const cls = (e.getAttribute('class') ?? '').trim().split(/\s+/).filter(Boolean).map((c) => `.${c}`).join('');
      const testid = e.dataset?.testid ? `[data-testid=${e.dataset.testid}]` : '';
      const text = (e.innerText ?? e.textContent ?? '').replace(/\s+/g, ' ').trim();
      const said = text.length > 50 ? `${text.slice(0, 50)}…` : text;
      return `${e.tagName.toLowerCase()}${e.id ? `#${e.id}` : ''}${cls}${testid} "${said}" ` +
        `(left ${Math.round(r.left)}, right ${Math.round(r.right)} > ${width})`;
    };
    const past = [];
    for (const e of document.body.querySelectorAll('*')) {
      const r = e.getBoundingClientRect();
      if (r.width === 0 || r.right <= width + 1) continue;
      if (getComputedStyle(e).visibility === 'hidden' || e.closest('.sr-only')) continue;
      if (!held(e)) past.push([e, r]);
    }
    const outermost = past.filter(([e]) => !past.some(([o]) => o !== e && o.contains(e)));
    return {
      beyond: outermost.slice(0, 12).map(([e, r]) => name(e, r)),
      count: outermost.length,
      width,
      clips: [document.documentElement, document.body].map((e) => getComputedStyle(e).overflowX),
      overflow: document.documentElement.scrollWidth - width,
    };
  });
}
