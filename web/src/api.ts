// Calls to the gateway on the same origin with the session's key. Every failure becomes
// an ApiError with the gateway's own message (OpenAI's or Anthropic's error envelope).
import { logOut, session } from './auth';

export class ApiError extends Error {
  status: number;
  type: string;
  param: string;

  constructor(status: number, message: string, type = '', param = '') {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.type = type;
    this.param = param;
  }
}

/** A list answer of the admin API. */
export interface List<T> {
  object: 'list';
  data: T[];
}

/** Reads the error envelope of a failed response (never throws). */
export async function readError(res: Response): Promise<ApiError> {
  let text = '';
  try {
    text = await res.text();
  } catch {
    // body unreadable: the status alone says it
  }
  let message = '';
  let type = '';
  let param = '';
  try {
    const body = JSON.parse(text) as { error?: { message?: unknown; type?: unknown; param?: unknown } };
    const e = body && typeof body === 'object' ? body.error : undefined;
    if (e && typeof e === 'object') {
      if (typeof e.message === 'string') message = e.message;
      if (typeof e.type === 'string') type = e.type;
      if (typeof e.param === 'string') param = e.param;
    }
  } catch {
    message = text.trim().slice(0, 300);
  }
  if (!message) message = res.statusText || 'request failed';
  return new ApiError(res.status, `${message} (HTTP ${res.status})`, type, param);
}

export function errorMessage(e: unknown): string {
  if (e instanceof ApiError) return e.message;
  if (e instanceof DOMException && e.name === 'AbortError') return 'stopped';
  if (e instanceof Error) return e.message;
  return String(e);
}

export interface CallOptions {
  /** A body sent as is (e.g. a Lua script) instead of JSON. */
  raw?: string;
  signal?: AbortSignal;
  /** Use this key instead of the session's (the login check). */
  key?: string;
  /** Answer 'text' instead of parsed JSON. */
  as?: 'json' | 'text' | 'blob' | 'response';
}

/** Sends a request; resolves with the parsed answer or rejects with an ApiError. */
export async function call<T = unknown>(method: string, path: string, body?: unknown, opts: CallOptions = {}): Promise<T> {
  const key = opts.key ?? session.key;
  const headers: Record<string, string> = {};
  if (key) headers.authorization = `Bearer ${key}`;
  let payload: string | undefined;
  if (opts.raw !== undefined) {
    payload = opts.raw;
    headers['content-type'] = 'text/plain; charset=utf-8';
  } else if (body !== undefined) {
    payload = JSON.stringify(body);
    headers['content-type'] = 'application/json';
  }
  let res: Response;
  try {
    res = await fetch(path, { method, headers, body: payload, signal: opts.signal, cache: 'no-store' });
  } catch (e) {
    if (e instanceof DOMException && e.name === 'AbortError') throw e;
    throw new ApiError(0, 'the gateway did not answer (network error)');
  }
  if (!res.ok) {
    const err = await readError(res);
    // The session's key stopped working (revoked, expired): back to the login page.
    if (res.status === 401 && opts.key === undefined && session.key) logOut(`Your key was refused: ${err.message}`);
    throw err;
  }
  if (opts.as === 'response') return res as unknown as T;
  if (opts.as === 'text') return (await res.text()) as unknown as T;
  if (opts.as === 'blob') return (await res.blob()) as unknown as T;
  const text = await res.text();
  if (!text) return undefined as unknown as T;
  try {
    return JSON.parse(text) as T;
  } catch {
    throw new ApiError(res.status, 'the gateway answered something that is not JSON');
  }
}

export const get = <T>(path: string, opts?: CallOptions) => call<T>('GET', path, undefined, opts);
export const post = <T>(path: string, body?: unknown, opts?: CallOptions) => call<T>('POST', path, body ?? {}, opts);
export const put = <T>(path: string, body?: unknown, opts?: CallOptions) => call<T>('PUT', path, body, opts);
export const del = <T>(path: string, opts?: CallOptions) => call<T>('DELETE', path, undefined, opts);
export const patch = <T>(path: string, body?: unknown, opts?: CallOptions) => call<T>('PATCH', path, body ?? {}, opts);

/** Path segment encoding for ids and names. */
export const seg = (s: string) => encodeURIComponent(s);

/** A path with the query parameters that have a value (empty strings, null and undefined are left out). */
export function withQuery(path: string, params: Record<string, string | number | null | undefined>): string {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== '') q.set(k, String(v));
  const s = q.toString();
  return s ? `${path}?${s}` : path;
}
