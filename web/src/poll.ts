// Runs a task now and then every `ms` while the component is mounted (one at a time:
// the next run is scheduled when the previous one has finished).
import { onMounted, onUnmounted } from 'vue';

export function usePoll(task: () => Promise<void>, ms: number) {
  let timer: ReturnType<typeof setTimeout> | undefined;
  let stopped = true;
  let running = false;
  let again = false;

  async function tick() {
    timer = undefined;
    if (stopped) return;
    running = true;
    try {
      await task();
    } catch {
      // the task shows its own errors
    }
    running = false;
    if (stopped) return;
    if (again) {
      again = false;
      void tick();
    } else {
      timer = setTimeout(tick, ms);
    }
  }

  onMounted(() => {
    stopped = false;
    void tick();
  });
  onUnmounted(() => {
    stopped = true;
    if (timer !== undefined) clearTimeout(timer);
    timer = undefined;
  });

  return {
    /** Runs the task again now (e.g. after a change) instead of at the next tick. */
    now() {
      if (stopped) return;
      if (running) {
        again = true;
        return;
      }
      if (timer !== undefined) clearTimeout(timer);
      void tick();
    },
  };
}
