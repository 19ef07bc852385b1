// The limit and budget fields of a key or a team form (drawn by components/LimitFields.vue):
// their blank state, and how the filled-in ones go into a create request.
import { putNums } from './format';

export const blankLimits = () => ({
  rpm: '',
  tpm: '',
  max_parallel: '',
  budget_tokens: '',
  budget_cost: '',
  budget_period: '',
});

export type LimitForm = ReturnType<typeof blankLimits>;

/** Copies the limits filled in into a request body (the empty ones are left out). */
export function putLimits(body: Record<string, unknown>, form: LimitForm) {
  putNums(body, form, ['rpm', 'tpm', 'max_parallel', 'budget_tokens', 'budget_cost']);
  if (form.budget_period) body.budget_period = form.budget_period;
}
