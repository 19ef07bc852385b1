// Formatting shared by the request log's table, its detail drawer and attempt timeline.
import type { LogAttempt } from '../types';

/** Milliseconds as a short duration: 0.32 -> "0.32 ms", 45.2 -> "45 ms", 1834 -> "1.83 s". */
export function fmtMs(ms: number | null | undefined): string {
  if (ms === null || ms === undefined || !Number.isFinite(ms)) return '—';
  if (ms < 10) return `${ms.toFixed(2)} ms`;
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(2)} s`;
  return `${(ms / 60000).toFixed(1)} min`;
}

const pad = (n: number, w = 2) => String(n).padStart(w, '0');

/** A time in the browser's zone: "14:05:32" today, "12-01 14:05:32" another day. */
export function fmtLogTime(ms: number, now = Date.now()): string {
  const d = new Date(ms);
  const t = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  const n = new Date(now);
  const sameDay = d.getFullYear() === n.getFullYear() && d.getMonth() === n.getMonth() && d.getDate() === n.getDate();
  return sameDay ? t : `${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${t}`;
}

/** A time in full, in the browser's zone with milliseconds: "2026-12-03 14:05:32.118". */
export function fmtLogTimeFull(ms: number): string {
  const d = new Date(ms);
  return (
    `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`
  );
}

/** The badge tone of an HTTP status: 2xx ok, 4xx warn, 5xx bad. */
export function statusTone(status: number | undefined): 'ok' | 'warn' | 'bad' | 'neutral' {
  if (status === undefined) return 'neutral';
  if (status >= 200 && status < 400) return 'ok';
  if (status >= 400 && status < 500) return 'warn';
  if (status >= 500) return 'bad';
  return 'neutral';
}

/** An attempt skipped without asking the deployment (its breaker was open). */
export const skipped = (a: LogAttempt) => a.outcome === 'breaker_open';

/** The badge tone of an attempt's outcome: an answer by its status, a skip neutral, the rest (timeout, reset, ...) bad. */
export function outcomeTone(a: LogAttempt): 'ok' | 'warn' | 'bad' | 'neutral' {
  if (skipped(a)) return 'neutral';
  const code = /^\d{3}$/.test(a.outcome) ? Number(a.outcome) : a.status;
  return code === undefined ? 'bad' : statusTone(code);
}

/** What an outcome means, in words. */
export function outcomeText(a: LogAttempt): string {
  if (skipped(a)) return 'skipped (breaker open)';
  if (/^\d{3}$/.test(a.outcome)) return `HTTP ${a.outcome}`;
  return a.outcome.replace(/_/g, ' ');
}
