// Forward and forward+backward throughput of one middle block range (no embedding, no head) at a
// stated shape, with seeded random weights, as a pipeline rank runs it through RangeProgram:
//   forward                     the forward graph only (a frozen prefix rank: cost F)
//   forward_backward_trainable  forward, then backward for every block weight and the input (F+B+W)
//   forward_backward_frozen     forward, then backward for the input gradient only (F+B)
// For each: ms/step, tokens/s, MatMul GFLOP/s and the fraction of the measured MatMul peak, the host
// copy cost of the step's feeds and fetches, and (unless --no-diagnostics) where the kernel time goes
// and what ORT's thread-pool spinning costs when a step alternates two sessions.
//
//   npx tsx bench/block-throughput.ts [--hidden 512 --heads 8 --kv-heads 4 --intermediate 1376
//     --layers 2 --seq 256 --batch 4 --reps 10 --warmup 3 --threads N --seed 1 --peak GFLOPS --no-diagnostics]
//
// ## FLOP convention (MatMul FLOPs only; a multiply-add is 2 FLOPs)
// Per block, with T = batch·seq tokens, h hidden, q = heads·headDim, kv = kvHeads·headDim,
// m intermediate, S = seq, d = headDim:
//   P = 2·T·(h·q + 2·h·kv + q·h + 3·h·m)      q, k, v, o projections and gate, up, down
//   A = 2·(2·batch·heads·S²·d)                 scores Q·Kᵀ and context P·V, the full S×S square:
//                                              the graph computes the masked half too
//   F = P + A                                  forward
// Backward of Y = X·W costs one GEMM per operand: dX = dY·Wᵀ (input gradient, = P over the block)
// and dW = Xᵀ·dY (weight gradient, = P). Both operands of the attention GEMMs are activations, so
// the input gradient alone already needs both of their gradients (2A). Hence
//   input gradient B = P + 2A ≈ F,   weight gradient W = P ≈ F.
// The backward graph recomputes the range's forward from its input (activation checkpointing), so
//   executed per step:  forward F;  trainable F + (F + B + W) ≈ 4F;  frozen F + (F + B) ≈ 3F
//   model (no recompute, the usual MFU convention):  forward F;  trainable F + B + W ≈ 3F;  frozen F + B ≈ 2F
// `graph` FLOPs are counted instead from the MatMul nodes the built graphs actually keep (dead-code
// elimination drops e.g. the last block's forward down_proj from the backward graph); GFLOP/s and
// fraction_of_matmul_peak use those, model_* fields use the formula without recomputation.
import { type HostTensor } from '../model/graph/dtype.ts';
import { RangeProgram, type Batch } from '../model/llama/program.ts';
import { IO, type BlockRange } from '../model/llama/range-graph.ts';
import { ropeTables } from '../model/llama/rope.ts';
import { layerParamSpecs } from '../model/llama/param-specs.ts';
import { defaultThreads, Flags, hashSeed, hostInfo, info, isMain, median, printJson, Rng, round } from './common.ts';
import { DEFAULT_CASES, measureMatmulPeak, type MatmulCase } from './matmul-peak.ts';
import { type GraphCount, OUT_GRAD, buildGraphs, concretize, countGraph } from './block-graphs.ts';
import { type BlockBenchOptions, type BlockShape, RUN_FLAGS, SHAPE_FLAGS, benchConfig, benchRange, blockMatmulFlops, shapeFromFlags } from './block-shape.ts';
import { type OpProfile, type SpinCheck, type TensorSize, bytesOf, hostIoProbe, profileGraph, spinCheck } from './block-profile.ts';

// ---- the benchmark ----

export type ModeName = 'forward' | 'forward_backward_trainable' | 'forward_backward_frozen';

export interface ModeResult {
  mode: ModeName;
  description: string;
  trainable_params: number;
  session_create_ms: number;
  ms_per_step: { median: number; min: number; forward_median: number; backward_median: number | null };
  tokens_per_s: number;
  matmul_gflop_per_step: { graph: number; formula_executed: number; model: number };
  /** Graph-counted MatMul FLOPs per step over the median step time. */
  gflops: number;
  fraction_of_matmul_peak: number;
  /** The same from the fastest step (less sensitive to other load on the machine). */
  best_step_fraction_of_matmul_peak: number;
  /** Formula FLOPs without the backward's recomputed forward, over the same time (MFU-like). */
  model_gflops: number;
  model_fraction_of_matmul_peak: number;
  host_io: { bytes_fed: number; bytes_fetched: number; ms: number; min_ms: number; fraction_of_step: number };
  graphs: Record<string, { nodes: number; matmul_nodes: number; matmul_gflop: number; ops: Record<string, number>; profile?: OpProfile }>;
  spin_check?: SpinCheck & { spinning_fraction_of_matmul_peak: number; no_spinning_fraction_of_matmul_peak: number };
}

export interface BlockBenchResult {
  shape: BlockShape & { head_dim: number; tokens_per_step: number; range: BlockRange };
  flops_per_block: { projections: number; attention: number; forward: number; input_grad: number; weight_grad: number };
  timing: string;
  modes: ModeResult[];
}

export async function runBlockThroughput(o: BlockBenchOptions, peakGflops: number): Promise<BlockBenchResult> {
  const { shape: s, threads } = o;
  const config = benchConfig(s);
  const range = benchRange(s);
  const tokens = s.batch * s.seq;
  const hiddenDims = [s.batch, s.seq, s.hidden];

  const weights = new Map<string, Float32Array>();
  const specs = new Map<string, number[]>();
  for (let layer = range.start; layer < range.end; layer++) for (const p of layerParamSpecs(config, layer)) specs.set(p.name, p.shape);
  const load = (name: string): Float32Array => {
    let w = weights.get(name);
    if (!w) {
      const shape = specs.get(name);
      if (!shape) throw new Error(`bench: no weight ${name}`);
      const rng = new Rng(hashSeed(o.seed, name));
      const n = shape.reduce((a, b) => a * b, 1);
      if (shape.length === 1) {
        w = rng.uniformArray(n, 0.05);
        for (let i = 0; i < n; i++) w[i] += 1;
      } else w = rng.uniformArray(n, 1 / Math.sqrt(shape[1]));
      weights.set(name, w);
    }
    return w;
  };
  const allBlockParams = new Set(specs.keys());
  const trainParams = new Map([...allBlockParams].map((n) => [n, load(n)] as [string, Float32Array]));
  const noParams = new Map<string, Float32Array>();
  const trainableCount = [...trainParams.values()].reduce((a, w) => a + w.length, 0);

  const rng = new Rng(hashSeed(o.seed, 'activations'));
  const batch: Batch = { batch: s.batch, seq: s.seq, hidden: rng.uniformArray(tokens * s.hidden, 1) };
  const outGrad = rng.uniformArray(tokens * s.hidden, 1);

  // Counting and profiling graphs.
  const dims = { batch: s.batch, seq: s.seq };
  const frozenGraphs = buildGraphs(config, range, new Set(), load);
  const trainGraphs = buildGraphs(config, range, allBlockParams, load);
  // As RangeProgram builds them (symbolic batch and seq): what the profiler and the spin check run.
  const built = {
    forward: frozenGraphs.forward,
    frozen_backward: frozenGraphs.backward!,
    trainable_forward: trainGraphs.forward,
    trainable_backward: trainGraphs.backward!,
  };
  // With the step's numbers substituted: what the FLOP count reads.
  const counts = Object.fromEntries(Object.entries(built).map(([k, g]) => [k, countGraph(concretize(g, dims))])) as Record<keyof typeof built, GraphCount>;
  const rope = ropeTables(config, s.seq);
  const mask = new Float32Array(s.seq * s.seq);
  for (let i = 0; i < s.seq; i++) for (let j = i + 1; j < s.seq; j++) mask[i * s.seq + j] = -1e9;
  const profileFeeds: Record<string, HostTensor> = {
    [IO.hiddenIn]: { dtype: 'float32', shape: hiddenDims, data: batch.hidden! },
    [IO.cos]: { dtype: 'float32', shape: [s.seq, config.headDim], data: rope.cos },
    [IO.sin]: { dtype: 'float32', shape: [s.seq, config.headDim], data: rope.sin },
    [IO.mask]: { dtype: 'float32', shape: [s.seq, s.seq], data: mask },
    [OUT_GRAD]: { dtype: 'float32', shape: hiddenDims, data: outGrad },
  };
  for (const [n, w] of trainParams) profileFeeds[n] = { dtype: 'float32', shape: specs.get(n)!, data: w };

  const perBlock = blockMatmulFlops(config, s.batch, s.seq);
  const L = s.layers;
  const F = L * perBlock.forward;
  const B = L * perBlock.inputGrad;
  const W = L * perBlock.weightGrad;

  info(`building sessions for blocks ${range.start}..${range.end} (hidden ${s.hidden}, ${tokens} tokens/step, ${threads} threads)`);
  let t0 = performance.now();
  const frozen = await RangeProgram.create({ config, range, trainable: new Set(), load, inputGrad: true, threads });
  const frozenCreateMs = performance.now() - t0;
  t0 = performance.now();
  const train = await RangeProgram.create({ config, range, trainable: allBlockParams, load, inputGrad: true, threads });
  const trainCreateMs = performance.now() - t0;

  const smallFeeds: TensorSize[] = [
    { dims: [s.seq, config.headDim], dtype: 'float32' },
    { dims: [s.seq, config.headDim], dtype: 'float32' },
    { dims: [s.seq, s.seq], dtype: 'float32' },
  ];
  const hiddenT: TensorSize = { dims: hiddenDims, dtype: 'float32' };
  const paramT: TensorSize[] = [...trainParams.keys()].map((n) => ({ dims: specs.get(n)!, dtype: 'float32' }));

  interface Spec {
    mode: ModeName;
    description: string;
    program: RangeProgram;
    params: ReadonlyMap<string, Float32Array>;
    backward: boolean;
    createMs: number;
    graphs: Partial<Record<keyof typeof built, string>>;
    formulaExecuted: number;
    model: number;
    /** Feeds and fetches of each run of the step. */
    io: { feeds: TensorSize[]; fetches: TensorSize[] }[];
  }
  const specsList: Spec[] = [
    {
      mode: 'forward',
      description: 'forward graph only, all weights frozen initializers (a frozen-prefix rank)',
      program: frozen,
      params: noParams,
      backward: false,
      createMs: frozenCreateMs,
      graphs: { forward: 'forward' },
      formulaExecuted: F,
      model: F,
      io: [{ feeds: [...smallFeeds, hiddenT], fetches: [hiddenT] }],
    },
    {
      mode: 'forward_backward_trainable',
      description: 'forward, then backward (recomputes forward) for every block weight and the input; weights fed as inputs each run',
      program: train,
      params: trainParams,
      backward: true,
      createMs: trainCreateMs,
      graphs: { trainable_forward: 'forward', trainable_backward: 'backward' },
      formulaExecuted: F + F + B + W,
      model: F + B + W,
      io: [
        { feeds: [...smallFeeds, hiddenT, ...paramT], fetches: [hiddenT] },
        { feeds: [...smallFeeds, hiddenT, hiddenT, ...paramT], fetches: [hiddenT, ...paramT] },
      ],
    },
    {
      mode: 'forward_backward_frozen',
      description: 'forward, then backward (recomputes forward) for the input gradient only; weights frozen initializers',
      program: frozen,
      params: noParams,
      backward: true,
      createMs: frozenCreateMs,
      graphs: { forward: 'forward', frozen_backward: 'backward' },
      formulaExecuted: F + F + B,
      model: F + B,
      io: [
        { feeds: [...smallFeeds, hiddenT], fetches: [hiddenT] },
        { feeds: [...smallFeeds, hiddenT, hiddenT], fetches: [hiddenT] },
      ],
    },
  ];

  const modes: ModeResult[] = [];
  for (const m of specsList) {
    info(`${m.mode}: ${o.warmup} warm-up + ${o.reps} timed steps`);
    const steps: number[] = [];
    const fwdTimes: number[] = [];
    const bwdTimes: number[] = [];
    for (let i = 0; i < o.warmup + o.reps; i++) {
      const a = performance.now();
      await m.program.forward(batch, m.params);
      const b = performance.now();
      if (m.backward) await m.program.backward(batch, m.params, { outGrad });
      const c = performance.now();
      if (i < o.warmup) continue;
      steps.push(c - a);
      fwdTimes.push(b - a);
      bwdTimes.push(c - b);
    }
    const stepMs = median(steps);
    let ioMs = 0;
    let ioMinMs = 0;
    for (const run of m.io) {
      const t = await hostIoProbe(run.feeds, run.fetches, threads, 3, 15);
      ioMs += t.median;
      ioMinMs += t.min;
    }
    const graphFlops = Object.keys(m.graphs).reduce((acc, k) => acc + counts[k as keyof typeof built].matmulFlops, 0);
    const gflops = graphFlops / 1e9 / (stepMs / 1e3);
    const modelGflops = m.model / 1e9 / (stepMs / 1e3);

    const graphs: ModeResult['graphs'] = {};
    for (const [key, role] of Object.entries(m.graphs) as [keyof typeof built, string][]) {
      const c = counts[key];
      graphs[role] = { nodes: c.nodes, matmul_nodes: c.matmulNodes, matmul_gflop: round(c.matmulFlops / 1e9), ops: c.ops };
      if (o.diagnostics) {
        info(`${m.mode}: profiling the ${role} graph`);
        graphs[role].profile = await profileGraph(built[key], profileFeeds, threads, c.matmulFlops);
      }
    }
    let spin: ModeResult['spin_check'];
    if (o.diagnostics && Object.keys(m.graphs).length > 1) {
      info(`${m.mode}: timing alternating sessions with thread-pool spinning on and off`);
      const check = await spinCheck(Object.keys(m.graphs).map((k) => built[k as keyof typeof built]), profileFeeds, threads, o.warmup, o.reps);
      const fraction = (ms: number) => round(graphFlops / 1e9 / (ms / 1e3) / peakGflops);
      spin = {
        ...check,
        spinning_fraction_of_matmul_peak: fraction(check.spinning.step_ms),
        no_spinning_fraction_of_matmul_peak: fraction(check.no_spinning.step_ms),
      };
    }
    const result: ModeResult = {
      mode: m.mode,
      description: m.description,
      trainable_params: m.params.size > 0 ? trainableCount : 0,
      session_create_ms: round(m.createMs, 1),
      ms_per_step: {
        median: round(stepMs),
        min: round(Math.min(...steps)),
        forward_median: round(median(fwdTimes)),
        backward_median: m.backward ? round(median(bwdTimes)) : null,
      },
      tokens_per_s: round(tokens / (stepMs / 1e3), 1),
      matmul_gflop_per_step: { graph: round(graphFlops / 1e9), formula_executed: round(m.formulaExecuted / 1e9), model: round(m.model / 1e9) },
      gflops: round(gflops, 1),
      fraction_of_matmul_peak: round(gflops / peakGflops),
      best_step_fraction_of_matmul_peak: round(graphFlops / 1e9 / (Math.min(...steps) / 1e3) / peakGflops),
      model_gflops: round(modelGflops, 1),
      model_fraction_of_matmul_peak: round(modelGflops / peakGflops),
      host_io: {
        bytes_fed: m.io.reduce((a, r) => a + bytesOf(r.feeds), 0),
        bytes_fetched: m.io.reduce((a, r) => a + bytesOf(r.fetches), 0),
        ms: round(ioMs),
        min_ms: round(ioMinMs),
        fraction_of_step: round(ioMs / stepMs),
      },
      graphs,
      ...(spin ? { spin_check: spin } : {}),
    };
    info(`${m.mode}: ${result.ms_per_step.median} ms/step, ${result.tokens_per_s} tokens/s, ${result.gflops} GFLOP/s = ${result.fraction_of_matmul_peak} of peak; host io ${result.host_io.ms} ms`);
    modes.push(result);
  }
  await frozen.release();
  await train.release();

  return {
    shape: { ...s, head_dim: config.headDim, tokens_per_step: tokens, range },
    flops_per_block: {
      projections: perBlock.projections,
      attention: perBlock.attention,
      forward: perBlock.forward,
      input_grad: perBlock.inputGrad,
      weight_grad: perBlock.weightGrad,
    },
    timing: `median of ${o.reps} steps after ${o.warmup} warm-up; a step is forward (+ backward) through RangeProgram; host_io is the median (and min) of 15 runs of a probe graph with the same feeds and fetches per run, summed over the step's runs; the first two runs of every session are excluded from all timings (they page-fault fresh arena memory)`,
    modes,
  };
}

/** The MatMul of the benchmarked shape itself, added to the peak cases so the peak covers it. */
export function shapePeakCase(s: BlockShape): MatmulCase {
  return { name: `bench_shape_${s.batch * s.seq}x${s.hidden}x${s.intermediate}`, m: s.batch * s.seq, k: s.hidden, n: s.intermediate, depth: 4, weights: 'initializer' };
}

export function optionsFromFlags(f: Flags): BlockBenchOptions {
  return {
    shape: shapeFromFlags(f),
    threads: f.int('threads', defaultThreads()),
    reps: f.int('reps', 10),
    warmup: f.int('warmup', 3),
    seed: f.int('seed', 1),
    diagnostics: f.bool('diagnostics', true),
  };
}

async function main(): Promise<void> {
  const flags = new Flags(process.argv.slice(2));
  flags.check([...SHAPE_FLAGS, ...RUN_FLAGS, 'peak']);
  const o = optionsFromFlags(flags);
  let peak = flags.number('peak');
  if (peak === undefined) peak = (await measureMatmulPeak({ threads: o.threads, cases: [...DEFAULT_CASES, shapePeakCase(o.shape)] })).gflops;
  const result = await runBlockThroughput(o, peak);
  printJson({ bench: 'block-throughput', host: hostInfo(o.threads), matmul_peak_gflops: peak, ...result });
}

if (isMain(import.meta.url)) {
  main().catch((err: unknown) => {
    process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  });
}
