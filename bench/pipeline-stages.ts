// Section 6 of bench/pipeline.ts: where does the freeze-aware partition pay? The large model of
// section 5 (hidden 512, 16 blocks + 4 LLaMA Pro blocks, one per group), P = 2, M = 8, one job per
// stage of the bottom-up walk (stage k trains new block k alone), each run with the freeze-aware
// partition and with `--ignore-mask` (blocks split evenly), alternately so drifting load hits both.
//
// Why the gain depends on the stage: blocks below the lowest trainable one run forward only (F), blocks
// above it forward + recompute + backward (≈ 4F). A mask-blind even split leaves one rank with most of
// the backward work; the gain is largest when that imbalance is largest, i.e. when the frozen prefix is
// about half the stack. With the trainable block at the very top both halves are mostly forward-only
// (little to balance); with it at the bottom both halves carry backward (already balanced).
//
//   node --import tsx bench/pipeline-stages.ts [--steps 5] [--repeats 1] [--stages 0,1,2,3] [--layers 16]
// (--layers: original blocks, a multiple of 4; 28 gives 32 blocks, whose cuts balance the ranks finer;
// --gradient-checkpointing false: ranks below the head keep their activations instead of recomputing;
// --micro: micro-batches per step, 8 by default)
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Flags, isMain } from './common.ts';
import { runJob, type JobResult } from './pipeline.ts';
import { LARGE_MODEL, largeJob } from './pipeline-overlap.ts';

const SEQ = 128;
const NEW_BLOCKS = 4;
const round = (x: number, d = 3) => Math.round(x * 10 ** d) / 10 ** d;
const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;

const brief = (r: JobResult) => ({ tokensPerSec: r.tokensPerSec, stepSeconds: r.stepSeconds, partition: r.partition, bubbleSchedule: r.bubbleSchedule, computePerRank: r.ranks.map((k) => k.compute), plannedCostShare: r.ranks.map((k) => k.plannedCostShare) });

export async function freezeAwareByStage(o: { root: string; steps: number; skip: number; repeats: number; stages: number[]; log: (s: string) => void; originals?: number; run?: Record<string, unknown>; microBatches?: number }) {
  const M = o.microBatches ?? 8;
  const originals = o.originals ?? LARGE_MODEL.layers;
  const { model, dataset } = await largeJob(o.root, M, o.steps, 1, originals);
  const layers = originals + NEW_BLOCKS;
  const per = originals / NEW_BLOCKS;
  const rows = [];
  for (const stage of o.stages) {
    // The new block of group k sits after its group's originals: layer (k + 1) · (per + 1) − 1.
    const trainableLayer = (stage + 1) * (per + 1) - 1;
    const job = { root: o.root, model, dataset, workers: 2, microBatches: M, steps: o.steps, skip: o.skip, batch: 1, threads: 1, newBlocks: NEW_BLOCKS, groups: NEW_BLOCKS, run: { stage_order: String(stage), blocks_per_group: 1, ...o.run } };
    const aware: JobResult[] = [];
    const ignore: JobResult[] = [];
    for (let i = 0; i < o.repeats; i++) {
      aware.push(await runJob({ ...job, name: `stage${stage}-aware-${i}`, ignoreMask: false }));
      ignore.push(await runJob({ ...job, name: `stage${stage}-ignore-${i}`, ignoreMask: true }));
    }
    const rate = (rs: JobResult[]) => mean(rs.map((r) => r.tokensPerSec));
    const row = { stage, trainableLayer, frozenPrefix: trainableLayer, layers, freezeAware: rate(aware), ignoreMask: rate(ignore), speedup: round(rate(aware) / rate(ignore)), runs: { aware: aware.map(brief), ignore: ignore.map(brief) } };
    rows.push(row);
    o.log(`stage ${stage} (trainable layer ${trainableLayer} of ${layers}): freeze-aware ${row.freezeAware.toFixed(0)} tokens/s [${aware[0].partition.join(' | ')}] vs ignore-mask ${row.ignoreMask.toFixed(0)} [${ignore[0].partition.join(' | ')}]: ×${row.speedup}`);
  }
  return { model: { ...LARGE_MODEL, layers: originals, newBlocks: NEW_BLOCKS, seq: SEQ, microBatchSize: 1, microBatches: M, workers: 2, schedule: '1f1b' }, stages: rows };
}

if (isMain(import.meta.url)) {
  const f = new Flags(process.argv.slice(2));
  f.check(['steps', 'repeats', 'stages', 'layers', 'gradient-checkpointing', 'micro']);
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'propipe-bench-stages-'));
  const log = (s: string) => process.stderr.write(`${s}\n`);
  const stages = (f.str('stages') ?? '0,1,2,3').split(',').map(Number);
  freezeAwareByStage({ root, steps: f.int('steps', 5), skip: 2, repeats: f.int('repeats', 1), stages, log, originals: f.int('layers', LARGE_MODEL.layers), microBatches: f.int('micro', 8), run: { gradient_checkpointing: (f.str('gradient-checkpointing') ?? 'true') !== 'false' } })
    .then((r) => process.stdout.write(JSON.stringify({ bench: 'pipeline-stages', host: { cpus: os.cpus().length, loadavg: os.loadavg().map((x) => round(x, 2)) }, ...r }, null, 2) + '\n'))
    .finally(() => fs.rmSync(root, { recursive: true, force: true }))
    .catch((err) => {
      process.stderr.write(`${(err as Error).stack ?? err}\n`);
      process.exit(1);
    });
}
