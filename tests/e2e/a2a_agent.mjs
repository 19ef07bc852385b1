// A worker agent for the agent-bus tests: long-polls lowart for its tasks, acknowledges
// them, reports progress and a result. Run as its own process:
//   GW=http://127.0.0.1:3000 KEY=sk-... AGENT=alpha MODE=echo node a2a_agent.mjs
// MODE: echo (default) | ack-then-die (acknowledges one task, then exits mid-task) |
//       ack-only (acknowledges, never reports) | ask (asks for input once, then answers)
// A task whose acknowledgement is not answered 200 is not this agent's: it is dropped. A
// task text with "work=<ms>" takes that long between "working" and the result.
// LOG_EVENTS=1 prints one JSON line per task received and per ack/report (with send and
// answer times), for tests that count executions (chaos.test.mjs).
const { GW, KEY, AGENT } = process.env;
const MODE = process.env.MODE || 'echo';
const LOG_EVENTS = process.env.LOG_EVENTS === '1';
const auth = { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' };
const event = (e) => { if (LOG_EVENTS) process.stdout.write(`${JSON.stringify({ ...e, agent: AGENT, pid: process.pid })}\n`); };

/** POST to the agent API; the HTTP status, or 0 when lowart could not be reached. */
async function post(path, body) {
  const sent = Date.now();
  let status = 0;
  try {
    const r = await fetch(`${GW}/v1/agents/${AGENT}/${path}`, {
      method: 'POST', headers: auth, body: JSON.stringify(body ?? {}), signal: AbortSignal.timeout(5000),
    });
    status = r.status;
    await r.arrayBuffer();
  } catch { /* the gateway is down or restarting */ }
  event({ ev: 'post', path, state: body?.state ?? 'ack', sent, at: Date.now(), status });
  return status;
}

const textOf = (message) => (message?.parts ?? []).filter((p) => p.kind === 'text').map((p) => p.text).join(' ');

async function handle(task) {
  event({ ev: 'got', task: task.id, at: Date.now(), text: textOf(task.history.filter((m) => m.role === 'user').at(-1)) });
  if (await post(`tasks/${task.id}/ack`) !== 200) return;
  if (MODE === 'ack-then-die') {
    console.log(`died holding ${task.id}`);
    process.exit(0);
  }
  if (MODE === 'ack-only') return;
  await post(`tasks/${task.id}/status`, { state: 'working', message: `${AGENT} is on it` });
  const userTurns = task.history.filter((m) => m.role === 'user');
  const text = textOf(userTurns[userTurns.length - 1]);
  if (MODE === 'ask' && userTurns.length === 1) {
    await post(`tasks/${task.id}/status`, { state: 'input-required', message: 'which language?' });
    return;
  }
  // "ask <agent>: ..." / "ask skill <skill>: ...": this agent hands part of its work to
  // another agent through the bus, as a sender, and answers with what it got back.
  const delegate = text.match(/^ask (skill )?([\w-]+): (.*)$/);
  if (delegate) {
    const [, bySkill, to, rest] = delegate;
    const message = {
      role: 'user', kind: 'message', messageId: `${task.id}-sub`, parts: [{ kind: 'text', text: rest }],
      ...(bySkill ? { metadata: { skill: to } } : {}),
    };
    const r = await fetch(`${GW}/a2a${bySkill ? '' : `/${to}`}`, {
      method: 'POST', headers: auth, signal: AbortSignal.timeout(10000),
      body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'message/send', params: { message } }),
    });
    const sub = (await r.json()).result;
    await post(`tasks/${task.id}/status`, {
      state: 'completed',
      message: `${AGENT} asked ${sub.metadata.agent}: ${textOf(sub.status.message)}`,
    });
    return;
  }
  const work = Number(text.match(/\bwork=(\d+)\b/)?.[1] ?? 0);
  if (work) await new Promise((res) => setTimeout(res, work));
  await post(`tasks/${task.id}/status`, {
    state: 'completed',
    message: `${AGENT}: ${text.toUpperCase()}`,
    artifacts: [{ name: 'result', parts: [{ kind: 'text', text: `${AGENT} handled ${text}` }] }],
  });
}

console.log(`agent ${AGENT} polling`);
for (;;) {
  let r;
  try {
    r = await fetch(`${GW}/v1/agents/${AGENT}/tasks?wait_ms=500`, { headers: auth, signal: AbortSignal.timeout(5000) });
  } catch {
    await new Promise((res) => setTimeout(res, 100)); // the gateway restarts: try again
    continue;
  }
  if (r.status === 200) {
    try {
      await handle((await r.json()).task);
    } catch (e) {
      console.error(`agent ${AGENT}: ${e.message}`); // e.g. the answer was cut off: poll on
    }
  } else if (r.status !== 204) await new Promise((res) => setTimeout(res, 100));
}
