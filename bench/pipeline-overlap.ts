// Section 5 of bench/pipeline.ts: does the pipeline hide its transfers behind compute? A model where
// compute dominates (hidden 512, 16 blocks + 4 LLaMA Pro blocks), 1F1B at P = 2, M = 8, run with the
// ONNX Runtime sessions in the session thread (the default) and on the main thread
// (PROPIPE_SESSION_THREAD=0), alternately so drifting load on the shared machine hits both alike.
// Reports the measured bubble against theory (P-1)/(M+P-1) and each rank's time blocked in sends.
//
//   node --import tsx bench/pipeline-overlap.ts [--steps 5] [--repeats 1] [--batch 1]
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createRandomModel } from '../model/hf/init.ts';
import { Rng } from '../common/rng.ts';
import { isMain } from './common.ts';
import { runJob, type JobResult } from './pipeline.ts';

export const LARGE_MODEL = { layers: 16, hidden: 512, heads: 8, kvHeads: 4, intermediate: 1376, vocab: 1024 };
const SEQ = 128;
const round = (x: number, d = 3) => Math.round(x * 10 ** d) / 10 ** d;
const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;

function summary(r: JobResult) {
  const sendBlocked = Math.max(...r.ranks.map((k) => k.sendBlocked));
  return {
    tokensPerSec: r.tokensPerSec,
    stepSeconds: r.stepSeconds,
    bubble: r.bubble,
    bubbleSchedule: r.bubbleSchedule,
    bubbleSimulated: r.bubbleSimulated,
    bubbleTheory: r.bubbleTheory,
    /** Measured (schedule window) over theory: 1.0 is the ideal 1F1B of equal stages. */
    scheduleOverTheory: round(r.bubbleSchedule / r.bubbleTheory, 2),
    /** The most any rank spent inside send calls per step, as a fraction of the step. */
    sendBlockedFrac: round(sendBlocked / r.stepSeconds, 4),
    exposedTransferFrac: Math.max(...r.ranks.map((k) => k.exposedTransferFrac)),
    frameLatencyMs: r.frameLatencyMs,
    partition: r.partition,
    ranks: r.ranks,
    perMicroBatch: r.perMicroBatch,
  };
}

export async function overlapOnLargeModel(o: { root: string; steps: number; skip: number; batch: number; repeats: number; log: (s: string) => void }) {
  const model = path.join(o.root, 'base-large');
  await createRandomModel(model, { ...LARGE_MODEL, seed: 1 });
  const rng = new Rng(11);
  const M = 8;
  const dataset = path.join(o.root, 'train-large.jsonl');
  const examples = M * o.steps * o.batch;
  fs.writeFileSync(dataset, Array.from({ length: examples }, () => JSON.stringify({ input_ids: Array.from({ length: SEQ }, () => 3 + rng.nextInt(LARGE_MODEL.vocab - 3)) })).join('\n') + '\n');
  const runs: Record<'thread' | 'mainThread', ReturnType<typeof summary>[]> = { thread: [], mainThread: [] };
  for (let i = 0; i < o.repeats; i++) {
    for (const mode of ['thread', 'mainThread'] as const) {
      const env = { PROPIPE_SESSION_THREAD: mode === 'thread' ? '1' : '0' };
      const r = await runJob({ root: o.root, model, dataset, name: `overlap-${mode}-${i}`, workers: 2, microBatches: M, steps: o.steps, skip: o.skip, batch: o.batch, threads: 1, newBlocks: 4, groups: 4, ignoreMask: false, env });
      const s = summary(r);
      runs[mode].push(s);
      o.log(`large model P=2 M=8, sessions ${mode}: ${s.tokensPerSec} tokens/s, step ${s.stepSeconds} s, bubble ${s.bubble} (schedule ${s.bubbleSchedule}, simulated ${s.bubbleSimulated}, theory ${s.bubbleTheory}), send blocked ${(100 * s.sendBlockedFrac).toFixed(2)} % of the step`);
    }
  }
  const avg = (mode: 'thread' | 'mainThread', k: 'bubbleSchedule' | 'bubble' | 'tokensPerSec' | 'sendBlockedFrac') => round(mean(runs[mode].map((r) => r[k])), 4);
  return {
    model: { ...LARGE_MODEL, newBlocks: 4, seq: SEQ, microBatchSize: o.batch, microBatches: M, workers: 2 },
    theory: round(1 / (M + 1)),
    sessionThread: { bubbleSchedule: avg('thread', 'bubbleSchedule'), bubble: avg('thread', 'bubble'), tokensPerSec: avg('thread', 'tokensPerSec'), sendBlockedFrac: avg('thread', 'sendBlockedFrac') },
    mainThread: { bubbleSchedule: avg('mainThread', 'bubbleSchedule'), bubble: avg('mainThread', 'bubble'), tokensPerSec: avg('mainThread', 'tokensPerSec'), sendBlockedFrac: avg('mainThread', 'sendBlockedFrac') },
    runs,
  };
}

if (isMain(import.meta.url)) {
  const argv = process.argv.slice(2);
  const flag = (name: string, def: string) => {
    const i = argv.indexOf(`--${name}`);
    return i >= 0 && i + 1 < argv.length ? argv[i + 1] : def;
  };
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'propipe-bench-overlap-'));
  const log = (s: string) => process.stderr.write(`${s}\n`);
  overlapOnLargeModel({ root, steps: Number(flag('steps', '5')), skip: 2, batch: Number(flag('batch', '1')), repeats: Number(flag('repeats', '1')), log })
    .then((r) => process.stdout.write(JSON.stringify({ bench: 'pipeline-overlap', host: { cpus: os.cpus().length, loadavg: os.loadavg().map((x) => round(x, 2)) }, ...r }, null, 2) + '\n'))
    .finally(() => fs.rmSync(root, { recursive: true, force: true }))
    .catch((err) => {
      process.stderr.write(`${(err as Error).stack ?? err}\n`);
      process.exit(1);
    });
}
