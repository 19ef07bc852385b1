// Mixed traffic for bench/soak.sh: CONCURRENCY workers send, for SECONDS, a mix of JSON
// and streamed chat completions, a model whose primary fails (fallback), streams that
// reset mid-way, embeddings, admin reads and MCP tool calls; every 5 s it samples
// lowart's RSS, descriptors and child processes. Prints one JSON summary line.
//   node bench/soak_client.mjs PORT KEY SECONDS LOWART_PID
import fs from 'node:fs';
import { execFileSync } from 'node:child_process';

const [port, key, secondsArg, pidArg] = process.argv.slice(2);
const seconds = Number(secondsArg);
const pid = Number(pidArg);
const base = `http://127.0.0.1:${port}`;
const rssMiB = () => Number(/VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))[1]) / 1024;
const fds = () => fs.readdirSync(`/proc/${pid}/fd`).length;
const children = () => {
  try { return execFileSync('pgrep', ['-P', String(pid)]).toString().trim().split('\n').filter(Boolean).length; } catch { return 0; }
};
const headers = { authorization: `Bearer ${key}`, 'content-type': 'application/json' };
const post = (path, body) => fetch(base + path, { method: 'POST', headers, body: JSON.stringify(body) }).then(async (r) => { await r.text(); return r.status; });
const get = (path) => fetch(base + path, { headers }).then(async (r) => { await r.text(); return r.status; });
const msg = [{ role: 'user', content: 'soak test message with a few words' }];
const kinds = [
  () => post('/v1/chat/completions', { model: 'soak', messages: msg }),
  () => post('/v1/chat/completions', { model: 'soak', stream: true, messages: msg }),
  () => post('/v1/chat/completions', { model: 'flaky', messages: msg }),
  () => post('/v1/chat/completions', { model: 'breaks', stream: true, messages: msg }),
  () => post('/v1/messages', { model: 'soak', max_tokens: 20, messages: msg }),
  () => post('/v1/embeddings', { model: 'soak', input: 'soak' }),
  () => get('/admin/breakers'),
  () => post('/v1/mcp/tools/call', { name: 'ev__echo', arguments: { message: 'soak' } }),
];
const counts = {};
let stop = false;
const t0 = Date.now();
const samples = [];
const sampler = setInterval(() => {
  samples.push({ t: Math.round((Date.now() - t0) / 1000), rss: Number(rssMiB().toFixed(1)), fds: fds(), children: children() });
  process.stderr.write(`${JSON.stringify(samples.at(-1))}\n`);
}, 5000);
let killed = 0;
const killer = setInterval(() => { // the MCP child crashes now and then
  try {
    const kids = execFileSync('pgrep', ['-P', String(pid)]).toString().trim().split('\n').filter(Boolean);
    if (kids.length) { process.kill(Number(kids[0]), 'SIGKILL'); killed++; }
  } catch { /* none running right now */ }
}, 20000);
async function worker(w) {
  let i = w;
  while (!stop) {
    const k = i++ % kinds.length;
    let status;
    try { status = await kinds[k](); } catch (e) { status = e.cause?.code || 'error'; }
    const name = `${k}:${status}`;
    counts[name] = (counts[name] || 0) + 1;
  }
}
setTimeout(() => { stop = true; }, seconds * 1000);
await Promise.all(Array.from({ length: 16 }, (_, w) => worker(w)));
clearInterval(sampler);
clearInterval(killer);
// Warm-up is the first half of the run (the SQLite page cache and the allocator fill
// up over the first minute or so); RSS must then stay flat over the second half.
const warm = samples.find((s) => s.t >= seconds / 2) ?? samples[0];
const last = samples.at(-1);
const total = Object.values(counts).reduce((a, b) => a + b, 0);
console.log(JSON.stringify({
  seconds, requests: total, req_per_s: Math.round(total / seconds), mcp_children_killed: killed,
  rss_warm_mib: warm.rss, rss_end_mib: last.rss, rss_growth_pct: Number((100 * (last.rss - warm.rss) / warm.rss).toFixed(1)),
  fds_warm: warm.fds, fds_end: last.fds, children_end: last.children, outcomes: counts,
}));
