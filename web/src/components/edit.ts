// What the edit forms share (keys, teams, users, model deployments): a limit set as form
// state and back as only what changed, dates of expiry, and a refusal of the gateway put
// next to the field it names (its `param`), or under the form when no field shows it.
import { nextTick, reactive, ref } from 'vue';
import { ApiError, errorMessage } from '../api';
import { optNum } from '../format';
import type { LimitForm } from '../limits';
import type { Limits } from '../types';

const NUMBERS = ['rpm', 'tpm', 'max_parallel', 'budget_tokens', 'budget_cost'] as const;

const text = (v: number | null) => (v === null || v === undefined ? '' : String(v));

/** The form state of a key's or a team's limits as they are now. */
export function limitsForm(l: Limits): LimitForm {
  return {
    rpm: text(l.rpm),
    tpm: text(l.tpm),
    max_parallel: text(l.max_parallel),
    budget_tokens: text(l.budget_tokens),
    budget_cost: text(l.budget_cost),
    budget_period: l.budget_period ?? '',
  };
}

/** Puts the limits the form changed into a PATCH body: a new value, or null for one emptied. */
export function putChangedLimits(body: Record<string, unknown>, before: Limits, form: LimitForm) {
  for (const k of NUMBERS) {
    const now = optNum(form[k]);
    const was = before[k];
    if (now === undefined) {
      if (was !== null && was !== undefined) body[k] = null;
    } else if (now !== was) {
      body[k] = now;
    }
  }
  const period = form.budget_period || null;
  if (period !== (before.budget_period || null)) body.budget_period = period;
}

/** The UTC day (YYYY-MM-DD, for a date input) of a unix time; '' for none. */
export function utcDay(unix: number | null | undefined): string {
  if (!unix) return '';
  return new Date(unix * 1000).toISOString().slice(0, 10);
}

/** The end of a UTC day (23:59:59) as unix seconds, as the create form sets expiry. */
export function endOfUtcDay(day: string): number | undefined {
  const t = Date.parse(`${day}T23:59:59Z`);
  return Number.isFinite(t) ? Math.floor(t / 1000) : undefined;
}

/** The same strings, in any order. */
export function sameSet(a: string[], b: string[]): boolean {
  return a.length === b.length && a.every((x) => b.includes(x));
}

/**
 * The errors of an edit form: `errors[param]` for a field the gateway named, `error` for
 * the rest. `refused(e, shown)` sorts a failure (`shown(param)`: does the form have that
 * field?) and moves the focus to the field named.
 */
export function useEditErrors() {
  const errors = reactive<Record<string, string>>({});
  const error = ref('');
  function clear() {
    for (const k of Object.keys(errors)) delete errors[k];
    error.value = '';
  }
  async function refused(e: unknown, shown: (param: string) => boolean) {
    clear();
    if (e instanceof ApiError && e.param && shown(e.param)) {
      errors[e.param] = e.message;
      await nextTick();
      document.querySelector<HTMLElement>('[aria-invalid="true"]')?.focus();
    } else {
      error.value = errorMessage(e);
    }
  }
  return { errors, error, clear, refused };
}
