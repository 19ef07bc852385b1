// Holds N concurrent streaming chat completions through lowart (each a slow-drip
// stream from lowart-mock) and reports how many completed, how long opening took, and
// lowart's RSS and CPU while they were all open. Used by bench/streams.sh.
//   node bench/streams_client.mjs PORT KEY N LOWART_PID
import http from 'node:http';
import fs from 'node:fs';

const [port, key, nArg, pidArg] = process.argv.slice(2);
const N = Number(nArg);
const pid = Number(pidArg);
const agent = new http.Agent({ keepAlive: false, maxSockets: Infinity });
const body = JSON.stringify({
  model: 'drip', stream: true,
  messages: [{ role: 'user', content: 'one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen' }],
});

const rssKb = () => Number(/VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))[1]);
const cpuTicks = () => {
  const f = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return Number(f[11]) + Number(f[12]); // utime + stime, in clock ticks (100/s)
};
const fds = () => fs.readdirSync(`/proc/${pid}/fd`).length;

let open = 0, done = 0, failed = 0, events = 0;
const errors = new Map();
const rssIdle = rssKb();
const t0 = Date.now();
let allOpenAt = 0, rssPeak = 0, fdPeak = 0, cpuAtAllOpen = 0;

function one() {
  return new Promise((resolve) => {
    const req = http.request({ host: '127.0.0.1', port, path: '/v1/chat/completions', method: 'POST', agent,
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } },
    (res) => {
      if (res.statusCode !== 200) { failed++; errors.set(res.statusCode, (errors.get(res.statusCode) || 0) + 1); res.resume(); resolve(); return; }
      open++;
      let sawDone = false;
      res.setEncoding('utf8');
      res.on('data', (d) => {
        for (let i = d.indexOf('data:'); i !== -1; i = d.indexOf('data:', i + 5)) events++;
        if (d.includes('[DONE]')) sawDone = true;
      });
      res.on('end', () => { open--; if (sawDone) done++; else failed++; resolve(); });
      res.on('error', () => { open--; failed++; resolve(); });
    });
    req.on('error', (e) => { failed++; errors.set(e.code, (errors.get(e.code) || 0) + 1); resolve(); });
    req.end(body);
  });
}

const all = [];
const timer = setInterval(() => {
  const rss = rssKb();
  const n = fds();
  rssPeak = Math.max(rssPeak, rss);
  fdPeak = Math.max(fdPeak, n);
  if (!allOpenAt && open >= N - failed && all.length === N) { allOpenAt = Date.now(); cpuAtAllOpen = cpuTicks(); }
  process.stderr.write(`t=${((Date.now() - t0) / 1000).toFixed(1)}s open=${open} done=${done} failed=${failed} rss=${(rss / 1024).toFixed(0)}MiB fds=${n}\n`);
}, 1000);

const cpu0 = cpuTicks();
for (let i = 0; i < N; i++) {
  all.push(one());
  if (i % 500 === 499) await new Promise((r) => setTimeout(r, 100)); // stay under the listen backlog
}
await Promise.all(all);
clearInterval(timer);
const cpu1 = cpuTicks();
const seconds = (Date.now() - t0) / 1000;
const result = {
  streams: N, completed: done, failed, errors: Object.fromEntries(errors), events,
  seconds: Number(seconds.toFixed(1)),
  all_open_after_s: allOpenAt ? Number(((allOpenAt - t0) / 1000).toFixed(1)) : null,
  rss_idle_mib: Number((rssIdle / 1024).toFixed(1)), rss_peak_mib: Number((rssPeak / 1024).toFixed(1)),
  rss_per_stream_kib: Number(((rssPeak - rssIdle) / N).toFixed(1)), rss_after_mib: Number((rssKb() / 1024).toFixed(1)),
  fds_peak: fdPeak, fds_after: fds(),
  cpu_s: (cpu1 - cpu0) / 100,
  cpu_us_per_event: Number((((cpu1 - cpu0) / 100) * 1e6 / Math.max(1, events)).toFixed(1)),
};
console.log(JSON.stringify(result));
