// A coordinator Job over a tiny random config, and registrations, for tests of the job state machine.
import { Job } from '../../coordinator/job.ts';
import { randomModelConfig } from '../../model/hf/init.ts';
import { trainedStack } from '../../recipe/layout.ts';
import { parseRunConfig } from '../../recipe/run-config.ts';
import type { FrozenDtype } from '../../plan/runtime.ts';

export function jobFor(dir: string, workers: number, frozenDtype?: FrozenDtype): Job {
  const run = parseRunConfig({ model: dir, dataset: 'x', output_dir: 'y', train_type: 'llamapro', llamapro_new_blocks: 2 });
  const stack = trainedStack(run, randomModelConfig(TINY).config, {}, null);
  const events = { stage() {}, stageEnd() {}, earlyStop() {}, step() {}, eval() {}, commit: () => '', done() {}, recover: () => null };
  return new Job({ jobId: 'j', run, stack, workers, schedule: '1f1b', microBatches: 2, natsUrl: '', hasVal: false, incarnation: 'i', frozenDtype }, events);
}
const TINY = { layers: 4, hidden: 64, heads: 4, kvHeads: 2, intermediate: 160, vocab: 512 };
export const register = (job: Job, id: string, memoryBytes: number, device = 'cpu') => job.register({ workerId: id, peerAddress: `127.0.0.1:1${id.length}`, device, memoryBytes, rankHint: -1 });
