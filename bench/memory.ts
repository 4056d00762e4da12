// Measured peak RSS (VmHWM) beside the analytic figure of plan/memory.ts, per rank, for LLaMA Pro,
// LoRA and full fine-tuning, single-process and pipelined (`propipe launch --workers 2`), on a
// mid-size Llama (16 layers, hidden 1024, 16 heads, 8 kv heads, intermediate 2816, vocab 32000).
//   npm run bench:memory -- [--only=llamapro,llamapro-bf16,llamapro-distill,llamapro-4bit,lora,full] [--no-pipeline] [--keep]
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { expandedSource } from '../model/expand/expand.ts';
import type { BlockRange } from '../model/llama/range-graph.ts';
import { openCheckpoint, writeCheckpoint } from '../model/hf/checkpoint.ts';
import { analyticRankPeakBytes, rankParamCounts } from '../plan/memory.ts';
import { parseRunConfig, type RunConfigInput } from '../recipe/run-config.ts';
import { prepareModel } from '../worker/training-model.ts';
import { Flags, hostInfo, info, round } from './common.ts';

const BIN = path.resolve(import.meta.dirname, '../bin/propipe.mjs');
const SHAPE = ['--layers', '16', '--hidden', '1024', '--heads', '16', '--kv-heads', '8', '--intermediate', '2816', '--vocab', '32000'];
const BATCH = 2;
const SEQ = 128;

interface Job {
  name: string;
  bf16?: boolean;
  run: Partial<RunConfigInput>;
}

// Two steps per stage through every stage (full fine-tuning walks 4 stages of 4 blocks by default,
// LLaMA Pro one stage per new block), so that the peak of the whole run is measured.
const JOBS: Job[] = [
  { name: 'llamapro', run: { train_type: 'llamapro', llamapro_new_blocks: 2 } },
  { name: 'llamapro-bf16', bf16: true, run: { train_type: 'llamapro', llamapro_new_blocks: 2 } },
  // The same job with distillation: each rank runs the teacher through its own original blocks.
  { name: 'llamapro-distill', run: { train_type: 'llamapro', llamapro_new_blocks: 2, distill_weight: 0.5 } },
  // The base's linears held in 4 bits, once per process (model/quant/quant4-store.ts).
  { name: 'llamapro-4bit', run: { train_type: 'llamapro', llamapro_new_blocks: 2, quantize: '4bit' } },
  { name: 'lora', run: { train_type: 'lora', lora_rank: 8 } },
  { name: 'full', run: { train_type: 'full' } },
];

function propipe(args: string[], timeoutMs = 0): { stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', maxBuffer: 1 << 28, timeout: timeoutMs, killSignal: 'SIGTERM', env: { ...process.env, PROPIPE_LOG_JSON: '1', PROPIPE_LOG_LEVEL: 'info' } });
  if (r.status !== 0) throw new Error(`propipe ${args[0]} failed (${r.status ?? r.signal}):\n${r.stderr.slice(-3000)}`);
  return r;
}

function makeInputs(root: string): { f32: string; bf16: string; data: string } {
  const f32 = path.join(root, 'model');
  info('writing the mid-size model');
  propipe(['init-model', '--out', f32, ...SHAPE]);
  // The same weights stored as BF16, as real checkpoints are.
  const bf16 = path.join(root, 'model-bf16');
  fs.mkdirSync(bf16, { recursive: true });
  for (const f of fs.readdirSync(f32)) if (!f.endsWith('.safetensors') && !f.endsWith('.index.json')) fs.copyFileSync(path.join(f32, f), path.join(bf16, f));
  const ck = openCheckpoint(f32);
  writeCheckpoint(bf16, ck.names().map((n) => ({ name: n, dtype: 'BF16' as const, shape: ck.shape(n), data: ck.readF32(n) })));
  ck.close();
  const data = path.join(root, 'train.jsonl');
  let seed = 1;
  const rows = Array.from({ length: 16 }, () => JSON.stringify({ input_ids: Array.from({ length: SEQ }, () => 1 + ((seed = (seed * 1103515245 + 12345) % 2 ** 31) % 4000)) }));
  fs.writeFileSync(data, rows.join('\n') + '\n');
  return { f32, bf16, data };
}

/**
 * Analytic peak per rank: the largest over the run's stages, each with the partition it ran on and the
 * AdamW moments of every stage so far (VmHWM is a peak over the process's life).
 */
function analytic(input: RunConfigInput, partitions: BlockRange[][], microBatches: number) {
  const run = parseRunConfig(input, 'bench');
  const model = prepareModel(run);
  const stages = model.plan.stages;
  const plan = model.onTheFly;
  const bytes = run.frozen_dtype === 'fp32' ? 4 : run.frozen_dtype === 'auto' ? (model.base.checkpoint.dtype('model.embed_tokens.weight') === 'F32' ? 4 : 2) : 2;
  const perStage = stages.map((stage, k) => {
    const partition = partitions[Math.min(k, partitions.length - 1)];
    return partition.map((range, rank) => analyticRankPeakBytes({
      config: model.config,
      range,
      frozenBytesPerParam: bytes,
      microBatch: { batch: BATCH, seq: SEQ },
      inFlight: Math.min(microBatches, partition.length - rank),
      ...rankParamCounts({
        config: model.config, range, everTrainable: new Set(model.plan.everTrainable), trainedSoFar: new Set(stages.slice(0, k + 1).flatMap((x) => x.trainable)), trainable: new Set(stage.trainable),
        loraLinears: model.plan.loraLinears, loraRank: run.lora_rank, sourceOf: plan ? (n) => expandedSource(n, plan).name : undefined,
        quantBlockSize: run.quantize === '4bit' ? run.quant_block_size : null,
      }),
    }));
  });
  model.base.checkpoint.close();
  return perStage[0].map((_, rank) => perStage.map((p) => p[rank]).reduce((a, b) => (b.totalBytes > a.totalBytes ? b : a)));
}

const gb = (b: number) => round(b / 1e9, 3);

function row(job: string, mode: string, rank: number, measured: number, a: ReturnType<typeof analyticRankPeakBytes>) {
  return {
    job, mode, rank, measured_gb: gb(measured), analytic_gb: gb(a.totalBytes), ratio: round(measured / a.totalBytes, 2),
    analytic_parts_gb: { frozen: gb(a.frozenBytes), trainable: gb(a.trainableBytes), activations: gb(a.activationBytes), runtime: gb(a.runtimeBytes) },
  };
}

function main(): void {
  // --only=a,b picks jobs; the rest are Flags.
  const argv = process.argv.slice(2);
  const only = argv.find((a) => a.startsWith('--only='));
  const f = new Flags(argv.filter((a) => a !== only));
  f.check(['pipeline', 'keep', 'launch-timeout-s']);
  const pick = new Set((only?.slice('--only='.length) ?? JOBS.map((j) => j.name).join(',')).split(','));
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'propipe-bench-memory-'));
  const results: ReturnType<typeof row>[] = [];
  const failures: { job: string; mode: string; error: string }[] = [];
  try {
    const inputs = makeInputs(root);
    for (const job of JOBS.filter((j) => pick.has(j.name))) {
      const model = job.bf16 ? inputs.bf16 : inputs.f32;
      const input: RunConfigInput = { model, dataset: inputs.data, output_dir: path.join(root, `out-${job.name}`), per_device_train_batch_size: BATCH, max_length: SEQ, steps_per_stage: 2, save_steps: 0, ...job.run } as RunConfigInput;
      const flags = Object.entries(input).flatMap(([k, v]) => [`--${k.replace(/_/g, '-')}`, String(v)]);
      info(`${job.name}: single process`);
      const single = JSON.parse(propipe(['train', ...flags, '--json']).stdout.trim().split('\n').pop()!);
      const full = analytic(input, [[wholeRange(input)]], 1);
      results.push(row(job.name, 'single', 0, single.peakRssBytes, full[0]));
      if (!f.bool('pipeline', true)) continue;
      info(`${job.name}: propipe launch --workers 2`);
      const out = path.join(root, `pipe-${job.name}`);
      try {
        const r = propipe(['launch', '--workers', '2', '--insecure', '--micro-batches', '2', ...flags.map((x) => (x === input.output_dir ? out : x))], f.int('launch-timeout-s', 900) * 1000);
        const result = JSON.parse(fs.readFileSync(path.join(out, 'result.json'), 'utf8'));
        const per = analytic({ ...input, output_dir: out }, partitionsFromLog(r.stderr), 2);
        per.forEach((a, rank) => results.push(row(job.name, 'launch --workers 2', rank, result.peakRssPerRank[rank], a)));
      } catch (err) {
        // A pipelined run that does not finish is reported, not hidden: the other rows still count.
        failures.push({ job: job.name, mode: 'launch --workers 2', error: String((err as Error).message).split('\n')[0] });
      }
    }
  } finally {
    if (!f.bool('keep', false)) fs.rmSync(root, { recursive: true, force: true });
  }
  const pick2 = (job: string) => results.find((x) => x.job === job && x.mode === 'single')?.measured_gb;
  const pro = pick2('llamapro');
  const fullFt = pick2('full');
  // What distillation adds to each rank's peak, against the same job without it.
  const distill_over_plain = results.filter((x) => x.job === 'llamapro-distill').flatMap((d) => {
    const plain = results.find((x) => x.job === 'llamapro' && x.mode === d.mode && x.rank === d.rank);
    return plain ? [{ mode: d.mode, rank: d.rank, ratio: round(d.measured_gb / plain.measured_gb, 3) }] : [];
  });
  console.log(JSON.stringify({ host: hostInfo(2), shape: SHAPE.join(' '), batch: BATCH, seq: SEQ, results, failures, llamapro_over_full: pro && fullFt ? round(pro / fullFt, 2) : null, distill_over_plain }, null, 2));
}

function wholeRange(input: RunConfigInput): BlockRange {
  const run = parseRunConfig(input, 'bench');
  const model = prepareModel(run);
  model.base.checkpoint.close();
  return { start: 0, end: model.config.numLayers, embed: true, head: true };
}

/** The partition of every stage: the coordinator's "partition planned" line, then its re-plans at stage transitions. */
function partitionsFromLog(stderr: string): BlockRange[][] {
  const perStage: string[][] = [];
  for (const line of stderr.split('\n')) {
    if (!line.includes('partition planned') && !line.includes('re-planning the partition')) continue;
    const rec = JSON.parse(line.slice(line.indexOf('{')));
    if (rec.partition) {
      if (perStage.length === 0) perStage.push((rec.partition as { blocks: string }[]).map((p) => p.blocks));
    } else {
      while (perStage.length < rec.stage) perStage.push(perStage[perStage.length - 1]);
      perStage[rec.stage] = rec.to as string[];
    }
  }
  if (perStage.length === 0) throw new Error('no "partition planned" line in the coordinator log');
  return perStage.map((blocks) => blocks.map((b, r) => {
    const [s, e] = b.split('..').map(Number);
    return { start: s, end: e + 1, embed: r === 0, head: r === blocks.length - 1 };
  }));
}

main();
