// Section 4 of bench/pipeline.ts: ZB-H1 (`--schedule zb1`) against 1F1B on the same jobs, run
// alternately (1F1B, ZB-H1, 1F1B, ...) so drifting load on the shared machine hits both alike. Two
// jobs: a full fine-tune (W is about half the backward) and LLaMA Pro + LoRA (W only on the new
// blocks and the adapters). Reports measured bubbles next to the schedule simulated with the measured
// per-micro-batch F, B and W, and the cost of the split: B + W of zb1 against the one-graph backward.
import type { JobOptions, JobResult } from './pipeline.ts';
import { runJob } from './pipeline.ts';

const mean = (xs: number[]) => (xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : 0);
const round = (x: number, d = 3) => Math.round(x * 10 ** d) / 10 ** d;

interface Context {
  root: string;
  model: string;
  dataset: string;
  skip: number;
  batch: number;
  threads: number;
  quick: boolean;
  log: (s: string) => void;
}

const JOBS: { name: string; newBlocks: number; groups: number; run: Record<string, unknown> }[] = [
  { name: 'full', newBlocks: 0, groups: 1, run: { train_type: 'full' } },
  { name: 'llamapro-lora', newBlocks: 4, groups: 4, run: { lora_rank: 8 } },
];

export async function compareZeroBubble(c: Context) {
  const workers = c.quick ? [2] : [2, 3];
  const M = 8;
  const steps = c.quick ? 5 : 6;
  const repeats = c.quick ? 1 : 2;
  const out = [];
  for (const job of JOBS) {
    for (const P of workers) {
      const runs: Record<'1f1b' | 'zb1', JobResult[]> = { '1f1b': [], zb1: [] };
      for (let i = 0; i < repeats; i++) {
        for (const kind of ['1f1b', 'zb1'] as const) {
          const o: JobOptions = { root: c.root, model: c.model, dataset: c.dataset, name: `zb-${job.name}-p${P}-${kind}-${i}`, workers: P, microBatches: M, steps, skip: c.skip, batch: c.batch, threads: c.threads, newBlocks: job.newBlocks, groups: job.groups, ignoreMask: false, schedule: kind, run: job.run };
          runs[kind].push(await runJob(o));
        }
      }
      const summary = (rs: JobResult[]) => ({
        tokensPerSec: round(mean(rs.map((r) => r.tokensPerSec)), 1),
        bubble: round(mean(rs.map((r) => r.bubble))),
        bubbleSchedule: round(mean(rs.map((r) => r.bubbleSchedule))),
        bubbleSimulated: round(mean(rs.map((r) => r.bubbleSimulated))),
        perMicroBatch: rs[0].perMicroBatch,
        partition: rs[0].partition,
      });
      const a = summary(runs['1f1b']);
      const z = summary(runs.zb1);
      // What the split costs per rank: zb1's B + W against 1F1B's one-graph backward.
      const splitCost = a.perMicroBatch.backwardInput.map((b, r) => (b > 0 ? round((z.perMicroBatch.backwardInput[r] + z.perMicroBatch.backwardWeight[r]) / b) : null));
      const wShare = z.perMicroBatch.backwardWeight.map((w, r) => { const t = w + z.perMicroBatch.backwardInput[r]; return t > 0 ? round(w / t) : null; });
      out.push({ job: job.name, workers: P, microBatches: M, oneFOneB: a, zb1: z, splitCost, wShareOfBackward: wShare, speedup: round(z.tokensPerSec / a.tokensPerSec), runs });
      c.log(`zb1 vs 1f1b, ${job.name}, P=${P} M=${M}: bubble ${z.bubble} vs ${a.bubble} (simulated ${z.bubbleSimulated} vs ${a.bubbleSimulated}), ${z.tokensPerSec} vs ${a.tokensPerSec} tokens/s, B+W / one-graph B per rank ${JSON.stringify(splitCost)}, W share ${JSON.stringify(wShare)}`);
    }
  }
  return {
    notes: [
      'W recomputes nothing: the W graph is cut from the one backward graph and starts from the values B hands it (the stash), so B + W run the same nodes as the one-graph backward; splitCost > 1 is the stash copy out of and back into ONNX Runtime plus two session runs instead of one',
      'the last rank folds its forward into B (as in 1F1B); W is deferred per ZB-H1: rank r holds at most r weight passes back, so in-flight micro-batches stay within 1F1B\'s peak',
      'figures taken while the machine was shared by other sessions (see host.loadavg): tokens/s and measured bubbles move with the load; the simulated bubbles use the measured per-micro-batch times of the same run',
    ],
    jobs: out,
  };
}
