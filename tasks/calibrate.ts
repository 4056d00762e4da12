// `propipe plan --calibrate`: a short measured run on this machine with the real ONNX graphs, solved for
// the figures the cpu profile needs (plan/devices.ts):
//   matmul_flops   best of a chain of 1024³ float32 MatMuls (frozen weights, prepacked as blocks' are)
//   bandwidth      a chain of element-wise Add/Mul over tensors the size of the probe's activations
//                  (batch·seq·hidden floats): bytes in + out per second. A block's element-wise ops run on
//                  tensors of 0.5–4 MB that stay in cache; one op over 16 M floats (DRAM, and the feed
//                  and output copies) measured 4.8 GB/s here against 47–56 GB/s for the chain, so a DRAM
//                  figure over-priced bytes-heavy graphs (small hidden sizes, LoRA's adapters) by 30 %.
//   math_bandwidth the same for ops that evaluate exp/sigmoid per element: a chain of Softmax and Sigmoid
//                  over the probe's attention scores (batch·heads·seq² floats); 10× slower than Add here
//   op_seconds     the fixed cost of one op: the larger of a chain of 200 tiny Adds (dispatch) and the
//                  intercept of the element-wise chain at two sizes (the threads' hand-off of a split op)
//   run_seconds    one tiny graph run: the fixed cost of a session run (feeds, output copies)
//   efficiency     per phase, predicted-at-peak time / measured time of a few real blocks:
//                    forward    their forward graph
//                    recompute  = forward (the same kernels, inside the backward graph)
//                    inputGrad  the frozen backward (recompute + input gradient) minus the recompute
//                    weightGrad the trainable backward minus the frozen one
//   optimizer      AdamW + gradient sum of squares on the host, per parameter
//   accumulate     one micro-batch's gradients added to the step's running sum inside the backward run
//                  (an Add over the tensor and its output copied out, as the graphs do), per parameter
// Every time is this process's CPU time (user + system, all of ONNX Runtime's threads), not wall time:
// the machine may be shared, and a run that waits for a core costs wall time but no CPU time (wall
// figures of the same MatMul chain moved 68–198 GFLOP/s between calibrations at a load average of 3–5;
// its CPU rate does not). The profile's figures are then quiet-machine wall rates: CPU rates times the
// speed-up the sessions' threads give (`parallelism`: the probe's CPU time over its wall time in its
// least disturbed sample, between 1 and the thread count; exactly 1 with one thread). Per-op and
// per-run fixed costs run on one thread and stay CPU seconds.
import os from 'node:os';
import { AdamW } from '../model/train/adamw.ts';
import { Graph } from '../model/graph/graph.ts';
import type { HostTensor } from '../model/graph/dtype.ts';
import { CompiledGraph } from '../model/graph/session.ts';
import { randomModelConfig, randomWeights } from '../model/hf/init.ts';
import { RangeProgram } from '../model/llama/program.ts';
import { loraNames, type LoraSpec } from '../model/llama/params.ts';
import { loaderSource } from '../model/llama/frozen.ts';
import type { ModelConfig } from '../model/hf/config.ts';
import { LINEARS } from '../recipe/stages.ts';
import { childLog } from '../common/log.ts';
import { layerParamSpecs } from '../model/llama/param-specs.ts';
import type { Calibration } from '../plan/calibration.ts';
import { scaleCost, type OpCost } from '../plan/graph-cost.ts';
import { atPeakSeconds } from '../plan/stage-model.ts';
import { blockCosts } from '../plan/unit-costs.ts';

const log = childLog({ component: 'calibrate' });

/** CPU seconds of this process (every thread). */
export function cpuSeconds(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}

/** Wall and CPU seconds of one call. */
async function clock(fn: () => unknown): Promise<{ wall: number; cpu: number }> {
  const w = performance.now();
  const c = cpuSeconds();
  await fn();
  return { wall: (performance.now() - w) / 1000, cpu: cpuSeconds() - c };
}

/** The least CPU time of `reps` calls after one warm-up. */
async function best(fn: () => unknown, reps: number): Promise<number> {
  await fn();
  let t = Infinity;
  for (let i = 0; i < reps; i++) t = Math.min(t, (await clock(fn)).cpu);
  return t;
}

const f32 = (n: number, v = 0.01) => new Float32Array(n).fill(v);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1];

async function timeGraph(g: Graph, feeds: Record<string, HostTensor>, threads: number, reps: number): Promise<number> {
  const c = await CompiledGraph.create(g, { threads });
  try {
    return await best(() => c.run(feeds), reps);
  } finally {
    await c.release();
  }
}

async function matmulPeak(threads: number): Promise<number> {
  const n = 1024;
  const depth = 4;
  const g = new Graph('calibrate_matmul');
  let x = g.input('x', 'float32', [n, n]);
  for (let i = 0; i < depth; i++) x = g.op('MatMul', [x, g.initializer(`w${i}`, 'float32', [n, n], f32(n * n, 1 / n))]);
  g.output(g.rename(x, 'y'));
  const t = await timeGraph(g, { x: { dtype: 'float32', shape: [n, n], data: f32(n * n, 1) } }, threads, 8);
  return (depth * 2 * n ** 3) / t;
}

/**
 * The chain at n and at n/8 floats, t = ops · (perOp + 12·size/bandwidth): the slope is the bandwidth, the
 * intercept the fixed cost of an op big enough for ONNX Runtime to split over its threads (their hand-off),
 * which a chain of tiny ops does not see.
 */
async function bandwidth(threads: number, n: number): Promise<{ bandwidth: number; perOp: number }> {
  const ops = 32;
  const time = async (size: number) => {
    const g = new Graph('calibrate_elementwise');
    const a = g.input('a', 'float32', [size]);
    const b = g.input('b', 'float32', [size]);
    let x = a;
    for (let i = 0; i < ops; i++) x = g.op(i % 2 ? 'Mul' : 'Add', [x, b]);
    g.output(g.rename(x, 'y'));
    return (await timeGraph(g, { a: { dtype: 'float32', shape: [size], data: f32(size) }, b: { dtype: 'float32', shape: [size], data: f32(size, 1) } }, threads, 8)) / ops;
  };
  const small = Math.round(n / 8);
  const [tBig, tSmall] = [await time(n), await time(small)];
  const bytes = (size: number) => 3 * 4 * size;
  // Noise can make the small chain look relatively slow or fast: keep both figures physical.
  const bw = tBig > tSmall ? (bytes(n) - bytes(small)) / (tBig - tSmall) : bytes(n) / tBig;
  return { bandwidth: bw, perOp: Math.max(0, Math.min(tSmall - bytes(small) / bw, tSmall)) };
}

async function mathBandwidth(threads: number, shape: number[]): Promise<number> {
  const ops = 16;
  const n = shape.reduce((a, b) => a * b, 1);
  const g = new Graph('calibrate_transcendental');
  let x = g.input('a', 'float32', shape);
  for (let i = 0; i < ops; i++) x = g.op(i % 2 ? 'Sigmoid' : 'Softmax', [x], i % 2 ? {} : { axis: -1 });
  g.output(g.rename(x, 'y'));
  const t = await timeGraph(g, { a: { dtype: 'float32', shape, data: f32(n) } }, threads, 5);
  return (ops * 2 * 4 * n) / t;
}

async function opAndRunSeconds(threads: number): Promise<{ op: number; run: number }> {
  const build = (ops: number) => {
    const g = new Graph(`calibrate_ops_${ops}`);
    let x = g.input('x', 'float32', [8]);
    for (let i = 0; i < ops; i++) x = g.op('Add', [x, g.constant(Array.from({ length: 8 }, () => i + 1), 'float32', [8])]);
    g.output(g.rename(x, 'y'));
    return g;
  };
  const feeds = { x: { dtype: 'float32' as const, shape: [8], data: f32(8) } };
  const one = await timeGraph(build(1), feeds, threads, 50);
  const many = await timeGraph(build(200), feeds, threads, 20);
  return { op: Math.max(0, (many - one) / 199), run: one };
}

/**
 * Per parameter: AdamW + the norm's sum of squares on the host, and a micro-batch's gradient added to the
 * step's running sum as the backward graph does it (an Add over the tensor, its result copied out).
 */
async function hostSecondsPerParam(threads: number): Promise<{ optimizer: number; accumulate: number }> {
  const n = 4 * 2 ** 20;
  const p = f32(n);
  const grad = f32(n, 1e-3);
  const opt = new AdamW({ beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01 });
  const optimizer = await best(() => {
    opt.gradSumOfSquares([grad]);
    opt.update('w', p, grad, 1e-4);
  }, 3);
  const g = new Graph('calibrate_gradient_sum');
  g.output(g.rename(g.op('Add', [g.input('sum', 'float32', [n]), g.input('grad', 'float32', [n])]), 'y'));
  const accumulate = await timeGraph(g, { sum: { dtype: 'float32', shape: [n], data: f32(n) }, grad: { dtype: 'float32', shape: [n], data: grad } }, threads, 3);
  return { optimizer: optimizer / n, accumulate: accumulate / n };
}

export interface CalibrateOptions {
  threads: number;
  /** The probe's shape: a few blocks of a mid-sized Llama, or of `model`. */
  layers?: number;
  hidden?: number;
  batch?: number;
  seq?: number;
  /**
   * Probe blocks of this model's shape (hidden, intermediate, heads) instead of the mid-sized Llama: the
   * efficiencies are a ratio of measured to at-peak time, and that ratio depends on the graph's mix of
   * MatMul and element-wise work, which the block's width sets (README "Calibrating on the model's shape").
   */
  model?: ModelConfig;
  /** Probe a LoRA run: adapters of this rank on every linear of the probe's blocks, and only they train. */
  loraRank?: number;
}


/** The probe's blocks: `o.model`'s shape, or a mid-sized Llama of width `o.hidden`. */
function probeConfig(o: CalibrateOptions, layers: number): ModelConfig {
  const m = o.model;
  const hidden = m?.hiddenSize ?? o.hidden ?? 512;
  return randomModelConfig({
    layers,
    hidden,
    heads: m?.numHeads ?? hidden / 64,
    kvHeads: m?.numKvHeads ?? hidden / 128,
    intermediate: m?.intermediateSize ?? Math.round((hidden * 8) / 3 / 32) * 32,
    vocab: 512,
  }).config;
}

/** LoRA adapters on every linear of `layers` blocks, with their (random) factors. */
function probeAdapters(config: ModelConfig, layers: number, rank: number): { spec: LoraSpec; factors: Map<string, Float32Array>; shapes: Map<string, number[]> } {
  const factors = new Map<string, Float32Array>();
  const shapes = new Map<string, number[]>();
  const linears = new Set<string>();
  for (let l = 0; l < layers; l++) {
    for (const spec of layerParamSpecs(config, l)) {
      const linear = spec.name.replace(/\.weight$/, '');
      if (!LINEARS.some((m) => linear.endsWith(m))) continue;
      linears.add(linear);
      const [out, inp] = spec.shape;
      const { a, b } = loraNames(linear);
      factors.set(a, f32(rank * inp, 0.01));
      factors.set(b, f32(out * rank, 0.01));
      shapes.set(a, [rank, inp]);
      shapes.set(b, [out, rank]);
    }
  }
  return { spec: { rank, alpha: 2 * rank, linears }, factors, shapes };
}

export async function calibrate(o: CalibrateOptions): Promise<Calibration> {
  const threads = o.threads;
  log.info({ threads }, 'measuring MatMul peak, bandwidth and fixed costs');
  const matmul = await matmulPeak(threads);
  const layers = o.layers ?? 3;
  const config = probeConfig(o, layers);
  const hidden = config.hiddenSize;
  const dims = { batch: o.batch ?? 4, seq: o.seq ?? 128 };
  const elementwise = await bandwidth(threads, dims.batch * dims.seq * hidden);
  const bw = elementwise.bandwidth;
  const mathBw = await mathBandwidth(threads, [dims.batch, config.numHeads, dims.seq, dims.seq]);
  const fixed = await opAndRunSeconds(threads);
  fixed.op = Math.max(fixed.op, elementwise.perOp);
  const weights = new Map(randomWeights(config, 1, 0.02).map((t) => [t.name, t.data as Float32Array]));
  const range = { start: 0, end: layers, embed: false, head: false };
  const blocks = Array.from({ length: layers }, (_, i) => i);
  const loraRank = o.loraRank ?? 0;
  const adapters = loraRank > 0 ? probeAdapters(config, layers, loraRank) : null;
  for (const [n, v] of adapters?.factors ?? []) weights.set(n, v);
  const trainable = new Set(adapters ? adapters.factors.keys() : blocks.flatMap((l) => layerParamSpecs(config, l).map((p) => p.name)));
  const lora = adapters?.spec ?? null;
  const feed = { batch: dims.batch, seq: dims.seq, hidden: f32(dims.batch * dims.seq * hidden, 0.1) };
  const seed = { outGrad: f32(dims.batch * dims.seq * hidden, 1e-3) };
  const load = (n: string) => weights.get(n)!;
  log.info({ layers, hidden, ...dims }, 'timing real block graphs: forward, frozen backward, trainable backward');
  // Frozen weights (the adapters too, in the frozen probe) are graph inputs, as the ranks feed them.
  const shapes = new Map<string, readonly number[]>([...blocks.flatMap((l) => layerParamSpecs(config, l).map((p) => [p.name, p.shape] as const)), ...(adapters?.shapes ?? [])]);
  const source = loaderSource(load, (n) => [...shapes.get(n)!]);
  const frozen = await RangeProgram.create({ config, range, trainable: new Set(), load, frozen: source, lora, inputGrad: true, threads });
  const train = await RangeProgram.create({ config, range, trainable, load, frozen: source, lora, inputGrad: true, threads });
  const none = new Map<string, Float32Array>();
  // Interleaved and medians: on a shared machine the three see the same load, as a training step would.
  const runs = { forward: () => frozen.forward(feed, none), cross: () => frozen.backward(feed, none, seed), train: () => train.backward(feed, weights, seed) };
  const samples: Record<keyof typeof runs, number[]> = { forward: [], cross: [], train: [] };
  let parallelism = 1;
  for (let rep = 0; rep < 6; rep++) {
    for (const [k, fn] of Object.entries(runs) as [keyof typeof runs, () => Promise<unknown>][]) {
      const t = await clock(fn);
      if (rep === 0) continue;
      samples[k].push(t.cpu);
      parallelism = Math.max(parallelism, t.cpu / t.wall);
    }
  }
  parallelism = Math.min(parallelism, threads || os.availableParallelism());
  const tForward = median(samples.forward);
  const tCross = median(samples.cross);
  const tTrain = median(samples.train);
  await frozen.release();
  await train.release();

  // Efficiencies in CPU time against the CPU rates; the profile's rates are quiet wall rates (× parallelism).
  const atPeak = (c: OpCost) => atPeakSeconds({ matmulFlops: matmul, bandwidth: bw, mathBandwidth: mathBw }, c);
  const overhead = (c: OpCost) => c.nodes * fixed.op;
  const times = (state: 'forward' | 'cross' | 'train') => blockCosts(config, { state, lora: lora ? LINEARS : [], trains: lora ? 'lora' : 'block' }, loraRank, dims);
  const sumOf = (pick: (x: ReturnType<typeof times>) => OpCost, state: 'forward' | 'cross' | 'train'): OpCost => {
    const c = pick(times(state));
    return scaleCost(c, layers);
  };
  // Efficiencies are relative to the peaks measured in this same run, so a peak measured low (a busy
  // machine) is compensated: predicted time = op counts / (peak · efficiency) reproduces the probe's.
  const eff = (c: OpCost, measured: number) => Math.max(0.01, atPeak(c) / Math.max(1e-6, measured - overhead(c)));
  const fwd = sumOf((x) => x.forward, 'forward');
  const forward = eff(fwd, tForward - fixed.run);
  const recompute = sumOf((x) => x.recompute, 'cross');
  const recomputeSeconds = atPeak(recompute) / forward + overhead(recompute);
  const inputGrad = eff(sumOf((x) => x.inputGrad, 'cross'), tCross - fixed.run - recomputeSeconds);
  // The weight-gradient share is a difference of two timings: when noise swamps it, use the input-gradient figure.
  const weightGrad = tTrain - tCross > 0.1 * tTrain ? eff(sumOf((x) => x.weightGrad, 'train'), tTrain - tCross) : inputGrad;
  const host = await hostSecondsPerParam(threads);
  const cpus = os.cpus();
  return {
    version: 1,
    measured_at: new Date().toISOString(),
    cpu_model: cpus[0]?.model ?? 'unknown',
    cores: cpus.length,
    threads,
    clock: 'cpu',
    parallelism,
    matmul_flops: matmul * parallelism,
    bandwidth: bw * parallelism,
    math_bandwidth: mathBw * parallelism,
    op_seconds: fixed.op,
    run_seconds: fixed.run,
    optimizer_seconds_per_param: host.optimizer,
    accumulate_seconds_per_param: host.accumulate,
    efficiency: { forward, recompute: forward, inputGrad, weightGrad },
    probe: { layers, hidden, intermediate: config.intermediateSize, heads: config.numHeads, kv_heads: config.numKvHeads, lora_rank: loraRank, trainable_params: [...trainable].reduce((a, n) => a + weights.get(n)!.length, 0), ...dims, cpu_seconds: { forward: tForward, frozen_backward: tCross, trainable_backward: tTrain }, samples, load_average: os.loadavg() },
  };
}
