// The console's session: the key the operator pasted and the role it acts as. Kept in
// sessionStorage only (gone when the tab closes), never in a URL or localStorage.
import { reactive } from 'vue';

export type Role = 'admin' | 'operator' | 'viewer';

const KEY = 'lowart.console.key';
const ROLE = 'lowart.console.role';
const NAME = 'lowart.console.name';

function read(name: string): string {
  try {
    return sessionStorage.getItem(name) ?? '';
  } catch {
    return '';
  }
}

function write(name: string, value: string | null) {
  try {
    if (value === null) sessionStorage.removeItem(name);
    else sessionStorage.setItem(name, value);
  } catch {
    // storage refused (private mode): the session then lasts as long as the page
  }
}

function asRole(v: string): Role | '' {
  return v === 'admin' || v === 'operator' || v === 'viewer' ? v : '';
}

export const session = reactive({
  key: read(KEY),
  role: asRole(read(ROLE)),
  name: read(NAME),
  /** Why the last session ended (shown on the login page). */
  ended: '',
});

export function loggedIn(): boolean {
  return session.key !== '' && session.role !== '';
}

export function logIn(key: string, role: Role, name: string) {
  session.key = key;
  session.role = role;
  session.name = name;
  session.ended = '';
  write(KEY, key);
  write(ROLE, role);
  write(NAME, name);
}

export function logOut(reason = '') {
  session.key = '';
  session.role = '';
  session.name = '';
  session.ended = reason;
  write(KEY, null);
  write(ROLE, null);
  write(NAME, null);
}

/** The resources an operator may change (mirrors lowart's role table, actors/rbac.cpp). */
const OPERATOR_WRITES = new Set([
  'keys',
  'providers',
  'models',
  'prices',
  'mcp',
  'approvals',
  'scripts',
  'jobs',
  'agents',
]);

/** May the current role change (POST/PUT/PATCH/DELETE) this admin resource? */
export function canWrite(resource: string): boolean {
  if (session.role === 'admin') return true;
  if (session.role === 'operator') return OPERATOR_WRITES.has(resource);
  return false;
}
