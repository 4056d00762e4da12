// Profiling helpers of the block benchmark: host copy cost, ORT per-op profiles, thread-pool spin cost.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import ort from 'onnxruntime-node';
import { BYTES_PER_ELEMENT, type DType } from '../model/graph/dtype.ts';
import { Graph } from '../model/graph/graph.ts';
import { serialize } from '../model/graph/serialize.ts';
import { CompiledGraph, ortSessionOptions } from '../model/graph/session.ts';
import { type HostTensor } from '../model/graph/dtype.ts';
import { median, round } from './common.ts';

// ---- host copy cost ----

export interface TensorSize {
  dims: number[];
  dtype: DType;
}

export function bytesOf(ts: readonly TensorSize[]): number {
  return ts.reduce((acc, t) => acc + t.dims.reduce((a, b) => a * b, 1) * BYTES_PER_ELEMENT[t.dtype], 0);
}

/**
 * A graph that does (almost) nothing but take the same inputs and return outputs of the same sizes
 * as one run of a block graph: each input is consumed by Shape (so it is bound but not read), each
 * output is Expand of a scalar (one write pass). Its run time is the per-run price of crossing the
 * host boundary: tensor wrapping, output allocation and the copy of every output back into JS.
 */
export async function hostIoProbe(feeds: readonly TensorSize[], fetches: readonly TensorSize[], threads: number, warmup: number, reps: number) {
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
export async function profileGraph(g: Graph, feeds: Readonly<Record<string, HostTensor>>, threads: number, matmulFlops: number): Promise<OpProfile> {
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
export async function spinCheck(graphs: readonly Graph[], feeds: Readonly<Record<string, HostTensor>>, threads: number, warmup: number, reps: number): Promise<SpinCheck> {
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
