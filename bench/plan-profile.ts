// Where one bench:plan case's step goes, measured against what the plan prices, in CPU time as well as
// wall time (the machine is shared: CPU time of this process moves far less with other sessions' load).
// One process, the trainer's own pieces: the rank's backward run per micro-batch, the gradient sum of the
// second micro-batch, the global-norm sum of squares and AdamW (applyUpdate); then ONNX Runtime's profile
// of the same backward graph, per op class, against the plan's op counts of those classes at the
// calibrated peaks (so the measured/at-peak ratio is the efficiency each class really reaches).
//
//   node --import tsx bench/plan-profile.ts [--shape S] [--type full|llamapro|lora] [--threads 2] [--steps 6]
import os from 'node:os';
import { liveNodes } from '../model/graph/serialize.ts';
import { accumulateGrads, sumOfSquares } from '../model/train/adamw.ts';
import type { Batch } from '../model/llama/program.ts';
import { cpuProfile } from '../plan/calibration.ts';
import { stageOnSplit } from '../plan/estimate.ts';
import { ConcreteShapes, nodeCost } from '../plan/graph-cost.ts';
import { atPeakSeconds } from '../plan/stage-model.ts';
import { calibrate, cpuSeconds } from '../tasks/calibrate.ts';
import { realStep } from './real-step.ts';
import { Flags, info, median, printJson, Rng, round } from './common.ts';
import { trainConfig } from './train-step.ts';
import { backwardGraph, opClass, profileBackward } from './train-step-profile.ts';
import { SHAPES } from './plan.ts';
import { runRequest } from '../plan/request.ts';

/** Wall and CPU seconds of `fn`. */
async function clocked<T>(fn: () => Promise<T> | T): Promise<{ v: T; wall: number; cpu: number }> {
  const w = performance.now();
  const c = cpuSeconds();
  const v = await fn();
  return { v, wall: (performance.now() - w) / 1000, cpu: cpuSeconds() - c };
}

async function main(): Promise<void> {
  const f = new Flags(process.argv.slice(2));
  f.check(['shape', 'type', 'threads', 'steps', 'micro']);
  const shapeName = f.str('shape') ?? 'S';
  const type = f.str('type') ?? 'full';
  const threads = Number(f.str('threads') ?? 2);
  const steps = f.int('steps', 6);
  const M = f.int('micro', 2);
  const shape = SHAPES[shapeName];
  if (!shape) throw new Error(`--shape: '${shapeName}' is not one of ${Object.keys(SHAPES).join(', ')}`);
  if (type !== 'full' && type !== 'llamapro' && type !== 'lora') throw new Error(`--type: '${type}' is not full, llamapro or lora`);
  const load0 = os.loadavg();
  info(`calibrating with ${threads} thread(s)`);
  const calibration = await calibrate({ threads });
  const device = cpuProfile(calibration, os.totalmem());
  const base = trainConfig(shape);
  const real = await realStep({ base, seed: 1, trainType: type, newBlocks: 2, threads, split: false });
  const rank = real.ranks[0];
  const program = rank.program!;
  const rng = new Rng(3);
  const config = rank.model.config;
  const micro: (Batch & { targets: number })[] = Array.from({ length: M }, () => {
    const ids = BigInt64Array.from({ length: shape.batch * shape.seq }, () => BigInt(3 + rng.nextInt(config.vocabSize - 3)));
    return { batch: shape.batch, seq: shape.seq, inputIds: ids, labels: ids, targets: shape.batch * (shape.seq - 1) };
  });
  const parts: Record<string, { wall: number[]; cpu: number[] }> = {};
  const note = (k: string, r: { wall: number; cpu: number }) => {
    parts[k] ??= { wall: [], cpu: [] };
    parts[k].wall.push(r.wall);
    parts[k].cpu.push(r.cpu);
  };
  info(`${steps} steps of ${M} micro-batches (the first is warm-up)`);
  for (let s = 0; s <= steps; s++) {
    const grads = new Map<string, Float32Array>();
    const step = { wall: 0, cpu: 0 };
    for (const [i, b] of micro.entries()) {
      const r = await clocked(() => program.backward(b, rank.values, { lossScale: 1 / (M * b.targets) }));
      const acc = await clocked(() => accumulateGrads(grads, r.v.grads));
      if (s > 0) {
        note(`backward_run_${i}`, r);
        if (i > 0) note('gradient_sum', acc);
      }
      step.wall += r.wall + acc.wall;
      step.cpu += r.cpu + acc.cpu;
    }
    const sq = await clocked(() => sumOfSquares(grads.values()));
    const up = await clocked(() => {
      for (const [n, g] of grads) rank.optimizer.update(n, rank.values.get(n)!, g, 1e-5, 1);
    });
    note('every_step', { wall: step.wall + sq.wall + up.wall, cpu: step.cpu + sq.cpu + up.cpu });
    if (s === 0) continue;
    note('sum_of_squares', sq);
    note('adamw', up);
    note('step', { wall: step.wall + sq.wall + up.wall, cpu: step.cpu + sq.cpu + up.cpu });
  }
  // The plan of this run, priced with this run's calibration.
  const req = runRequest({ ...real.run, per_device_train_batch_size: shape.batch, max_length: shape.seq, gradient_accumulation_steps: M }, { device, workers: 1, microBatches: M, schedule: '1f1b', frozenDtype: 'fp32' });
  const plan = stageOnSplit(req, 0, [{ start: 0, end: req.config.numLayers }]).ranks[0];
  const trainable = new Set(rank.values.keys());
  const params = [...rank.values.values()].reduce((a, v) => a + v.length, 0);
  const load = (n: string) => rank.values.get(n) ?? rank.model.load(n);
  info('profiling the backward graph (ORT profiler)');
  const profile = await profileBackward(config, rank.range, trainable, load, rank.values, micro[0], threads, rank.lora);

  // The plan's op counts of the same graph, per op class, at the calibrated peaks (no efficiency).
  const g = backwardGraph(config, rank.range, trainable, load, false, rank.lora).graph;
  const shapes = new ConcreteShapes(g, { batch: shape.batch, seq: shape.seq });
  const atPeak = new Map<string, { s: number; flops: number; bytes: number; nodes: number }>();
  for (const n of liveNodes(g)) {
    const c = nodeCost(g, n, shapes);
    if (c.nodes === 0) continue;
    const k = opClass(n.op);
    const e = atPeak.get(k) ?? { s: 0, flops: 0, bytes: 0, nodes: 0 };
    e.s += atPeakSeconds(device, c);
    e.flops += c.flops;
    e.bytes += c.bytes;
    e.nodes += c.nodes;
    atPeak.set(k, e);
  }
  await real.release();
  const med = (k: string) => ({ wall_ms: round(median(parts[k].wall) * 1e3, 1), cpu_ms: round(median(parts[k].cpu) * 1e3, 1) });
  printJson({
    bench: 'plan-profile',
    case: `${shapeName}-${type}-p1`,
    threads,
    micro_batches: M,
    trainable_params: params,
    load_average: { start: load0.map((x) => round(x, 2)), end: os.loadavg().map((x) => round(x, 2)) },
    calibration: { matmul_gflops: round(device.matmulFlops / 1e9, 1), bandwidth_gbs: round(device.bandwidth / 1e9, 1), math_gbs: round(device.mathBandwidth / 1e9, 1), efficiency: device.efficiency, op_us: round(device.opSeconds * 1e6, 2), optimizer_ns: round(device.optimizerSecondsPerParam * 1e9, 2) },
    measured: Object.fromEntries(Object.keys(parts).filter((k) => k !== 'every_step').map((k) => [k, med(k)])),
    every_step_ms: { wall: parts.every_step.wall.map((x) => round(x * 1e3, 1)), cpu: parts.every_step.cpu.map((x) => round(x * 1e3, 1)) },
    predicted_ms: { backward_run: round(plan.backward_seconds * 1e3, 1), optimizer: round(plan.optimizer_seconds * 1e3, 1), step: round(plan.step_seconds * 1e3, 1) },
    profile: { wall_ms: profile.wall_ms, ort_run_ms: profile.ort_run_ms, kernel_ms: profile.kernel_ms, binding_ms: profile.binding_ms, bytes_fetched: profile.bytes_fetched },
    by_class: profile.by_class.map((c) => {
      const p = atPeak.get(c.class);
      return { class: c.class, measured_ms: c.ms, count: c.count, at_peak_ms: p ? round(p.s * 1e3, 2) : null, implied_efficiency: p ? round(p.s * 1e3 / c.ms, 3) : null, gflops: p?.flops ? round(p.flops / 1e6 / c.ms, 1) : null, gbs: p && !p.flops ? round(p.bytes / 1e6 / c.ms, 1) : null, plan_nodes: p?.nodes ?? 0 };
    }),
    matmul_by_shape: profile.matmul_by_shape,
    top_nodes: profile.top_nodes,
  });
}

main().catch((err) => {
  process.stderr.write(`${(err as Error).stack ?? err}\n`);
  process.exit(1);
});
