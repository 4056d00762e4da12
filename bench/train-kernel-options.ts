// What ONNX Runtime's CPU kernels give at the training step's GEMM shapes, and which graph forms and
// session options would change it (issue 15). Every comparison compiles its variants into one
// process and runs them round-robin; CPU time of this process per run (all ORT threads) is the
// figure to read on a shared machine, wall time is printed beside it.
//   gemm_forms        GFLOP/s of one GEMM shape as 2-D MatMul, 3-D MatMul [b, t, h], x·Wᵀ and the
//                     weight gradient dYᵀ·X (ORT fuses the Transpose into FusedMatMul transA/transB)
//   fused_projections q/k/v as one [h, q+k+v] GEMM and gate/up as one [h, 2i] (forward, dX, dW of 8
//                     blocks) against separate GEMMs and a gradient Sum: what storing them fused buys
//   shared_transpose  the weight gradients of q/k/v/gate/up/o from one materialized Xᵀ (plain GEMMs)
//                     against a transA GEMM each
//   session_options   the full step's backward graph with allow_spinning on, one thread, no CPU
//                     arena, the memory pattern, 'extended' optimization, against propipe's options
//   fetches           the full backward graph run into preallocated output tensors against fresh ones
//
//   npx tsx bench/train-kernel-options.ts [--threads 2 --reps 8 --only session_options|fetches] [shape flags of bench/train-step.ts]
import ort from 'onnxruntime-node';
import { Graph } from '../model/graph/graph.ts';
import { serialize } from '../model/graph/serialize.ts';
import { ortSessionOptions } from '../model/graph/session.ts';
import { wholeModel } from '../model/llama/range-graph.ts';
import { Flags, hostInfo, info, isMain, median, printJson, Rng, round } from './common.ts';
import { backwardFeeds, backwardGraph } from './train-step-profile.ts';
import { fullModel, randomBatch, takeStringFlag, trainOptionsFromFlags, TRAIN_SHAPE_FLAGS, type TrainStepOptions } from './train-step.ts';

interface Variant {
  name: string;
  session: ort.InferenceSession;
  feeds: Record<string, ort.Tensor>;
  fetches?: Record<string, ort.Tensor>;
}

export interface Timed {
  variant: string;
  cpu_ms: number;
  wall_ms: number;
  min_wall_ms: number;
}

const T2 = [1, 0];

async function compile(g: Graph, options: ort.InferenceSession.SessionOptions): Promise<ort.InferenceSession> {
  const { bytes, externalData } = serialize(g);
  return ort.InferenceSession.create(bytes, { ...options, externalData });
}

/** Median CPU and wall ms per run of each variant, run round-robin after two warm-up rounds. */
async function roundRobin(variants: Variant[], reps: number): Promise<Timed[]> {
  const cpu = variants.map(() => [] as number[]);
  const wall = variants.map(() => [] as number[]);
  try {
    for (let rep = 0; rep < reps + 2; rep++) {
      for (const [i, v] of variants.entries()) {
        const c0 = process.cpuUsage();
        const t0 = performance.now();
        await (v.fetches ? v.session.run(v.feeds, v.fetches) : v.session.run(v.feeds));
        const w = performance.now() - t0;
        const c = process.cpuUsage(c0);
        if (rep < 2) continue;
        cpu[i].push((c.user + c.system) / 1e3);
        wall[i].push(w);
      }
    }
  } finally {
    for (const v of variants) await v.session.release();
  }
  return variants.map((v, i) => ({ variant: v.name, cpu_ms: round(median(cpu[i])), wall_ms: round(median(wall[i])), min_wall_ms: round(Math.min(...wall[i])) }));
}

/** A graph builder with random float32 inputs fed as it declares them. */
function fedGraph(name: string, rng: Rng) {
  const g = new Graph(name);
  const feeds: Record<string, ort.Tensor> = {};
  const input = (n: string, shape: number[], std = 0.05) => {
    feeds[n] = new ort.Tensor('float32', rng.uniformArray(shape.reduce((a, b) => a * b, 1), std), shape);
    return g.input(n, 'float32', shape);
  };
  // Outputs reduced to scalars so that copying results out costs nothing next to the GEMMs.
  const sink = (x: string, n: string) => g.output(g.rename(g.op('ReduceSum', [x], { keepdims: 0 }), n));
  return { g, feeds, input, sink };
}

const GEMM_FORMS: Record<string, (b: ReturnType<typeof fedGraph>, m: number, k: number, n: number, c: number) => string> = {
  matmul_2d: (b, m, k, n, c) => b.g.op('MatMul', [b.input(`x${c}`, [m, k]), b.input(`w${c}`, [k, n])]),
  matmul_3d: (b, m, k, n, c) => b.g.op('MatMul', [b.input(`x${c}`, [8, m / 8, k]), b.input(`w${c}`, [k, n])]),
  x_wT: (b, m, k, n, c) => b.g.op('MatMul', [b.input(`x${c}`, [m, k]), b.g.op('Transpose', [b.input(`w${c}`, [n, k])], { perm: T2 })]),
  dyT_x: (b, m, k, n, c) => b.g.op('MatMul', [b.g.op('Transpose', [b.input(`x${c}`, [m, k])], { perm: T2 }), b.input(`w${c}`, [m, n])]),
};

/** GFLOP/s per core (from CPU time) and from the fastest wall time, per form and [tokens, k] × [k, n] shape. */
async function gemmForms(o: TrainStepOptions, reps: number, rng: Rng) {
  const m = o.shape.batch * o.shape.seq;
  const h = o.shape.hidden;
  const kv = (h / o.shape.heads) * o.shape.kvHeads;
  const shapes: [number, number][] = [[h, h], [h, kv], [h, o.shape.intermediate], [o.shape.intermediate, h], [h, o.shape.vocab], [o.shape.vocab, h]];
  const out = [];
  for (const [k, n] of shapes) {
    const variants: Variant[] = [];
    for (const [form, build] of Object.entries(GEMM_FORMS)) {
      const b = fedGraph(form, rng);
      for (let c = 0; c < 4; c++) b.sink(build(b, m, k, n, c), `y${c}`);
      variants.push({ name: form, session: await compile(b.g, ortSessionOptions({ threads: o.threads })), feeds: b.feeds });
    }
    const gflop = (4 * 2 * m * k * n) / 1e9;
    for (const t of await roundRobin(variants, reps)) out.push({ shape: `[${m},${k}]x[${k},${n}]`, form: t.variant, gflops_per_core_cpu: round(gflop / (t.cpu_ms / 1e3), 1), gflops_best_wall: round(gflop / (t.min_wall_ms / 1e3), 1) });
  }
  return out;
}

/** q/k/v and gate/up of every block: forward, dX and dW GEMMs, separate or one fused weight each. */
async function fusedProjections(o: TrainStepOptions, reps: number, rng: Rng): Promise<Timed[]> {
  const m = o.shape.batch * o.shape.seq;
  const h = o.shape.hidden;
  const kv = (h / o.shape.heads) * o.shape.kvHeads;
  const groups = [[h, kv, kv], [o.shape.intermediate, o.shape.intermediate]];
  const variants: Variant[] = [];
  for (const fused of [false, true]) {
    const b = fedGraph(fused ? 'fused' : 'separate', rng);
    const x = b.input('x', [m, h]);
    for (let l = 0; l < o.shape.layers; l++) {
      for (const [gi, outs] of groups.entries()) {
        const parts = fused ? [outs.reduce((a, c) => a + c, 0)] : outs;
        const dxs = parts.map((n, pi) => {
          const w = b.input(`w${l}_${gi}_${pi}`, [h, n]);
          const y = b.g.op('MatMul', [x, w]);
          const dy = b.g.op('Mul', [y, y]); // an upstream gradient of y's shape
          b.sink(b.g.op('MatMul', [b.g.op('Transpose', [x], { perm: T2 }), dy]), `dw${l}_${gi}_${pi}`);
          return b.g.op('MatMul', [dy, b.g.op('Transpose', [w], { perm: T2 })]);
        });
        b.sink(dxs.length > 1 ? b.g.op('Sum', dxs) : dxs[0], `dx${l}_${gi}`);
      }
    }
    variants.push({ name: fused ? 'fused' : 'separate', session: await compile(b.g, ortSessionOptions({ threads: o.threads })), feeds: b.feeds });
  }
  return roundRobin(variants, reps);
}

/** Weight gradients from one materialized Xᵀ per input (Transpose + Reshape: ORT cannot fold it into the GEMM). */
async function sharedTranspose(o: TrainStepOptions, reps: number, rng: Rng): Promise<Timed[]> {
  const m = o.shape.batch * o.shape.seq;
  const h = o.shape.hidden;
  const kv = (h / o.shape.heads) * o.shape.kvHeads;
  const inputs: [number, number[]][] = [[h, [h, kv, kv, o.shape.intermediate, o.shape.intermediate, h]], [o.shape.intermediate, [h]]];
  const variants: Variant[] = [];
  for (const shared of [false, true]) {
    const b = fedGraph(shared ? 'shared' : 'transA', rng);
    for (let l = 0; l < o.shape.layers; l++) {
      for (const [xi, [k, outs]] of inputs.entries()) {
        const x = b.input(`x${l}_${xi}`, [m, k]);
        const xT = b.g.op('Reshape', [b.g.op('Transpose', [b.g.op('Reshape', [x, b.g.i64([o.shape.batch, o.shape.seq, k])])], { perm: [2, 0, 1] }), b.g.i64([k, m])]);
        outs.forEach((n, i) => b.sink(b.g.op('MatMul', [shared ? xT : b.g.op('Transpose', [x], { perm: T2 }), b.input(`dy${l}_${xi}_${i}`, [m, n])]), `dw${l}_${xi}_${i}`));
      }
    }
    variants.push({ name: shared ? 'one_materialized_xT' : 'transA_each', session: await compile(b.g, ortSessionOptions({ threads: o.threads })), feeds: b.feeds });
  }
  return roundRobin(variants, reps);
}

/** The full fine-tune's backward graph and a session of it with its feeds. */
function fullBackward(o: TrainStepOptions) {
  const model = fullModel(o);
  const range = wholeModel(model.config);
  const built = backwardGraph(model.config, range, model.trainable, model.load);
  const params = new Map([...model.trainable].map((n) => [n, model.load(n)]));
  const batch = randomBatch(model.config, o.shape, o.seed);
  return async (options: ort.InferenceSession.SessionOptions) => {
    const session = await compile(built.graph, options);
    return { session, feeds: backwardFeeds(session.inputNames, model.config, range, built, params, batch) };
  };
}

/** The full fine-tune's backward graph under each session option against propipe's own. */
async function sessionOptions(o: TrainStepOptions, reps: number): Promise<Timed[]> {
  const open = fullBackward(o);
  const base = ortSessionOptions({ threads: o.threads });
  const options: Record<string, ort.InferenceSession.SessionOptions> = {
    propipe: base,
    allow_spinning: { ...base, extra: { session: { intra_op: { allow_spinning: '1' } } } },
    one_thread: { ...base, intraOpNumThreads: 1 },
    no_cpu_arena: { ...base, enableCpuMemArena: false },
    memory_pattern: { ...base, enableMemPattern: true },
    optimization_extended: { ...base, graphOptimizationLevel: 'extended' },
    denormals_as_zero: { ...base, extra: { session: { intra_op: { allow_spinning: '0' }, set_denormal_as_zero: '1' } } },
  };
  const variants: Variant[] = [];
  for (const [name, opts] of Object.entries(options)) variants.push({ name, ...(await open(opts)) });
  return roundRobin(variants, reps);
}

/** The full fine-tune's backward graph with fresh outputs against every output preallocated (the binding's copy). */
async function fetches(o: TrainStepOptions, reps: number): Promise<Timed[]> {
  const open = fullBackward(o);
  const variants: Variant[] = [];
  for (const pre of [false, true]) {
    const { session, feeds } = await open(ortSessionOptions({ threads: o.threads }));
    let outputs: Record<string, ort.Tensor> | undefined;
    if (pre) {
      const first = await session.run(feeds);
      outputs = Object.fromEntries(Object.entries(first).map(([n, t]) => [n, new ort.Tensor(t.type as 'float32', (t.data as Float32Array).slice(), t.dims)]));
    }
    variants.push({ name: pre ? 'preallocated' : 'fresh', session, feeds, fetches: outputs });
  }
  return roundRobin(variants, reps);
}

export async function measureKernelOptions(o: TrainStepOptions, reps: number, only?: string) {
  const rng = new Rng(o.seed);
  if (only === 'session_options') return { session_options: await sessionOptions(o, reps) };
  if (only === 'fetches') return { fetches: await fetches(o, reps) };
  info('kernel options: GEMM forms');
  const gemm_forms = await gemmForms(o, reps, rng);
  info('kernel options: fused q/k/v and gate/up');
  const fused_projections = await fusedProjections(o, reps, rng);
  info('kernel options: shared Xᵀ for weight gradients');
  const shared_transpose = await sharedTranspose(o, reps, rng);
  info('kernel options: session options on the full backward graph');
  const session_options = await sessionOptions(o, reps);
  info('kernel options: preallocated fetches');
  const fetch = await fetches(o, reps);
  return { gemm_forms, fused_projections, shared_transpose, session_options, fetches: fetch };
}

async function main(): Promise<void> {
  const { value: only, rest } = takeStringFlag(process.argv.slice(2), 'only');
  const flags = new Flags(rest);
  flags.check([...TRAIN_SHAPE_FLAGS, 'threads', 'reps', 'seed']);
  const o = trainOptionsFromFlags(flags);
  printJson({ bench: 'propipe-train-kernel-options', host: hostInfo(o.threads), shape: o.shape, ...(await measureKernelOptions(o, flags.int('reps', 8), only)) });
}

if (isMain(import.meta.url)) {
  main().catch((err: unknown) => {
    process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  });
}
