// What a page loads (once, on a Refresh, or polled with usePoll from poll.ts): the task
// fills the page's refs; a failure is kept in `error` and shown inline, a success clears
// it. `loading` is true while the task runs (for a Refresh button to wait).
import { ref } from 'vue';
import { errorMessage } from './api';

export function useLoad(task: () => Promise<void>) {
  const error = ref('');
  const loading = ref(false);
  async function load() {
    loading.value = true;
    try {
      await task();
      error.value = '';
    } catch (e) {
      error.value = errorMessage(e);
    } finally {
      loading.value = false;
    }
  }
  return { error, loading, load };
}
