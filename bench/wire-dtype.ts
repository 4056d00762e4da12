// `wire_dtype: bf16` against float32 on the same pipeline job, run alternately (float32, bf16, ...):
// what halving the frame bytes does to transfer waits and tokens/s, and what rounding activations and
// gradients to bfloat16 does to the loss. Uses bench/pipeline.ts's job runner and model.
//   node --import tsx bench/wire-dtype.ts [--workers 2] [--micro 8] [--steps 10] [--repeats 1]
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createRandomModel } from '../model/hf/init.ts';
import { Rng } from '../common/rng.ts';
import { runJob, type JobResult } from './pipeline.ts';
import { Flags, info, printJson, round } from './common.ts';

const MODEL = { layers: 8, hidden: 256, heads: 8, kvHeads: 4, intermediate: 688, vocab: 1024 };
const SEQ = 128;

async function main(): Promise<void> {
  const f = new Flags(process.argv.slice(2));
  f.check(['workers', 'micro', 'steps', 'repeats']);
  const workers = f.int('workers', 2);
  const micro = f.int('micro', 8);
  const steps = f.int('steps', 10);
  const repeats = f.int('repeats', 1);
  const batch = 4;
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'propipe-bench-wire-'));
  const model = path.join(root, 'base');
  await createRandomModel(model, { ...MODEL, seed: 1 });
  const rng = new Rng(7);
  const dataset = path.join(root, 'train.jsonl');
  fs.writeFileSync(dataset, Array.from({ length: micro * steps * batch }, () => JSON.stringify({ input_ids: Array.from({ length: SEQ }, () => 3 + rng.nextInt(MODEL.vocab - 3)) })).join('\n') + '\n');
  const runs: Record<string, { job: JobResult; losses: number[] }[]> = { float32: [], bf16: [] };
  for (let i = 0; i < repeats; i++) {
    for (const dtype of ['float32', 'bf16'] as const) {
      const name = `wire-${dtype}-${i}`;
      const job = await runJob({ root, model, dataset, name, workers, microBatches: micro, steps, skip: 2, batch, threads: 1, newBlocks: 0, groups: 1, ignoreMask: false, run: { train_type: 'full', wire_dtype: dtype, seed: 3 } });
      const losses = fs.readFileSync(path.join(root, name, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l)).filter((r) => typeof r.loss === 'number').map((r) => r.loss as number);
      runs[dtype].push({ job, losses });
      info(`${dtype}: ${job.tokensPerSec} tokens/s, final loss ${losses[losses.length - 1]}, frame latency ${job.frameLatencyMs} ms`);
    }
  }
  const summary = (dtype: 'float32' | 'bf16') => {
    const r = runs[dtype];
    const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
    return {
      frameBytes: r[0].job.frameBytes / (dtype === 'bf16' ? 2 : 1),
      tokensPerSec: round(mean(r.map((x) => x.job.tokensPerSec)), 1),
      frameLatencyMs: r[0].job.frameLatencyMs,
      sendBlockedSeconds: r[0].job.ranks.map((k) => k.sendBlocked),
      exposedTransferSeconds: r[0].job.ranks.map((k) => k.exposedTransfer),
      stepSeconds: round(mean(r.map((x) => x.job.stepSeconds)), 3),
      losses: r[0].losses.map((l) => round(l, 6)),
    };
  };
  const a = summary('float32');
  const b = summary('bf16');
  const finalA = a.losses[a.losses.length - 1];
  const finalB = b.losses[b.losses.length - 1];
  printJson({
    bench: 'wire-dtype',
    host: { cpus: os.cpus().length, cpu: os.cpus()[0]?.model, loadavg: os.loadavg().map((x) => round(x, 2)), node: process.version },
    setup: { model: MODEL, seq: SEQ, microBatchSize: batch, workers, microBatches: micro, steps, repeats, train_type: 'full' },
    float32: a,
    bf16: b,
    finalLossRelativeDifference: round((finalB - finalA) / finalA, 6),
    maxStepLossRelativeDifference: round(Math.max(...a.losses.map((l, i) => Math.abs(b.losses[i] - l) / l)), 6),
    notes: ['figures taken while the machine was shared by other sessions (host.loadavg)', 'loopback transfers on one machine: the wire is memory bandwidth; on a real network halving the bytes matters more'],
  });
  fs.rmSync(root, { recursive: true, force: true });
}

main().catch((err) => {
  process.stderr.write(`${(err as Error).stack ?? err}\n`);
  process.exit(1);
});
