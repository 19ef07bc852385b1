// Background jobs end to end against mock ComfyUI processes (tests/e2e/comfyui_mock.mjs,
// real HTTP): submit -> poll -> image bytes; the real openai client's images.generate;
// a gateway killed mid-job that finishes the job after a restart without running it
// twice; a backend that is down (job fails with a clear error after retries) or goes
// down mid-job; cancel (running: interrupted, queued: deleted); 100 concurrent jobs over
// two backends balanced by queue length; per-key scoping; signed webhooks with retry;
// metering; expiry; the workflow script's refusals; and a backend that names prompts
// itself (--own-prompt-ids): run once, handed over once, after a SIGKILL too, and at most
// submit_attempts hand-overs to a backend that loses every prompt, across a restart.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { api, cleanupAll, createKey, sqliteQuery, startGateway, tempDir, waitFor } from './harness.mjs';
import { spawnComfyMock } from './comfyui_mock.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const EXAMPLES = path.resolve(here, '../../config/scripts');
const SECRET = 'whsec-e2e-0123456789';
const PNG = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

let a; // mock ComfyUI backends
let b;
let dir;
let gw;
let hooks; // webhook receiver
const received = [];
let failNextHooks = 0;

function config({ backends, extra = '' }) {
  let s = `
[server]
listen = "127.0.0.1:3000"
[scripts]
dir = "${path.join(dir, 'scripts')}"
[jobs]
dir = "${path.join(dir, 'jobs')}"
poll_ms = 40
submit_attempts = 3
retry_backoff_ms = 50
unreachable_ms = 1500
request_timeout_ms = 2000
webhook_secret = "${SECRET}"
${extra}
`;
  backends.forEach((m, i) => {
    s += `[[providers]]\nname = "comfy${i}"\nkind = "comfyui"\nbase_url = "${m.url}"\n`;
  });
  s += '[[models]]\nname = "sdxl"\nscript = "comfyui_txt2img.lua"\nworkflow = "txt2img.json"\n';
  backends.forEach((_, i) => { s += `[[models.deployments]]\nprovider = "comfy${i}"\nmodel = "sdxl"\n`; });
  return s;
}

async function gateway(backends, extra) {
  return startGateway({ config: config({ backends, extra }), dir, masterKey: gw?.masterKey });
}

const stats = async (m) => (await fetch(`${m.url}/mock/stats`)).json();
const mockConfig = (m, body) => fetch(`${m.url}/mock/config`, { method: 'POST', body: JSON.stringify(body) });
const submit = (body, key) => api(gw, 'POST', '/v1/jobs', { body, key });
const getJob = (id, key) => api(gw, 'GET', `/v1/jobs/${id}`, { key });

async function finished(id, { timeoutMs = 15000, key } = {}) {
  let job;
  await waitFor(async () => {
    const r = await getJob(id, key);
    job = r.json;
    return ['succeeded', 'failed', 'cancelled'].includes(job?.status);
  }, { timeoutMs, intervalMs: 50, what: `job ${id} to finish` });
  return job;
}

before(async () => {
  dir = await tempDir();
  await fsp.mkdir(path.join(dir, 'scripts'));
  for (const f of ['comfyui_txt2img.lua', 'txt2img.json'])
    await fsp.copyFile(path.join(EXAMPLES, f), path.join(dir, 'scripts', f));
  a = await spawnComfyMock({ stepMs: 5, concurrency: 2, name: 'a' });
  b = await spawnComfyMock({ stepMs: 5, concurrency: 2, name: 'b' });
  hooks = http.createServer((req, res) => {
    let body = '';
    req.on('data', (d) => { body += d; });
    req.on('end', () => {
      received.push({ headers: req.headers, body });
      if (failNextHooks > 0) {
        failNextHooks--;
        res.writeHead(500).end('try again');
      } else {
        res.writeHead(204).end();
      }
    });
  });
  await new Promise((r) => hooks.listen(0, '127.0.0.1', r));
  gw = await gateway([a, b]);
});

after(async () => {
  hooks?.close();
  await a?.stop();
  await b?.stop();
  await cleanupAll();
});

test('submit -> 202 -> poll -> succeeded, and the image bytes come from ComfyUI', async () => {
  const r = await submit({ model: 'sdxl', input: { prompt: 'a lighthouse at dusk', n: 2, steps: 3, seed: 42 } });
  assert.equal(r.status, 202, r.text);
  assert.match(r.json.id, /^job_[0-9a-f]{32}$/);
  assert.equal(r.json.status, 'queued');
  const job = await finished(r.json.id);
  assert.equal(job.status, 'succeeded', JSON.stringify(job));
  assert.equal(job.progress, 1);
  assert.equal(job.files.length, 2);
  for (const f of job.files) {
    assert.equal(f.content_type, 'image/png');
    const res = await fetch(gw.url + f.url, { headers: { authorization: `Bearer ${gw.masterKey}` } });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('content-type'), 'image/png');
    const bytes = Buffer.from(await res.arrayBuffer());
    assert.deepEqual(bytes.subarray(0, 8), PNG);
    assert.equal(bytes.length, f.bytes);
    // The PNG carries the prompt the workflow script put into the graph.
    assert.ok(bytes.includes(Buffer.from('a lighthouse at dusk')), 'the prompt reached ComfyUI');
    const onDisk = fs.readFileSync(path.join(dir, 'jobs', job.id, f.name));
    assert.deepEqual(onDisk, bytes, 'stored under jobs.dir/<job id>/');
  }
  const missing = await api(gw, 'GET', `/v1/jobs/${job.id}/files/nope.png`);
  assert.equal(missing.status, 404);
});

test('progress comes from the backend\'s /ws events while the job runs', async () => {
  const r = await submit({ model: 'sdxl', input: { prompt: 'slow and steady', steps: 300 } }); // ~1.5 s
  assert.equal(r.status, 202, r.text);
  const seen = [];
  await waitFor(async () => {
    const j = (await getJob(r.json.id)).json;
    if (j.status === 'running' && j.progress > 0 && j.progress < 1) seen.push(j.progress);
    return j.status === 'succeeded';
  }, { timeoutMs: 15000, intervalMs: 100, what: 'the job to finish' });
  assert.ok(seen.length >= 3, `progress observed while running: ${seen}`);
  assert.ok(seen[seen.length - 1] > seen[0], `progress grows: ${seen}`);
  assert.equal((await getJob(r.json.id)).json.progress, 1);
  assert.ok((await stats(a)).ws_connects + (await stats(b)).ws_connects >= 1);
});

test('the real openai client: images.generate waits for the job; async answers 202', async () => {
  const client = gw.client(gw.masterKey, { timeout: 20000 });
  const img = await client.images.generate({ model: 'sdxl', prompt: 'a red fox', response_format: 'b64_json' });
  assert.equal(img.data.length, 1);
  assert.deepEqual(Buffer.from(img.data[0].b64_json, 'base64').subarray(0, 8), PNG);
  const urls = await client.images.generate({ model: 'sdxl', prompt: 'two foxes', n: 2 });
  assert.equal(urls.data.length, 2);
  assert.match(urls.data[0].url, /^\/v1\/jobs\/job_[0-9a-f]+\/files\//);
  const r = await api(gw, 'POST', '/v1/images/generations', { body: { model: 'sdxl', prompt: 'later', async: true } });
  assert.equal(r.status, 202, r.text);
  assert.equal((await finished(r.json.id)).status, 'succeeded');
});

test('bad requests get clear errors in the OpenAI envelope', async () => {
  let r = await submit({ model: 'sdxl', input: { n: 1 } });
  assert.equal(r.status, 400);
  assert.match(r.json.error.message, /input\.prompt .* is required/);
  assert.equal(r.json.error.code, 'rejected_by_script');
  r = await submit({ model: 'sdxl', input: { prompt: 'x', size: '5x5' } });
  assert.equal(r.status, 400);
  assert.match(r.json.error.message, /input\.size/);
  r = await submit({ model: 'nope', input: { prompt: 'x' } });
  assert.equal(r.status, 404);
  assert.equal(r.json.error.code, 'model_not_found');
  r = await submit({ model: 'sdxl' });
  assert.equal(r.status, 400);
  assert.equal(r.json.error.param, 'input');
  r = await api(gw, 'POST', '/v1/jobs', { body: '{not json' });
  assert.equal(r.status, 400);
  r = await submit({ model: 'sdxl', input: { prompt: 'x' }, webhook: 'ftp://example.com/x' });
  assert.equal(r.status, 400);
  assert.equal(r.json.error.param, 'webhook');
  r = await getJob('job_doesnotexist');
  assert.equal(r.status, 404);
});

test('jobs are scoped to the key that made them', async () => {
  const k1 = (await createKey(gw, { name: 'jobs-one' })).key;
  const k2 = (await createKey(gw, { name: 'jobs-two' })).key;
  const r = await submit({ model: 'sdxl', input: { prompt: 'mine', steps: 2 } }, k1);
  assert.equal(r.status, 202, r.text);
  const job = await finished(r.json.id, { key: k1 });
  assert.equal(job.status, 'succeeded');
  assert.equal((await getJob(job.id, k2)).status, 404);
  assert.equal((await api(gw, 'GET', `/v1/jobs/${job.id}/files/${job.files[0].name}`, { key: k2 })).status, 404);
  assert.equal((await api(gw, 'DELETE', `/v1/jobs/${job.id}`, { key: k2 })).status, 404);
  const mine = await api(gw, 'GET', '/v1/jobs', { key: k1 });
  assert.deepEqual(mine.json.data.map((j) => j.id), [job.id]);
  assert.equal((await api(gw, 'GET', '/v1/jobs', { key: k2 })).json.data.length, 0);
  // Operators and viewers see every job under /admin/jobs; plain keys may not.
  const viewer = (await createKey(gw, { name: 'jobs-viewer', role: 'viewer' })).key;
  const all = await api(gw, 'GET', '/admin/jobs?limit=1000', { key: viewer });
  assert.equal(all.status, 200, all.text);
  assert.ok(all.json.data.some((j) => j.id === job.id));
  assert.equal((await api(gw, 'GET', `/admin/jobs/${job.id}`, { key: viewer })).json.id, job.id);
  assert.equal((await api(gw, 'DELETE', `/admin/jobs/${job.id}`, { key: viewer })).status, 403);
  assert.equal((await api(gw, 'GET', '/admin/jobs', { key: k1 })).status, 403);
});

test('cancel: a queued job is taken off the backend queue, a running one is interrupted', async () => {
  await mockConfig(a, { concurrency: 1 });
  await mockConfig(b, { concurrency: 1 });
  const base = async () => {
    const [sa, sb] = [await stats(a), await stats(b)];
    return { deleted: sa.deleted + sb.deleted, interrupted: sa.interrupted + sb.interrupted };
  };
  const before = await base();
  // Long jobs (200 steps x 5 ms), submitted one by one so the queues balance: each
  // backend runs one and holds one.
  const ids = [];
  for (let i = 0; i < 4; i++) {
    const r = await submit({ model: 'sdxl', input: { prompt: `long ${i}`, steps: 200 } });
    assert.equal(r.status, 202, r.text);
    ids.push(r.json.id);
    await waitFor(async () => ((await stats(a)).pending.length + (await stats(b)).pending.length +
      (await stats(a)).running.length + (await stats(b)).running.length) === i + 1, { what: `job ${i} at a backend` });
  }
  let jobs;
  await waitFor(async () => {
    jobs = await Promise.all(ids.map(async (id) => (await getJob(id)).json));
    return jobs.filter((j) => j.status === 'running').length === 2;
  }, { what: 'two running jobs' });
  const queued = jobs.filter((j) => j.status === 'queued');
  assert.equal(queued.length, 2);
  for (const j of queued) {
    const c = await api(gw, 'DELETE', `/v1/jobs/${j.id}`);
    assert.equal(c.status, 200, c.text);
    assert.equal(c.json.status, 'cancelled');
  }
  await waitFor(async () => (await base()).deleted === before.deleted + 2, { what: 'both taken off the queues' });
  for (const j of jobs.filter((x) => x.status === 'running')) {
    const c = await api(gw, 'DELETE', `/v1/jobs/${j.id}`);
    assert.equal(c.status, 200, c.text);
  }
  await waitFor(async () => (await base()).interrupted === before.interrupted + 2, { what: 'both interrupted' });
  for (const id of ids) assert.equal((await getJob(id)).json.status, 'cancelled');
  const again = await api(gw, 'DELETE', `/v1/jobs/${ids[0]}`);
  assert.equal(again.status, 409);
  assert.equal(again.json.error.code, 'job_finished');
  await mockConfig(a, { concurrency: 2 });
  await mockConfig(b, { concurrency: 2 });
});

test('100 concurrent jobs over two backends: all succeed, both backends work, none runs twice', async () => {
  const sa = await stats(a);
  const sb = await stats(b);
  const created = await Promise.all(Array.from({ length: 100 }, (_, i) =>
    submit({ model: 'sdxl', input: { prompt: `batch ${i}`, steps: 2 } })));
  for (const r of created) assert.equal(r.status, 202, r.text);
  const jobs = await Promise.all(created.map((r) => finished(r.json.id, { timeoutMs: 60000 })));
  assert.ok(jobs.every((j) => j.status === 'succeeded'), JSON.stringify(jobs.filter((j) => j.status !== 'succeeded')));
  const ea = await stats(a);
  const eb = await stats(b);
  const ranA = ea.submitted - sa.submitted;
  const ranB = eb.submitted - sb.submitted;
  assert.equal(ranA + ranB, 100, 'every job handed over exactly once');
  assert.ok(ranA >= 20 && ranB >= 20, `balanced by queue length: a ran ${ranA}, b ran ${ranB}`);
  for (const s of [ea, eb]) for (const n of Object.values(s.executions)) assert.equal(n, 1);
});

/** Hand-overs (POST /prompt) the two backends took so far, together. */
const handedOver = async () => (await stats(a)).submitted + (await stats(b)).submitted;

test('a gateway killed mid-job picks the job up after a restart; it runs exactly once', async () => {
  const before = await handedOver();
  const r = await submit({ model: 'sdxl', input: { prompt: 'survive a crash', steps: 150 } }); // ~0.75 s
  assert.equal(r.status, 202);
  await waitFor(async () => (await getJob(r.json.id)).json.status === 'running', { what: 'job running' });
  await gw.stop('SIGKILL');
  gw = await gateway([a, b]);
  const job = await finished(r.json.id);
  assert.equal(job.status, 'succeeded', JSON.stringify(job));
  const [{ prompt_id: pid }] = await sqliteQuery(gw.dbPath, `SELECT prompt_id FROM jobs WHERE id = '${r.json.id}'`);
  // Summed over both backends: a prompt run once on each is a prompt run twice.
  const runs = ((await stats(a)).executions[pid] ?? 0) + ((await stats(b)).executions[pid] ?? 0);
  assert.equal(runs, 1, 'the backends ran the prompt lowart stored, once in all');
  assert.equal(await handedOver(), before + 1, 'handed over once in all, restart included');
  await gw.waitForLog((l) => l.msg === 'jobs resumed after a restart');
});

test('a job queued while the gateway is down is handed over after the restart', async () => {
  // Stop the gateway right after the job is stored but (likely) before it ran: either
  // way it must finish once.
  const r = await submit({ model: 'sdxl', input: { prompt: 'quick crash', steps: 40 } });
  await gw.stop('SIGKILL');
  gw = await gateway([a, b]);
  const job = await finished(r.json.id);
  assert.equal(job.status, 'succeeded');
  const [{ prompt_id: pid }] = await sqliteQuery(gw.dbPath, `SELECT prompt_id FROM jobs WHERE id = '${r.json.id}'`);
  const runs = ((await stats(a)).executions[pid] ?? 0) + ((await stats(b)).executions[pid] ?? 0);
  assert.equal(runs, 1);
});

// --- a ComfyUI that names prompts itself (releases before client ids, proxies in front) ---

/** lowart's own prompt id of a job: the UUID its job id is made of (sent as prompt_id and client_id). */
const ownPromptId = (jobId) => jobId.slice(4).replace(/^(.{8})(.{4})(.{4})(.{4})(.{12})$/, '$1-$2-$3-$4-$5');
const jobRow = async (id) =>
  (await sqliteQuery(gw.dbPath, `SELECT prompt_id, attempts FROM jobs WHERE id = '${id}'`))[0];

/** Runs `body` against a gateway whose only backend is a fresh mock in --own-prompt-ids mode. */
async function withOwnIdBackend(body) {
  const c = await spawnComfyMock({ stepMs: 5, concurrency: 2, name: 'c', ownPromptIds: true });
  await gw.stop();
  gw = await gateway([c]);
  try {
    await body(c);
  } finally {
    await gw.stop();
    await c.stop();
    gw = await gateway([a, b]);
  }
}

test('a backend that chooses its own prompt ids: the job runs once, handed over once', async () => {
  await withOwnIdBackend(async (c) => {
    const r = await submit({ model: 'sdxl', input: { prompt: 'named by the backend', steps: 20 } });
    assert.equal(r.status, 202, r.text);
    const job = await finished(r.json.id, { timeoutMs: 8000 });
    assert.equal(job.status, 'succeeded', JSON.stringify(job));
    const s = await stats(c);
    assert.equal(s.submitted, 1, 'one hand-over reached the backend');
    assert.deepEqual(s.runs_by_client, { [ownPromptId(job.id)]: 1 }, 'one run');
    const row = await jobRow(job.id);
    assert.notEqual(row.prompt_id, ownPromptId(job.id), 'the mock really named the prompt itself');
    assert.equal(s.executions[row.prompt_id], 1, 'lowart follows the id the backend answered with');
    assert.equal(row.attempts, 1, 'the job counts one hand-over');
  });
});

test('a backend that chooses its own prompt ids: a gateway killed mid-job still has the job run once', async () => {
  await withOwnIdBackend(async (c) => {
    const r = await submit({ model: 'sdxl', input: { prompt: 'named, then orphaned', steps: 150 } }); // ~0.75 s
    assert.equal(r.status, 202, r.text);
    await waitFor(async () => (await stats(c)).running.length === 1, { what: 'the job running at the backend' });
    await gw.stop('SIGKILL');
    gw = await gateway([c]);
    const job = await finished(r.json.id, { timeoutMs: 8000 });
    assert.equal(job.status, 'succeeded', JSON.stringify(job));
    const s = await stats(c);
    assert.equal(s.submitted, 1, 'not handed over again after the restart');
    assert.deepEqual(s.runs_by_client, { [ownPromptId(job.id)]: 1 });
    assert.equal((await jobRow(job.id)).attempts, 1);
  });
});

test('a backend that chooses its own prompt ids: a gateway killed before storing the answer finds the job by client id', async () => {
  // Killed while POST /prompt is on its way (the backend answers 400 ms late): lowart never
  // learnt the backend's id. After the restart it finds the prompt by its client id, in the
  // queue (still running) or in the history (finished while lowart was down).
  for (const where of ['queue', 'history']) {
    await withOwnIdBackend(async (c) => {
      await mockConfig(c, { latency_ms: 400 });
      const r = await submit({ model: 'sdxl', input: { prompt: `orphaned in the ${where}`, steps: where === 'queue' ? 300 : 2 } });
      assert.equal(r.status, 202, r.text);
      await waitFor(async () => (await jobRow(r.json.id))?.attempts === 1, { what: 'the hand-over stored' });
      // The attempt is stored before POST /prompt is written: kill only once the backend has
      // the request (killed earlier, the backend never sees it and a second hand-over is right).
      await waitFor(async () => (await stats(c)).prompt_requests === 1, { what: 'the POST /prompt to reach the backend' });
      await gw.stop('SIGKILL');
      await mockConfig(c, { latency_ms: 0 });
      await waitFor(async () => (await stats(c)).submitted === 1, { what: 'the backend to take the prompt' });
      if (where === 'history') await waitFor(async () => (await stats(c)).completed === 1, { what: 'the run to end' });
      else assert.equal((await stats(c)).running.length, 1);
      gw = await gateway([c]);
      const job = await finished(r.json.id, { timeoutMs: 8000 });
      assert.equal(job.status, 'succeeded', `${where}: ${JSON.stringify(job)}`);
      const s = await stats(c);
      assert.equal(s.submitted, 1, `${where}: not handed over again`);
      assert.deepEqual(s.runs_by_client, { [ownPromptId(job.id)]: 1 }, where);
      const row = await jobRow(job.id);
      assert.equal(s.executions[row.prompt_id], 1, `${where}: lowart adopted the backend's id`);
      assert.equal(row.attempts, 1, where);
    });
  }
});

test('hand-overs are bounded by submit_attempts, across restarts too', async () => {
  await withOwnIdBackend(async (c) => {
    // The backend accepts every prompt and forgets it at once: each poll finds the job
    // gone and lowart hands it over again, at most submit_attempts (3) times in all.
    await mockConfig(c, { lose_prompts: true, latency_ms: 300 });
    const r = await submit({ model: 'sdxl', input: { prompt: 'lost every time', steps: 2 } });
    assert.equal(r.status, 202, r.text);
    await waitFor(async () => (await stats(c)).submitted === 1, { what: 'the first hand-over' });
    await gw.stop('SIGKILL'); // the next hand-over is >= 600 ms away (/queue and /history first)
    gw = await gateway([c]);
    const job = await finished(r.json.id, { timeoutMs: 10000 });
    assert.equal(job.status, 'failed', JSON.stringify(job));
    assert.match(job.error, /after 3 attempt\(s\)/);
    assert.equal((await stats(c)).submitted, 3, 'three hand-overs in all, the restart in between');
    assert.equal((await jobRow(job.id)).attempts, 3);
  });
});

test('signed webhooks: retried until the receiver takes them; the signature verifies', async () => {
  received.length = 0;
  failNextHooks = 1;
  const url = `http://127.0.0.1:${hooks.address().port}/hook`;
  const r = await submit({ model: 'sdxl', input: { prompt: 'call me', steps: 2 }, webhook: url });
  assert.equal(r.status, 202, r.text);
  await waitFor(async () => (await getJob(r.json.id)).json.webhook_state === 'delivered', { what: 'webhook delivered' });
  assert.equal(received.length, 2, 'a failed delivery is retried');
  const { headers, body } = received[1];
  const expected = createHmac('sha256', SECRET).update(`${headers['x-lowart-timestamp']}.${body}`).digest('hex');
  assert.equal(headers['x-lowart-signature'], `sha256=${expected}`);
  const payload = JSON.parse(body);
  assert.equal(payload.event, 'job.succeeded');
  assert.equal(payload.job.id, r.json.id);
  assert.equal(payload.job.files.length, 1);
});

test('jobs are metered: per request + per image, in usage records', async () => {
  const p = await api(gw, 'PUT', '/admin/prices/sdxl', { body: { per_request: 0.01, per_image: 0.04 } });
  assert.ok(p.status === 200 || p.status === 201, p.text);
  assert.equal(p.json.per_image, 0.04);
  const r = await submit({ model: 'sdxl', input: { prompt: 'priced', n: 3, steps: 2 } });
  const job = await finished(r.json.id);
  assert.equal(job.status, 'succeeded');
  assert.ok(Math.abs(job.cost - 0.13) < 1e-9, `cost ${job.cost}`);
  const query = `SELECT route, model, status, cost FROM usage_records WHERE request_id = '${job.id}'`;
  await waitFor(async () => (await sqliteQuery(gw.dbPath, query)).length === 1, { what: 'the usage record' });
  const [row] = await sqliteQuery(gw.dbPath, query);
  assert.deepEqual({ ...row, cost: Math.round(row.cost * 1e9) / 1e9 }, { route: 'jobs', model: 'sdxl', status: 200, cost: 0.13 });
});

test('a backend that is down: the job fails with a clear error after its retries', async () => {
  const port = b.port;
  await b.stop();
  await a.stop();
  const r = await submit({ model: 'sdxl', input: { prompt: 'nobody home', steps: 2 } });
  assert.equal(r.status, 202, r.text);
  const job = await finished(r.json.id);
  assert.equal(job.status, 'failed');
  assert.match(job.error, /no ComfyUI backend took the job after 3 attempt\(s\): unreachable: .*refused/);
  // Back up again for the rest.
  a = await spawnComfyMock({ stepMs: 5, concurrency: 2, name: 'a', port: a.port });
  b = await spawnComfyMock({ stepMs: 5, concurrency: 2, name: 'b', port });
});

test('a backend that goes down mid-job fails the job once it stays unreachable', async () => {
  const r = await submit({ model: 'sdxl', input: { prompt: 'lost midway', steps: 2000 } }); // 10 s
  await waitFor(async () => (await getJob(r.json.id)).json.status === 'running', { what: 'job running' });
  const port = { a: a.port, b: b.port };
  await a.stop('SIGKILL');
  await b.stop('SIGKILL');
  const job = await finished(r.json.id, { timeoutMs: 10000 });
  assert.equal(job.status, 'failed');
  assert.match(job.error, /unreachable for \d+ s/);
  a = await spawnComfyMock({ stepMs: 5, concurrency: 2, name: 'a', port: port.a });
  b = await spawnComfyMock({ stepMs: 5, concurrency: 2, name: 'b', port: port.b });
});

test('finished jobs and their files expire after jobs.ttl_s', async () => {
  await gw.stop();
  gw = await gateway([a, b], 'ttl_s = 1\nsweep_s = 1');
  const r = await submit({ model: 'sdxl', input: { prompt: 'short-lived', steps: 2 } });
  const job = await finished(r.json.id);
  assert.equal(job.status, 'succeeded');
  assert.ok(fs.existsSync(path.join(dir, 'jobs', job.id)));
  await waitFor(async () => (await getJob(job.id)).status === 404, { timeoutMs: 6000, what: 'the job to expire' });
  assert.equal(fs.existsSync(path.join(dir, 'jobs', job.id)), false, 'its files are gone');
});
