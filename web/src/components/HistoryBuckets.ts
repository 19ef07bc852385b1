// The time buckets of the dashboard's history (GET /admin/usage grouped by minute, hour
// or day, UTC): which buckets a span has, how the usage API names each, and how a
// bucket is labelled in the browser's time zone.
import type { UsageRow } from '../types';

export type HistorySpan = 'hour' | 'day' | 'week';
export type Bucket = 'minute' | 'hour' | 'day';

export const SPANS: Record<HistorySpan, { label: string; bucket: Bucket; count: number; stepMs: number }> = {
  hour: { label: 'last hour', bucket: 'minute', count: 60, stepMs: 60_000 },
  day: { label: 'last day', bucket: 'hour', count: 24, stepMs: 3_600_000 },
  week: { label: 'last week', bucket: 'day', count: 7, stepMs: 86_400_000 },
};

/** The usage API's name of the bucket starting at `ms`: "2026-12-03T14:05Z", "2026-12-03T14:00Z", "2026-12-03". */
export function bucketName(bucket: Bucket, ms: number): string {
  const iso = new Date(ms).toISOString();
  if (bucket === 'minute') return `${iso.slice(0, 16)}Z`;
  if (bucket === 'hour') return `${iso.slice(0, 13)}:00Z`;
  return iso.slice(0, 10);
}

const pad = (n: number) => String(n).padStart(2, '0');

/** A bucket's start for people: the local time of a minute or hour, the (UTC) date of a day. */
export function bucketLabel(bucket: Bucket, ms: number): string {
  const d = new Date(ms);
  if (bucket === 'day') return new Date(ms).toISOString().slice(0, 10);
  const time = `${pad(d.getHours())}:${pad(d.getMinutes())}`;
  return bucket === 'hour' ? `${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${time}` : time;
}

/** The buckets of a span ending with the current one (oldest first), and the `from` (unix s) to ask with. */
export function spanBuckets(span: HistorySpan, now = Date.now()): { starts: number[]; from: number } {
  const s = SPANS[span];
  const last = Math.floor(now / s.stepMs) * s.stepMs;
  const starts = Array.from({ length: s.count }, (_, i) => last - (s.count - 1 - i) * s.stepMs);
  return { starts, from: Math.floor(starts[0] / 1000) };
}

export interface HistorySeries {
  starts: number[];
  labels: string[];
  requests: number[];
  tokens: number[];
  errors: number[];
  cost: number[];
}

/** Usage rows grouped by `bucket` laid on every bucket of the span, those without usage as 0. */
export function fillBuckets(span: HistorySpan, rows: UsageRow[], starts: number[]): HistorySeries {
  const bucket = SPANS[span].bucket;
  const by = new Map(rows.map((r) => [String(r[bucket]), r]));
  const out: HistorySeries = { starts, labels: [], requests: [], tokens: [], errors: [], cost: [] };
  for (const t of starts) {
    const r = by.get(bucketName(bucket, t));
    out.labels.push(bucketLabel(bucket, t));
    out.requests.push(r ? r.requests : 0);
    out.tokens.push(r ? r.prompt_tokens + r.completion_tokens : 0);
    out.errors.push(r ? r.errors : 0);
    out.cost.push(r ? r.cost : 0);
  }
  return out;
}
