// Which frames a rank accepts from its neighbours: only its current or next step (a neighbour may run
// one step ahead), and micro-batches within the step's count. Anything else is a bug or an attack and
// is answered with INVALID_ARGUMENT before it reaches the mailbox.
import type { FrameExpectation } from './peer.ts';

/**
 * The rule for a rank of assignment `epoch` at `step()` running `microBatches` per step (and
 * `evalBatches()` in evaluation). Frames of another assignment are the mailbox's to drop or keep.
 */
export function expectedFrames(epoch: number, step: () => number, microBatches: number, evalBatches: () => number): FrameExpectation {
  return (kind, s, mb, e) => {
    if (e !== epoch) return null;
    const at = step();
    if (s < at || s > at + 1) return `frame for step ${s} while this rank is at step ${at}`;
    if (kind !== 'EVAL_ACTIVATION' && mb >= Math.max(microBatches, evalBatches(), 1)) return `micro-batch ${mb} out of range (${microBatches} per step)`;
    return null;
  };
}
