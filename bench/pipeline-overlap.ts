// Section 5 of bench/pipeline.ts: does the pipeline hide its transfers behind compute? A model where
// compute dominates (hidden 512, 16 blocks + 4 LLaMA Pro blocks), 1F1B at P = 2, M = 8, run with the
// ONNX Runtime sessions in the session thread (the default) and on the main thread
// (PROPIPE_SESSION_THREAD=0), alternately so drifting load on the shared machine hits both alike.
// Reports the measured bubble against theory (P-1)/(M+P-1) and each rank's time blocked in sends.
//
//   node --import tsx bench/pipeline-overlap.ts [--steps 5] [--repeats 1] [--batch 1] [--layers 16] [--modes thread,mainThread] [--slacks 0,1]
// (--modes mainThread alone is the short variant; --layers 28 gives 32 blocks, whose cut can balance the
// ranks within a few per cent: at 20 blocks one block is ~5 % of a rank.)
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

export function summary(r: JobResult) {
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

type Mode = 'thread' | 'mainThread';

/** The large model (`layers` original blocks) and a dataset of `steps` steps of M micro-batches of `batch` rows, under `root`. */
export async function largeJob(root: string, M: number, steps: number, batch: number, layers = LARGE_MODEL.layers): Promise<{ model: string; dataset: string; shape: typeof LARGE_MODEL }> {
  const model = path.join(root, 'base-large');
  const shape = { ...LARGE_MODEL, layers };
  await createRandomModel(model, { ...shape, seed: 1 });
  const rng = new Rng(11);
  const dataset = path.join(root, 'train-large.jsonl');
  const examples = M * steps * batch;
  fs.writeFileSync(dataset, Array.from({ length: examples }, () => JSON.stringify({ input_ids: Array.from({ length: SEQ }, () => 3 + rng.nextInt(LARGE_MODEL.vocab - 3)) })).join('\n') + '\n');
  return { model, dataset, shape };
}

/**
 * Every arm (session mode × 1F1B slack, `pipeline_slack`) runs `repeats` jobs, the arms alternating so
 * that drifting load hits them alike; `arms` has the mean of each.
 */
export async function overlapOnLargeModel(o: { root: string; steps: number; skip: number; batch: number; repeats: number; log: (s: string) => void; layers?: number; modes?: readonly Mode[]; slacks?: readonly number[] }) {
  const M = 8;
  const { model, dataset, shape } = await largeJob(o.root, M, o.steps, o.batch, o.layers);
  const modes = o.modes ?? (['thread', 'mainThread'] as const);
  const slacks = o.slacks ?? [0, 1];
  const runs: Record<string, ReturnType<typeof summary>[]> = {};
  for (let i = 0; i < o.repeats; i++) {
    for (const mode of modes) {
      for (const slack of slacks) {
        const arm = `${mode} slack ${slack}`;
        const env = { PROPIPE_SESSION_THREAD: mode === 'thread' ? '1' : '0' };
        const r = await runJob({ root: o.root, model, dataset, name: `overlap-${mode}-slack${slack}-${i}`, workers: 2, microBatches: M, steps: o.steps, skip: o.skip, batch: o.batch, threads: 1, newBlocks: 4, groups: 4, ignoreMask: false, env, run: { pipeline_slack: slack } });
        const s = summary(r);
        (runs[arm] ??= []).push(s);
        o.log(`large model P=2 M=8, sessions ${arm}: ${s.tokensPerSec} tokens/s, step ${s.stepSeconds} s, bubble ${s.bubble} (schedule ${s.bubbleSchedule}, simulated ${s.bubbleSimulated}, theory ${s.bubbleTheory}), send blocked ${(100 * s.sendBlockedFrac).toFixed(2)} % of the step`);
      }
    }
  }
  const avg = (arm: string, k: 'bubbleSchedule' | 'bubble' | 'bubbleSimulated' | 'tokensPerSec' | 'sendBlockedFrac' | 'stepSeconds') => round(mean(runs[arm].map((r) => r[k])), 4);
  const arms = Object.fromEntries(Object.keys(runs).map((arm) => [arm, { bubbleSchedule: avg(arm, 'bubbleSchedule'), bubble: avg(arm, 'bubble'), bubbleSimulated: avg(arm, 'bubbleSimulated'), tokensPerSec: avg(arm, 'tokensPerSec'), stepSeconds: avg(arm, 'stepSeconds'), sendBlockedFrac: avg(arm, 'sendBlockedFrac'), busySeconds: runs[arm].map((r) => r.ranks.map((k) => k.compute)) }]));
  return {
    model: { ...shape, newBlocks: 4, seq: SEQ, microBatchSize: o.batch, microBatches: M, workers: 2 },
    theory: round(1 / (M + 1)),
    arms,
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
  const modes = flag('modes', 'thread,mainThread').split(',') as Mode[];
  for (const m of modes) if (m !== 'thread' && m !== 'mainThread') throw new Error(`--modes: '${m}' is not thread or mainThread`);
  const slacks = flag('slacks', '0,1').split(',').map(Number);
  overlapOnLargeModel({ root, steps: Number(flag('steps', '5')), skip: 2, batch: Number(flag('batch', '1')), repeats: Number(flag('repeats', '1')), layers: Number(flag('layers', String(LARGE_MODEL.layers))), modes, slacks, log })
    .then((r) => process.stdout.write(JSON.stringify({ bench: 'pipeline-overlap', host: { cpus: os.cpus().length, loadavg: os.loadavg().map((x) => round(x, 2)) }, ...r }, null, 2) + '\n'))
    .finally(() => fs.rmSync(root, { recursive: true, force: true }))
    .catch((err) => {
      process.stderr.write(`${(err as Error).stack ?? err}\n`);
      process.exit(1);
    });
}
