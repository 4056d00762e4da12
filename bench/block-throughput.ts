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
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import ort from 'onnxruntime-node';
import { backward } from '../model/autodiff/backward.ts';
import { parseConfig, type ModelConfig } from '../model/hf/config.ts';
import { BYTES_PER_ELEMENT, type DType } from '../model/graph/dtype.ts';
import { Graph, type Shape } from '../model/graph/graph.ts';
import { serialize, liveNodes } from '../model/graph/serialize.ts';
import { CompiledGraph, ortSessionOptions } from '../model/graph/session.ts';
import { type HostTensor } from '../model/graph/dtype.ts';
import { ParamBinder } from '../model/llama/params.ts';
import { RangeProgram, type Batch } from '../model/llama/program.ts';
import { buildRangeGraph, IO, type BlockRange } from '../model/llama/range-graph.ts';
import { ropeTables } from '../model/llama/rope.ts';
import { layerParamSpecs } from '../model/llama/param-specs.ts';
import { defaultThreads, Flags, hashSeed, hostInfo, info, isMain, median, printJson, Rng, round } from './common.ts';
import { DEFAULT_CASES, measureMatmulPeak, type MatmulCase } from './matmul-peak.ts';

export interface BlockShape {
  hidden: number;
  heads: number;
  kvHeads: number;
  intermediate: number;
  /** Blocks in the range. */
  layers: number;
  seq: number;
  batch: number;
}

export const DEFAULT_SHAPE: BlockShape = { hidden: 512, heads: 8, kvHeads: 4, intermediate: 1376, layers: 2, seq: 256, batch: 4 };

export const SHAPE_FLAGS = ['hidden', 'heads', 'kv-heads', 'intermediate', 'layers', 'seq', 'batch'] as const;
export const RUN_FLAGS = ['reps', 'warmup', 'threads', 'seed', 'diagnostics'] as const;

export function shapeFromFlags(f: Flags): BlockShape {
  const d = DEFAULT_SHAPE;
  return {
    hidden: f.int('hidden', d.hidden),
    heads: f.int('heads', d.heads),
    kvHeads: f.int('kv-heads', d.kvHeads),
    intermediate: f.int('intermediate', d.intermediate),
    layers: f.int('layers', d.layers),
    seq: f.int('seq', d.seq),
    batch: f.int('batch', d.batch),
  };
}

export interface BlockBenchOptions {
  shape: BlockShape;
  threads: number;
  reps: number;
  warmup: number;
  seed: number;
  /**
   * Also run each graph under ORT's profiler (kernel time per op type) and time the two-session modes
   * with thread-pool spinning on and off.
   */
  diagnostics: boolean;
}

/** An in-memory HF config: a model of layers+2 blocks whose middle `layers` blocks are benchmarked. */
export function benchConfig(s: BlockShape): ModelConfig {
  return parseConfig(
    {
      architectures: ['LlamaForCausalLM'],
      model_type: 'llama',
      hidden_size: s.hidden,
      intermediate_size: s.intermediate,
      num_hidden_layers: s.layers + 2,
      num_attention_heads: s.heads,
      num_key_value_heads: s.kvHeads,
      vocab_size: 256,
      rms_norm_eps: 1e-5,
      rope_theta: 10000,
      max_position_embeddings: Math.max(2048, s.seq),
      hidden_act: 'silu',
    },
    'bench config',
  ).config;
}

export function benchRange(s: BlockShape): BlockRange {
  return { start: 1, end: 1 + s.layers, embed: false, head: false };
}

/** MatMul FLOPs of one block by the formula in the header comment. */
export function blockMatmulFlops(c: ModelConfig, batch: number, seq: number) {
  const t = batch * seq;
  const h = c.hiddenSize;
  const q = c.numHeads * c.headDim;
  const kv = c.numKvHeads * c.headDim;
  const m = c.intermediateSize;
  const projections = 2 * t * (h * q + 2 * h * kv + q * h + 3 * h * m);
  const attention = 2 * (2 * batch * c.numHeads * seq * seq * c.headDim);
  const forward = projections + attention;
  return { projections, attention, forward, inputGrad: projections + 2 * attention, weightGrad: projections };
}

// ---- the graphs, rebuilt exactly as RangeProgram.create builds them, for counting and profiling ----

const OUT_GRAD = 'grad.hidden_out';

interface BuiltGraphs {
  forward: Graph;
  backward: Graph | null;
}

export function buildGraphs(config: ModelConfig, range: BlockRange, trainable: ReadonlySet<string>, load: (n: string) => Float32Array): BuiltGraphs {
  const binder = new ParamBinder({ trainable, load });
  const { graph, seed, hiddenIn } = buildRangeGraph(config, range, binder);
  const wrt = [...binder.used.filter((n) => trainable.has(n)), ...(hiddenIn ? [hiddenIn] : [])];
  const gb = graph.clone(`${graph.name}_backward`);
  gb.outputs.splice(0, gb.outputs.length);
  const seedGrad = gb.input(OUT_GRAD, 'float32', ['batch', 'seq', config.hiddenSize]);
  const grads = backward(gb, [{ value: seed, grad: seedGrad }], wrt);
  for (const w of wrt) {
    const d = grads.get(w);
    if (!d) throw new Error(`${w} does not influence the range output`);
    gb.output(gb.rename(d, `grad.${w}`));
  }
  return { forward: graph, backward: gb };
}

/** The same graph with symbolic dims replaced by numbers; shapes are re-inferred node by node. */
export function concretize(g: Graph, dims: Readonly<Record<string, number>>): Graph {
  const c = new Graph(g.name);
  const sub = (s: Shape): Shape => s.map((d) => (typeof d === 'string' && d in dims ? dims[d] : d));
  for (const [name, init] of g.initializers) c.initializer(name, init.dtype, init.dims, init.data);
  for (const name of g.inputs) c.input(name, g.info(name).dtype, sub(g.info(name).shape));
  for (const n of liveNodes(g)) c.emit({ ...n, inputs: [...n.inputs], outputs: [...n.outputs] });
  for (const o of g.outputs) c.output(o);
  return c;
}

function numel(s: Shape, where: string): number {
  let n = 1;
  for (const d of s) {
    if (typeof d !== 'number') throw new Error(`${where}: dim ${String(d)} is not static`);
    n *= d;
  }
  return n;
}

interface GraphCount {
  matmulFlops: number;
  matmulNodes: number;
  nodes: number;
  /** Live node count per op type, largest first. */
  ops: Record<string, number>;
}

function countGraph(g: Graph): GraphCount {
  let flops = 0;
  let matmuls = 0;
  const ops = new Map<string, number>();
  const nodes = liveNodes(g);
  for (const n of nodes) {
    ops.set(n.op, (ops.get(n.op) ?? 0) + 1);
    if (n.op !== 'MatMul') continue;
    const a = g.info(n.inputs[0]).shape;
    const k = a[a.length - 1];
    if (typeof k !== 'number') throw new Error(`MatMul ${n.outputs[0]}: inner dim not static`);
    flops += 2 * numel(g.info(n.outputs[0]).shape, `MatMul ${n.outputs[0]}`) * k;
    matmuls++;
  }
  const sorted = [...ops].sort((x, y) => y[1] - x[1]);
  return { matmulFlops: flops, matmulNodes: matmuls, nodes: nodes.length, ops: Object.fromEntries(sorted) };
}

// ---- host copy cost ----

interface TensorSize {
  dims: number[];
  dtype: DType;
}

function bytesOf(ts: readonly TensorSize[]): number {
  return ts.reduce((acc, t) => acc + t.dims.reduce((a, b) => a * b, 1) * BYTES_PER_ELEMENT[t.dtype], 0);
}

/**
 * A graph that does (almost) nothing but take the same inputs and return outputs of the same sizes
 * as one run of a block graph: each input is consumed by Shape (so it is bound but not read), each
 * output is Expand of a scalar (one write pass). Its run time is the per-run price of crossing the
 * host boundary: tensor wrapping, output allocation and the copy of every output back into JS.
 */
async function hostIoProbe(feeds: readonly TensorSize[], fetches: readonly TensorSize[], threads: number, warmup: number, reps: number) {
  const g = new Graph('host_io');
  const feedData: Record<string, HostTensor> = {};
  feeds.forEach((t, i) => {
    const name = `in${i}`;
    g.output(g.rename(g.op('Shape', [g.input(name, t.dtype, t.dims)]), `shape${i}`));
    feedData[name] = { dtype: t.dtype, shape: t.dims, data: new Float32Array(t.dims.reduce((a, b) => a * b, 1)) };
  });
  const z = g.input('z', 'float32', []);
  feedData.z = { dtype: 'float32', shape: [], data: Float32Array.of(0.5) };
  fetches.forEach((t, i) => g.output(g.rename(g.op('Expand', [z, g.i64(t.dims)]), `out${i}`)));
  const compiled = await CompiledGraph.create(g, { threads });
  try {
    const times: number[] = [];
    for (let i = 0; i < warmup + reps; i++) {
      const t0 = performance.now();
      await compiled.run(feedData);
      if (i >= warmup) times.push(performance.now() - t0);
    }
    return { median: median(times), min: Math.min(...times) };
  } finally {
    await compiled.release();
  }
}

// ---- ORT profiling ----

interface ProfileEvent {
  cat?: string;
  name?: string;
  ts?: number;
  dur?: number;
  args?: { op_name?: string; input_type_shape?: Record<string, number[]>[] };
}

export interface OpProfile {
  /** Sum over nodes of each node's median kernel time (interOpNumThreads is 1: kernels run one after another). */
  kernel_ms: number;
  /** Median wall time of a profiled run inside ORT. */
  run_ms: number;
  /** Kernel time per op type as ORT executed it (after its fusions), largest first. */
  by_op: { op: string; ms: number; share: number; count: number }[];
  matmul_share: number;
  /** Counted MatMul FLOPs over the time of the MatMul-like kernels alone. */
  matmul_kernel_gflops: number;
  top_nodes: { node: string; op: string; ms: number; inputs: string }[];
}

const MATMUL_LIKE = /MatMul|Gemm/;
const PROFILED_RUNS = 3;

/**
 * An ORT session for `g` with CompiledGraph's options (CPU, all optimizations, interOp 1) plus
 * `extra`, for what CompiledGraph does not expose: profiling and the thread-pool spinning switch.
 */
async function rawSession(g: Graph, feeds: Readonly<Record<string, HostTensor>>, threads: number, extra: Partial<ort.InferenceSession.SessionOptions> = {}) {
  const { bytes, externalData } = serialize(g);
  const session = await ort.InferenceSession.create(bytes, { ...ortSessionOptions({ threads }), externalData, ...extra });
  const ortFeeds: Record<string, ort.Tensor> = {};
  for (const name of session.inputNames) {
    const t = feeds[name];
    if (!t) throw new Error(`${g.name}: no feed for '${name}'`);
    ortFeeds[name] = new ort.Tensor(t.dtype as ort.Tensor.Type, t.data as ort.Tensor.DataType, t.shape);
  }
  return { session, run: () => session.run(ortFeeds) };
}

/** PROFILED_RUNS profiled runs (after two warm-up runs) of `g`. */
async function profileGraph(g: Graph, feeds: Readonly<Record<string, HostTensor>>, threads: number, matmulFlops: number): Promise<OpProfile> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'propipe-bench-'));
  const { session, run } = await rawSession(g, feeds, threads, { enableProfiling: true, profileFilePrefix: path.join(dir, 'profile') });
  try {
    // The first two runs of a session are slow (fresh arena memory is page-faulted in): skip them,
    // then take each node's median over the profiled runs so one preempted kernel does not count.
    const skip = 2;
    for (let i = 0; i < skip + PROFILED_RUNS; i++) await run();
    session.endProfiling();
    const file = fs.readdirSync(dir).find((f) => f.endsWith('.json'));
    if (!file) throw new Error(`ORT wrote no profile into ${dir}`);
    const events = JSON.parse(fs.readFileSync(path.join(dir, file), 'utf8')) as ProfileEvent[];
    const runs = events.filter((e) => e.cat === 'Session' && e.name === 'model_run').slice(skip);
    if (runs.length !== PROFILED_RUNS) throw new Error(`profile has ${runs.length} model_run events after the first ${skip}`);
    const perNode = new Map<string, { op: string; inputs: string; us: number[] }>();
    for (const run of runs) {
      const from = run.ts ?? 0;
      const to = from + (run.dur ?? 0);
      for (const e of events) {
        if (e.cat !== 'Node' || !e.name?.endsWith('_kernel_time') || (e.ts ?? -1) < from || (e.ts ?? 0) > to) continue;
        const node = e.name.replace(/_kernel_time$/, '');
        let entry = perNode.get(node);
        if (!entry) {
          const inputs = (e.args?.input_type_shape ?? []).map((sh) => `[${Object.values(sh)[0]?.join(',') ?? ''}]`).join(' ');
          entry = { op: e.args?.op_name ?? '?', inputs, us: [] };
          perNode.set(node, entry);
        }
        entry.us.push(e.dur ?? 0);
      }
    }
    const nodes = [...perNode].map(([node, v]) => ({ node, op: v.op, inputs: v.inputs, us: median(v.us) }));
    const byOp = new Map<string, { us: number; count: number }>();
    let total = 0;
    let matmulUs = 0;
    for (const n of nodes) {
      const entry = byOp.get(n.op) ?? { us: 0, count: 0 };
      entry.us += n.us;
      entry.count++;
      byOp.set(n.op, entry);
      total += n.us;
      if (MATMUL_LIKE.test(n.op)) matmulUs += n.us;
    }
    return {
      kernel_ms: round(total / 1e3),
      run_ms: round(median(runs.map((r) => r.dur ?? 0)) / 1e3),
      by_op: [...byOp]
        .sort((a, b) => b[1].us - a[1].us)
        .map(([op, v]) => ({ op, ms: round(v.us / 1e3), share: round(v.us / total), count: v.count })),
      matmul_share: round(matmulUs / total),
      matmul_kernel_gflops: round(matmulFlops / 1e9 / (matmulUs / 1e6), 1),
      top_nodes: nodes
        .sort((a, b) => b.us - a.us)
        .slice(0, 8)
        .map((n) => ({ node: n.node, op: n.op, ms: round(n.us / 1e3), inputs: n.inputs })),
    };
  } finally {
    await session.release();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

export interface SpinCheck {
  note: string;
  /** Median ms of each session's run and of the whole step, alternating sessions as a step does. */
  spinning: { step_ms: number; run_ms: number[] };
  no_spinning: { step_ms: number; run_ms: number[] };
}

/**
 * Each ORT session owns an intra-op thread pool whose threads spin after a run (allow_spinning,
 * on by default). A step alternates two sessions (forward, backward); on a machine with as many cores
 * as threads the idle session's spinning threads compete with the running one. This times the same
 * alternation with spinning on (what CompiledGraph does) and off.
 */
async function spinCheck(graphs: readonly Graph[], feeds: Readonly<Record<string, HostTensor>>, threads: number, warmup: number, reps: number): Promise<SpinCheck> {
  const measure = async (spinning: boolean) => {
    const extra = { extra: { session: { intra_op: { allow_spinning: spinning ? '1' : '0' } } } };
    const sessions = [];
    for (const g of graphs) sessions.push(await rawSession(g, feeds, threads, extra));
    try {
      const step: number[] = [];
      const runs: number[][] = sessions.map(() => []);
      for (let i = 0; i < warmup + reps; i++) {
        const t0 = performance.now();
        for (let k = 0; k < sessions.length; k++) {
          const a = performance.now();
          await sessions[k].run();
          if (i >= warmup) runs[k].push(performance.now() - a);
        }
        if (i >= warmup) step.push(performance.now() - t0);
      }
      return { step_ms: round(median(step)), run_ms: runs.map((r) => round(median(r))) };
    } finally {
      for (const x of sessions) await x.session.release();
    }
  };
  // Two interleaved rounds, keeping each setting's faster one: other load on the machine then biases
  // neither setting.
  const best = (a: Awaited<ReturnType<typeof measure>>, b: Awaited<ReturnType<typeof measure>>) => (a.step_ms <= b.step_ms ? a : b);
  const on1 = await measure(true);
  const off1 = await measure(false);
  const off2 = await measure(false);
  const on2 = await measure(true);
  const spinning = best(on1, on2);
  const noSpinning = best(off1, off2);
  return {
    note: 'raw ORT sessions of this mode\'s graphs run alternately as a step runs them, with session.intra_op.allow_spinning 1 (the default, as CompiledGraph creates them) and 0; median step of the faster of two interleaved rounds per setting',
    spinning,
    no_spinning: noSpinning,
  };
}

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
