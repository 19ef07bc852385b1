// The banner for failures no page handled itself.
import { ref } from 'vue';

export const problem = ref('');

export function reportProblem(message: string) {
  problem.value = message;
}
