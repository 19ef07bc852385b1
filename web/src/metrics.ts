// Reading lowart's /metrics (Prometheus text format) for the dashboard: a parser, the
// totals the dashboard needs from one scrape, and quantiles from histogram bucket deltas.

export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

function parseValue(s: string): number {
  if (s === '+Inf' || s === 'Inf') return Infinity;
  if (s === '-Inf') return -Infinity;
  return Number(s);
}

/** Parses the text exposition format; malformed lines are skipped. */
export function parseMetrics(text: string): Sample[] {
  const out: Sample[] = [];
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (!line || line.startsWith('#')) continue;
    let i = 0;
    while (i < line.length && line[i] !== '{' && line[i] !== ' ' && line[i] !== '\t') i++;
    const name = line.slice(0, i);
    const labels: Record<string, string> = {};
    if (line[i] === '{') {
      i++;
      let ok = false;
      while (i < line.length) {
        while (line[i] === ' ' || line[i] === ',') i++;
        if (line[i] === '}') {
          i++;
          ok = true;
          break;
        }
        const eq = line.indexOf('=', i);
        if (eq < 0 || line[eq + 1] !== '"') break;
        const label = line.slice(i, eq).trim();
        let j = eq + 2;
        let value = '';
        while (j < line.length && line[j] !== '"') {
          if (line[j] === '\\' && j + 1 < line.length) {
            const c = line[j + 1];
            value += c === 'n' ? '\n' : c;
            j += 2;
          } else {
            value += line[j++];
          }
        }
        labels[label] = value;
        i = j + 1;
      }
      if (!ok) continue;
    }
    const rest = line.slice(i).trim().split(/\s+/);
    if (!name || rest.length === 0 || rest[0] === '') continue;
    const value = parseValue(rest[0]);
    if (Number.isNaN(value)) continue;
    out.push({ name, labels, value });
  }
  return out;
}

/** What the dashboard takes from one scrape, for the routes it looks at. */
export interface Scrape {
  at: number; // ms
  requests: number;
  errors: number; // 5xx
  tokens: number; // prompt + completion
  /** Cumulative request-duration bucket counts by upper bound, summed over routes. */
  buckets: Map<number, number>;
  connections: number | null;
  routes: string[];
}

/** Sums one scrape for the routes `route` selects ('' = every route). */
export function summarize(samples: Sample[], route: string, at: number): Scrape {
  const s: Scrape = { at, requests: 0, errors: 0, tokens: 0, buckets: new Map(), connections: null, routes: [] };
  const routes = new Set<string>();
  for (const m of samples) {
    const r = m.labels.route;
    if (r !== undefined && (m.name === 'http_requests_total' || m.name === 'http_request_duration_seconds_bucket'))
      routes.add(r);
    if (m.name === 'http_requests_total') {
      if (route && r !== route) continue;
      s.requests += m.value;
      if ((m.labels.status ?? '').startsWith('5')) s.errors += m.value;
    } else if (m.name === 'http_request_duration_seconds_bucket') {
      if (route && r !== route) continue;
      const le = parseValue(m.labels.le ?? '');
      if (Number.isNaN(le)) continue;
      s.buckets.set(le, (s.buckets.get(le) ?? 0) + m.value);
    } else if (m.name === 'gateway_tokens_total') {
      // cached tokens are part of the prompt tokens: not counted twice
      if (m.labels.type === 'prompt' || m.labels.type === 'completion') s.tokens += m.value;
    } else if (m.name === 'gateway_connections_open') {
      s.connections = (s.connections ?? 0) + m.value;
    }
  }
  s.routes = [...routes].sort();
  return s;
}

/**
 * The q-quantile of the requests that finished between two scrapes, from the
 * difference of their cumulative bucket counts (linear within a bucket, as
 * Prometheus' histogram_quantile does). null when no request finished.
 */
export function quantileBetween(prev: Map<number, number>, cur: Map<number, number>, q: number): number | null {
  const bounds = [...cur.keys()].sort((a, b) => a - b);
  if (bounds.length === 0) return null;
  const delta = bounds.map((b) => Math.max(0, (cur.get(b) ?? 0) - (prev.get(b) ?? 0)));
  // cumulative counts must not decrease; a reset in between shows up as a dip
  for (let i = 1; i < delta.length; i++) if (delta[i] < delta[i - 1]) delta[i] = delta[i - 1];
  const total = delta[delta.length - 1];
  if (!(total > 0)) return null;
  const rank = q * total;
  for (let i = 0; i < bounds.length; i++) {
    if (delta[i] >= rank) {
      const upper = bounds[i];
      const lower = i === 0 ? 0 : bounds[i - 1];
      if (!Number.isFinite(upper)) return i === 0 ? null : lower; // in the +Inf bucket: the largest finite bound
      const below = i === 0 ? 0 : delta[i - 1];
      const inBucket = delta[i] - below;
      if (inBucket <= 0) return upper;
      return lower + ((upper - lower) * (rank - below)) / inBucket;
    }
  }
  return null;
}
