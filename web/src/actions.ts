// The actions a page offers on its rows (delete, cancel, revoke, unregister): each clears
// the last error, runs, says what happened, and refreshes what the page shows; a failure
// is shown inline (actionError), next to the notice of the last success.
import { ref } from 'vue';
import { errorMessage } from './api';

export function useActions() {
  const actionError = ref('');
  const notice = ref('');
  async function act(work: () => Promise<unknown>, done: string, refresh: () => unknown) {
    actionError.value = '';
    try {
      await work();
      notice.value = done;
      await refresh();
    } catch (e) {
      actionError.value = errorMessage(e);
    }
  }
  return { actionError, notice, act };
}
