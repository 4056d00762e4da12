// A rank learns that its assignment is over from a NATS `reassign` control signal or from the
// coordinator's answer at the step barrier. The signal is lost when NATS is down or restarting as the
// coordinator publishes it, and a rank waiting on frames of a step that will never complete then waits
// forever (and the job with it: the coordinator waits for every rank to register again). This watch
// asks the coordinator over gRPC, every few seconds, whether the assignment still stands.
import type { JobStatusMsg } from '../proto/messages.ts';

/** Why the assignment `a` no longer stands, by the coordinator's status; null while it does. */
export function assignmentLost(s: JobStatusMsg, a: { epoch: number; incarnation: string }): string | null {
  if (s.incarnation !== a.incarnation) return 'the coordinator restarted';
  if (s.epoch !== a.epoch) return `the job moved on to assignment ${s.epoch}`;
  if (s.state !== 'running') return `the job is ${s.state === 'waiting' ? 're-assigning' : 'over'}`;
  return null;
}

/**
 * Polls `status` every `everyMs` (0: never) and calls `lost` once when the assignment no longer stands.
 * An unreachable coordinator is not a verdict: a restarted one answers with a new incarnation.
 * Returns the function that stops the watch.
 */
export function watchAssignment(status: () => Promise<JobStatusMsg>, a: { epoch: number; incarnation: string }, everyMs: number, lost: (why: string) => void): () => void {
  let stopped = everyMs <= 0;
  let timer: NodeJS.Timeout | undefined;
  const poll = async () => {
    const why = await status().then((s) => assignmentLost(s, a), () => null);
    if (stopped) return;
    if (why) {
      stopped = true;
      return lost(why);
    }
    timer = setTimeout(poll, everyMs);
  };
  if (!stopped) timer = setTimeout(poll, everyMs);
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}
