// Profiling helpers of bench/train-step.ts: the backward graph rebuilt as RangeProgram.create builds it,
// its MatMul FLOPs, and ORT's per-op profile of it.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import ort from 'onnxruntime-node';
import { type ModelConfig } from '../model/hf/config.ts';
import type { Graph } from '../model/graph/graph.ts';
import { liveNodes, serialize } from '../model/graph/serialize.ts';
import { ortSessionOptions } from '../model/graph/session.ts';
import type { HostTensor } from '../model/graph/dtype.ts';
import { programGraphs, type Batch } from '../model/llama/program.ts';
import type { LoraSpec } from '../model/llama/params.ts';
import { IO, type BlockRange } from '../model/llama/range-graph.ts';
import { ropeTables } from '../model/llama/rope.ts';
import { concretize } from './block-graphs.ts';
import { median, round } from './common.ts';

const LOSS_SCALE = 'loss_scale';

/** The backward graph of a head range exactly as RangeProgram.create builds it (frozen weights as inputs). */
export function backwardGraph(config: ModelConfig, range: BlockRange, trainable: ReadonlySet<string>, load: (n: string) => Float32Array, inputGrad = false, lora: LoraSpec | null = null): { graph: Graph; shapes: ReadonlyMap<string, number[]>; trainableNames: string[]; frozen: (n: string) => HostTensor | undefined } {
  const p = programGraphs({ config, range, trainable, load, inputGrad, lora });
  if (!p.backward) throw new Error(`blocks ${range.start}..${range.end - 1}: nothing to differentiate`);
  const frozenNames = new Set(p.frozenNames);
  return { graph: p.backward, shapes: p.shapes, trainableNames: p.trainable, frozen: (n) => (frozenNames.has(n) ? p.frozen.tensor(n) : undefined) };
}

/** ORT tensors for every input of a backward graph built by `backwardGraph`, for one batch. */
export function backwardFeeds(
  inputNames: readonly string[],
  config: ModelConfig,
  range: BlockRange,
  built: Pick<ReturnType<typeof backwardGraph>, 'shapes' | 'trainableNames' | 'frozen'>,
  params: ReadonlyMap<string, Float32Array>,
  batch: Batch & { targets: number },
): Record<string, ort.Tensor> {
  const rope = ropeTables(config, batch.seq);
  const mask = new Float32Array(batch.seq * batch.seq);
  for (let i = 0; i < batch.seq; i++) for (let j = i + 1; j < batch.seq; j++) mask[i * batch.seq + j] = -1e9;
  const feeds: Record<string, ort.Tensor> = {
    [IO.cos]: new ort.Tensor('float32', rope.cos, [batch.seq, config.headDim]),
    [IO.sin]: new ort.Tensor('float32', rope.sin, [batch.seq, config.headDim]),
    [IO.mask]: new ort.Tensor('float32', mask, [batch.seq, batch.seq]),
    [LOSS_SCALE]: new ort.Tensor('float32', Float32Array.of(1 / batch.targets), []),
    [IO.labels]: new ort.Tensor('int64', batch.labels!, [batch.batch, batch.seq]),
  };
  if (range.embed) feeds[IO.inputIds] = new ort.Tensor('int64', batch.inputIds!, [batch.batch, batch.seq]);
  else feeds[IO.hiddenIn] = new ort.Tensor('float32', batch.hidden!, [batch.batch, batch.seq, config.hiddenSize]);
  for (const n of built.trainableNames) feeds[n] = new ort.Tensor('float32', params.get(n)!, built.shapes.get(n)!);
  const used: Record<string, ort.Tensor> = {};
  for (const n of inputNames) {
    const f = built.frozen(n);
    used[n] = feeds[n] ?? (f && new ort.Tensor(f.dtype as ort.Tensor.Type, f.data as ort.Tensor.DataType, f.shape));
    if (!used[n]) throw new Error(`no feed for graph input ${n}`);
  }
  return used;
}

/** What a kernel is for, by its op type: the classes the step's time is reported in. */
export function opClass(op: string): string {
  if (['MatMul', 'FusedMatMul', 'Gemm', 'MatMulNBits'].includes(op)) return 'matmul';
  if (['Transpose'].includes(op)) return 'transpose';
  if (['Sum'].includes(op)) return 'gradient_sum';
  if (['Softmax', 'LogSoftmax', 'SoftmaxCrossEntropyLoss'].includes(op)) return 'softmax_and_loss';
  if (['SimplifiedLayerNormalization', 'SkipSimplifiedLayerNormalization', 'RotaryEmbedding', 'MultiHeadAttention', 'GroupQueryAttention', 'QuickGelu'].includes(op)) return 'fused_contrib';
  if (op.startsWith('Reduce')) return 'reduction';
  if (['Reshape', 'Concat', 'Split', 'Slice', 'Pad', 'Expand', 'Unsqueeze', 'Squeeze', 'Gather', 'ScatterND', 'ScatterElements', 'Identity'].includes(op)) return 'copy_and_layout';
  return 'elementwise';
}

/** MatMul FLOPs (2 per multiply-add) of the nodes a graph keeps, at the step's batch and seq. */
export function graphMatmulFlops(g: Graph, batch: number, seq: number): number {
  const c = concretize(g, { batch, seq });
  let flops = 0;
  for (const n of liveNodes(c)) {
    if (n.op !== 'MatMul' && n.op !== 'FusedMatMul') continue;
    const a = c.info(n.inputs[0]).shape;
    const out = c.info(n.outputs[0]).shape;
    const k = a[a.length - (n.attrs.transA ? 2 : 1)];
    if (typeof k !== 'number' || out.some((d) => typeof d !== 'number')) throw new Error(`MatMul ${n.outputs[0]}: shape not static`);
    flops += 2 * (out as number[]).reduce((x, y) => x * y, 1) * k;
  }
  return flops;
}

interface ProfileEvent {
  cat?: string;
  name?: string;
  ts?: number;
  dur?: number;
  args?: { op_name?: string; input_type_shape?: Record<string, number[]>[] };
}

export interface BackwardProfile {
  note: string;
  /** Median wall time of session.run as seen from JS. */
  wall_ms: number;
  /** Median of ORT's model_run event (inside the native session). */
  ort_run_ms: number;
  /** Sum of node kernel times (median per node). */
  kernel_ms: number;
  /** wall − ort_run: Node binding cost (feeds wrapped as OrtValues, fetches copied into JS buffers). */
  binding_ms: number;
  bytes_fed: number;
  bytes_fetched: number;
  by_op: { op: string; ms: number; share: number; count: number }[];
  /** Kernel time per op class (opClass): matmul, elementwise, transpose, gradient sums, … */
  by_class: { class: string; ms: number; share: number; count: number }[];
  /** MatMul kernel time by op and input shapes, largest first. */
  matmul_by_shape: { kernel: string; ms: number; count: number }[];
  top_nodes: { node: string; op: string; ms: number }[];
}

export async function profileBackward(
  config: ModelConfig,
  range: BlockRange,
  trainable: ReadonlySet<string>,
  load: (n: string) => Float32Array,
  params: ReadonlyMap<string, Float32Array>,
  batch: Batch & { targets: number },
  threads: number,
  lora: LoraSpec | null = null,
): Promise<BackwardProfile> {
  const { graph, shapes, trainableNames, frozen } = backwardGraph(config, range, trainable, load, false, lora);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'propipe-train-step-'));
  const { bytes, externalData } = serialize(graph);
  const session = await ort.InferenceSession.create(bytes, { ...ortSessionOptions({ threads }), externalData, enableProfiling: true, profileFilePrefix: path.join(dir, 'profile') });
  try {
    const used = backwardFeeds(session.inputNames, config, range, { shapes, trainableNames, frozen }, params, batch);
    const bytesFed = Object.values(used).reduce((a, t) => a + (t.data as ArrayBufferView).byteLength, 0);
    const skip = 2;
    const runs = 3;
    const wall: number[] = [];
    let bytesFetched = 0;
    for (let i = 0; i < skip + runs; i++) {
      const t0 = performance.now();
      const out = await session.run(used);
      if (i >= skip) wall.push(performance.now() - t0);
      bytesFetched = Object.values(out).reduce((a, t) => a + (t.data as ArrayBufferView).byteLength, 0);
    }
    session.endProfiling();
    const file = fs.readdirSync(dir).find((f) => f.endsWith('.json'));
    if (!file) throw new Error(`ORT wrote no profile into ${dir}`);
    const events = JSON.parse(fs.readFileSync(path.join(dir, file), 'utf8')) as ProfileEvent[];
    const modelRuns = events.filter((e) => e.cat === 'Session' && e.name === 'model_run').slice(skip);
    const perNode = new Map<string, { op: string; us: number[]; shapes: string }>();
    for (const r of modelRuns) {
      const from = r.ts ?? 0;
      const to = from + (r.dur ?? 0);
      for (const e of events) {
        if (e.cat !== 'Node' || !e.name?.endsWith('_kernel_time') || (e.ts ?? -1) < from || (e.ts ?? 0) > to) continue;
        const node = e.name.replace(/_kernel_time$/, '');
        const shapes = (e.args?.input_type_shape ?? []).map((t) => `[${Object.values(t)[0]}]`).join('x');
        const entry = perNode.get(node) ?? { op: e.args?.op_name ?? '?', us: [], shapes };
        entry.us.push(e.dur ?? 0);
        perNode.set(node, entry);
      }
    }
    const nodes = [...perNode].map(([node, v]) => ({ node, op: v.op, us: median(v.us), shapes: v.shapes }));
    const byShape = new Map<string, { us: number; count: number }>();
    for (const n of nodes) {
      if (opClass(n.op) !== 'matmul') continue;
      const key = `${n.op} ${n.shapes}`;
      const e = byShape.get(key) ?? { us: 0, count: 0 };
      e.us += n.us;
      e.count++;
      byShape.set(key, e);
    }
    const total = nodes.reduce((a, n) => a + n.us, 0);
    const byOp = new Map<string, { us: number; count: number }>();
    for (const n of nodes) {
      const e = byOp.get(n.op) ?? { us: 0, count: 0 };
      e.us += n.us;
      e.count++;
      byOp.set(n.op, e);
    }
    const byClass = new Map<string, { us: number; count: number }>();
    for (const n of nodes) {
      const e = byClass.get(opClass(n.op)) ?? { us: 0, count: 0 };
      e.us += n.us;
      e.count++;
      byClass.set(opClass(n.op), e);
    }
    const ortRun = median(modelRuns.map((r) => r.dur ?? 0)) / 1e3;
    const wallMs = median(wall);
    return {
      note: 'the backward graph in a raw ORT session with the same options as CompiledGraph plus the profiler; 2 unprofiled-in-stats runs, then the median of 3',
      wall_ms: round(wallMs),
      ort_run_ms: round(ortRun),
      kernel_ms: round(total / 1e3),
      binding_ms: round(wallMs - ortRun),
      bytes_fed: bytesFed,
      bytes_fetched: bytesFetched,
      by_op: [...byOp].sort((a, b) => b[1].us - a[1].us).slice(0, 14).map(([op, v]) => ({ op, ms: round(v.us / 1e3), share: round(v.us / total), count: v.count })),
      by_class: [...byClass].sort((a, b) => b[1].us - a[1].us).map(([c, v]) => ({ class: c, ms: round(v.us / 1e3), share: round(v.us / total), count: v.count })),
      matmul_by_shape: [...byShape].sort((a, b) => b[1].us - a[1].us).slice(0, 16).map(([k, v]) => ({ kernel: k, ms: round(v.us / 1e3), count: v.count })),
      top_nodes: nodes.sort((a, b) => b.us - a.us).slice(0, 8).map((n) => ({ node: n.node, op: n.op, ms: round(n.us / 1e3) })),
    };
  } finally {
    await session.release();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
