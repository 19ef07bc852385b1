// The load spikes of bench/spike.sh. Each mode prints one line of key=value pairs on stdout;
// RSS figures are lowart's VmRSS (KiB) read from /proc while the mode runs.
//   node bench/spike_client.mjs warm PORT KEY N
//       N chat completions over 8 keep-alive connections (brings pools and caches to size).
//   node bench/spike_client.mjs idle PORT PID CONNS TIMEOUT_MS
//       CONNS TCP connections that send nothing, held until lowart closes them (its
//       [server] idle_timeout_ms is TIMEOUT_MS) or 2 x TIMEOUT_MS after the last one opened.
//   node bench/spike_client.mjs slow PORT PID N HOLD_S READY_FILE
//       N clients GET the largest file of the web console and stop reading after the first
//       chunk; READY_FILE is created once all of them are stalled (the caller runs its load
//       then), and after HOLD_S they read what is left for a moment, then hang up.
import http from 'node:http';
import net from 'node:net';
import fs from 'node:fs';

const [mode, port, ...rest] = process.argv.slice(2);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const count = (map, k) => map.set(k, (map.get(k) || 0) + 1);
const fmtMap = (map) => [...map].map(([k, v]) => `${k}:${v}`).join(',') || 'none';

const rssKb = (pid) => Number(/VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))[1]);
const fds = (pid) => fs.readdirSync(`/proc/${pid}/fd`).length;

/// Samples lowart's RSS and descriptor count every 50 ms until stop(); keeps the peaks.
function sampler(pid) {
  const s = { rssPeak: rssKb(pid), fdPeak: fds(pid) };
  const timer = setInterval(() => {
    s.rssPeak = Math.max(s.rssPeak, rssKb(pid));
    s.fdPeak = Math.max(s.fdPeak, fds(pid));
  }, 50);
  s.stop = () => clearInterval(timer);
  return s;
}

/// One request on a fresh connection: { status, headers, body }.
function get(path, method = 'GET') {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path, method, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

/// lowart's gateway_connections_open gauge (this request's own connection included).
async function connectionsOpen() {
  const { body } = await get('/metrics');
  const m = /^gateway_connections_open(?:\{[^}]*\})?\s+([0-9.e+]+)/m.exec(body);
  return m ? Number(m[1]) : NaN;
}

async function warm(key, n) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 8 });
  const body = JSON.stringify({
    model: 'gpt-4o-mini', max_tokens: 32,
    messages: [{ role: 'user', content: 'Hello there, how are you today?' }],
  });
  const statuses = new Map();
  const one = () => new Promise((resolve) => {
    const req = http.request({ host: '127.0.0.1', port, path: '/v1/chat/completions', method: 'POST', agent,
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } },
    (res) => { count(statuses, res.statusCode); res.resume(); res.on('end', resolve); });
    req.on('error', (e) => { count(statuses, e.code); resolve(); });
    req.end(body);
  });
  let next = 0;
  const lane = async () => { while (next++ < n) await one(); };
  await Promise.all(Array.from({ length: 8 }, lane));
  agent.destroy();
  console.log(`requests=${n} statuses=${fmtMap(statuses)}`);
}

async function idle(pid, conns, timeoutMs) {
  const base = await connectionsOpen();
  const rssStart = rssKb(pid);
  const s = sampler(pid);
  const t0 = Date.now();
  const errors = new Map();
  let connected = 0, failed = 0, closedByGateway = 0, early = 0;
  const sockets = [];
  for (let i = 0; i < conns; i++) {
    const sock = net.connect({ host: '127.0.0.1', port });
    let at = 0;
    sock.on('connect', () => { connected++; at = Date.now(); });
    // lowart hanging up (FIN) ends the socket; well before the idle timeout it is a refusal.
    sock.on('end', () => { closedByGateway++; if (Date.now() - at < timeoutMs / 2) early++; });
    sock.on('error', (e) => { if (!at) failed++; count(errors, e.code); });
    sockets.push(sock);
    if (i % 500 === 499) await sleep(100); // stay under the listen backlog
  }
  while (connected + failed < conns && Date.now() - t0 < 30_000) await sleep(50);
  const openedAt = Date.now();
  const openS = (openedAt - t0) / 1000;
  const openPeak = await connectionsOpen();
  // Until lowart's open connections are back where they were, at most 2 x the timeout.
  let dropped = false;
  while (Date.now() - openedAt < 2 * timeoutMs) {
    await sleep(100);
    if ((await connectionsOpen()) <= base) { dropped = true; break; }
  }
  const dropS = (Date.now() - openedAt) / 1000;
  const stillOpen = sockets.filter((x) => !x.destroyed && !x.readableEnded).length;
  for (const x of sockets) x.destroy();
  const rssAfter = rssKb(pid);
  await sleep(5000);
  const rssAfter5 = rssKb(pid);
  s.stop();
  console.log([
    `conns=${conns} connected=${connected} open_s=${openS.toFixed(1)} gw_open=${openPeak - base}`,
    `closed_by_gw=${closedByGateway} closed_early=${early} still_open=${stillOpen} errors=${fmtMap(errors)}`,
    `drained=${dropped ? 'yes' : 'no'} drain_s=${dropS.toFixed(1)} fds_peak=${s.fdPeak}`,
    `rss_start_kb=${rssStart} rss_peak_kb=${s.rssPeak} rss_after_kb=${rssAfter} rss_after5s_kb=${rssAfter5}`,
  ].join(' '));
}

/// The largest file the console's index.html links under /ui/assets/.
async function largestAsset() {
  const index = await get('/ui/');
  if (index.status !== 200) throw new Error(`GET /ui/ answered ${index.status}: is the web console built?`);
  const paths = [...new Set([...index.body.matchAll(/(?:src|href)="(\/ui\/assets\/[^"]+)"/g)].map((m) => m[1]))];
  let best = null;
  for (const p of paths) {
    const size = Number((await get(p, 'HEAD')).headers['content-length']);
    if (!best || size > best.size) best = { path: p, size };
  }
  if (!best) throw new Error('no /ui/assets/ file in the console index');
  return best;
}

async function slow(pid, n, holdS, readyFile) {
  const asset = await largestAsset();
  const rssStart = rssKb(pid);
  const s = sampler(pid);
  const errors = new Map();
  const clients = [];
  for (let i = 0; i < n; i++) {
    const c = { got: 0, head: 0, ended: false, sock: net.connect({ host: '127.0.0.1', port }) };
    let resolveFirst;
    c.first = new Promise((r) => (resolveFirst = r));
    c.sock.on('connect', () => c.sock.write(`GET ${asset.path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`));
    c.sock.on('data', (d) => {
      if (c.got === 0) { // stall: the kernel buffers fill up, then lowart's write waits
        c.head = d.indexOf('\r\n\r\n') + 4;
        c.sock.pause();
        resolveFirst();
      }
      c.got += d.length;
    });
    c.sock.on('end', () => { c.ended = true; resolveFirst(); });
    c.sock.on('error', (e) => { count(errors, e.code); resolveFirst(); });
    clients.push(c);
  }
  await Promise.race([Promise.all(clients.map((c) => c.first)), sleep(10_000)]);
  const stalledBytes = clients.reduce((a, c) => a + c.got, 0);
  const gwOpen = await connectionsOpen();
  fs.writeFileSync(readyFile, '');
  await sleep(holdS * 1000);
  // Read on for a moment: a client that gets less than the whole answer was cut off by lowart.
  for (const c of clients) c.sock.resume();
  await sleep(1000);
  const complete = clients.filter((c) => c.head > 3 && c.got >= c.head + asset.size).length;
  const cut = clients.filter((c) => c.ended && !(c.head > 3 && c.got >= c.head + asset.size)).length;
  for (const c of clients) c.sock.destroy();
  for (let t = Date.now(); Date.now() - t < 5000 && (await connectionsOpen()) > 1;) await sleep(100);
  const rssAfter = rssKb(pid);
  await sleep(5000);
  const rssAfter5 = rssKb(pid);
  s.stop();
  console.log([
    `clients=${n} asset=${asset.path} asset_bytes=${asset.size} first_chunk_avg_b=${Math.round(stalledBytes / n)}`,
    `gw_open_stalled=${gwOpen - 1} complete=${complete} cut_by_gw=${cut} errors=${fmtMap(errors)} fds_peak=${s.fdPeak}`,
    `rss_start_kb=${rssStart} rss_peak_kb=${s.rssPeak} rss_after_kb=${rssAfter} rss_after5s_kb=${rssAfter5}`,
  ].join(' '));
}

if (mode === 'warm') await warm(rest[0], Number(rest[1]));
else if (mode === 'idle') await idle(Number(rest[0]), Number(rest[1]), Number(rest[2]));
else if (mode === 'slow') await slow(Number(rest[0]), Number(rest[1]), Number(rest[2]), rest[3]);
else { console.error(`unknown mode ${mode}`); process.exit(2); }
