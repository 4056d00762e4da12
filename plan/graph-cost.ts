// What one run of a builder graph costs, counted from its nodes at a concrete batch and sequence length:
//   MatMul / MatMulNBits / Gemm   flops = 2 · numel(output) · K            (K = A's last dim)
//   every other op                bytes = Σ numel(inputs) + numel(outputs), times the element size;
//                                 of which mathBytes for ops that evaluate exp/log/sigmoid per element
//                                 (Softmax, Sigmoid, Exp, ...): they run far below memory bandwidth on a
//                                 CPU (Softmax 4 GB/s against Add's 39 GB/s here), so devices price them apart
//   GroupQueryAttention (forward-only blocks on CPU: q [b, t, heads·d], k/v [b, T, kv·d])
//                                 flops = 4 · b · heads · t · T · d   (Q·Kᵀ and P·V over every key: the CPU
//                                 kernel multiplies the whole score matrix and masks in its softmax),
//                                 bytes = its inputs and outputs, plus mathBytes = 8 · b · heads · t · T (the
//                                 softmax over the scores, read and written once inside the kernel)
//   shape-only ops (Reshape, Shape, Identity, Unsqueeze, Squeeze, constants) cost nothing
// and `nodes` counts the ops that do work (each has a fixed launch overhead). Pure: no ONNX Runtime.
import { BYTES_PER_ELEMENT } from '../model/graph/dtype.ts';
import type { Graph, Node } from '../model/graph/graph.ts';

export interface OpCost {
  flops: number;
  bytes: number;
  /** The part of `bytes` moved by transcendental ops (exp, log, sigmoid, tanh, erf per element). */
  mathBytes: number;
  nodes: number;
}

export const ZERO: OpCost = { flops: 0, bytes: 0, mathBytes: 0, nodes: 0 };

export function addCost(...cs: OpCost[]): OpCost {
  return cs.reduce((a, c) => ({ flops: a.flops + c.flops, bytes: a.bytes + c.bytes, mathBytes: a.mathBytes + c.mathBytes, nodes: a.nodes + c.nodes }), ZERO);
}

export function subCost(a: OpCost, b: OpCost): OpCost {
  return { flops: Math.max(0, a.flops - b.flops), bytes: Math.max(0, a.bytes - b.bytes), mathBytes: Math.max(0, a.mathBytes - b.mathBytes), nodes: Math.max(0, a.nodes - b.nodes) };
}

export function scaleCost(c: OpCost, k: number): OpCost {
  return { flops: c.flops * k, bytes: c.bytes * k, mathBytes: c.mathBytes * k, nodes: c.nodes * k };
}

const FREE = new Set(['Reshape', 'Shape', 'Identity', 'Unsqueeze', 'Squeeze', 'Constant', 'ConstantOfShape']);
const MATMUL = new Set(['MatMul', 'MatMulNBits', 'Gemm']);
const TRANSCENDENTAL = new Set(['Softmax', 'LogSoftmax', 'Exp', 'Log', 'Sigmoid', 'Tanh', 'Erf', 'Pow', 'SoftmaxCrossEntropyLoss']);

/** Concrete shapes of a graph's values, with `batch` and `seq` bound and -1 reshapes resolved by element count. */
export class ConcreteShapes {
  private readonly cache = new Map<string, number[]>();
  /** Values whose shape could not be made concrete (counted as 1 per unknown dim). */
  unresolved = 0;
  constructor(
    private readonly g: Graph,
    private readonly dims: Record<string, number>,
  ) {}

  of(value: string): number[] {
    const hit = this.cache.get(value);
    if (hit) return hit;
    const shape = this.g.info(value).shape;
    let out = shape.map((d) => (typeof d === 'number' ? d : d !== null && d in this.dims ? this.dims[d] : NaN));
    // A sliced or gathered dim keeps its input's size at the same axis (seq - 1 counts as seq).
    const p = this.g.producer(value);
    const first = p && p.op !== 'Reshape' && p.op !== 'Transpose' && p.inputs[0] ? this.g.info(p.inputs[0]).shape : null;
    if (p && first && first.length === out.length) {
      const inShape = this.of(p.inputs[0]);
      out = out.map((d, i) => (Number.isNaN(d) ? inShape[i] : d));
    }
    const unknown = out.filter((d) => Number.isNaN(d)).length;
    if (unknown === 1) {
      const total = this.inputCount(value);
      const known = out.filter((d) => !Number.isNaN(d)).reduce((a, b) => a * b, 1);
      out = out.map((d) => (Number.isNaN(d) ? (total !== null && known > 0 ? total / known : 1) : d));
    } else if (unknown > 1) {
      this.unresolved++;
      out = out.map((d) => (Number.isNaN(d) ? 1 : d));
    }
    this.cache.set(value, out);
    return out;
  }

  numel(value: string): number {
    return this.of(value).reduce((a, b) => a * b, 1);
  }

  /** Element count of a value whose shape has one unknown dim: layout ops keep their input's count. */
  private inputCount(value: string): number | null {
    const p = this.g.producer(value);
    if (!p) return null;
    if (p.op === 'Reshape' || p.op === 'Transpose' || p.op === 'Identity' || p.op === 'Unsqueeze' || p.op === 'Squeeze') return this.numel(p.inputs[0]);
    return null;
  }
}

export function nodeCost(g: Graph, n: Node, shapes: ConcreteShapes): OpCost {
  if (FREE.has(n.op)) return ZERO;
  if (MATMUL.has(n.op)) {
    const out = shapes.numel(n.outputs[0]);
    const k = n.op === 'MatMulNBits' ? (n.attrs.K as number) : shapes.of(n.inputs[0]).at(-1)!;
    return { flops: 2 * out * k, bytes: 0, mathBytes: 0, nodes: 1 };
  }
  let bytes = 0;
  for (const v of [...n.inputs, ...n.outputs]) if (v) bytes += shapes.numel(v) * BYTES_PER_ELEMENT[g.info(v).dtype];
  if (n.op === 'GroupQueryAttention') {
    const [b, t, width] = shapes.of(n.inputs[0]);
    const keys = shapes.of(n.inputs[1])[1];
    const heads = n.attrs.num_heads as number;
    const scores = b * heads * t * keys;
    return { flops: 4 * scores * (width / heads), bytes: bytes + 8 * scores, mathBytes: 8 * scores, nodes: 1 };
  }
  return { flops: 0, bytes, mathBytes: TRANSCENDENTAL.has(n.op) ? bytes : 0, nodes: 1 };
}

/**
 * Nodes whose inputs are all constant (frozen weights, initializers, or outputs of such nodes): ONNX
 * Runtime folds them when the session is built (e.g. Wᵀ of a frozen W), so they cost nothing per run.
 */
export function foldedNodes(g: Graph, nodes: readonly Node[], frozen: ReadonlySet<string>): Set<Node> {
  const constant = new Set<string>([...frozen, ...g.initializers.keys()]);
  const folded = new Set<Node>();
  for (const n of nodes) {
    if (n.op === 'Shape' || !n.inputs.every((i) => i === '' || constant.has(i))) continue;
    folded.add(n);
    n.outputs.forEach((o) => constant.add(o));
  }
  return folded;
}

/**
 * Nodes ONNX Runtime's CPU and CUDA graph optimizers fuse into a neighbouring MatMul, so they never run:
 * a Transpose of the last two axes whose every consumer is a MatMul (MatMulTransposeFusion → FusedMatMul
 * transA/transB), and a Mul or Div by a scalar constant on a MatMul's only output or feeding only MatMuls
 * (MatMulScaleFusion → FusedMatMul alpha). LoRA's Aᵀ, Bᵀ and α/r scale, attention's Kᵀ and 1/√d are such
 * nodes. Counted as free in time only: `skip` (folded nodes) is left out.
 */
export function fusedNodes(g: Graph, nodes: readonly Node[], skip: ReadonlySet<Node> = new Set()): Set<Node> {
  const consumers = new Map<string, Node[]>();
  for (const n of nodes) for (const i of n.inputs) if (i) consumers.set(i, [...(consumers.get(i) ?? []), n]);
  const onlyMatMuls = (v: string) => {
    const c = consumers.get(v) ?? [];
    return c.length > 0 && c.every((m) => m.op === 'MatMul') && !g.outputs.includes(v);
  };
  const scalar = (v: string) => g.initializers.get(v)?.dims.reduce((a, b) => a * b, 1) === 1;
  const fused = new Set<Node>();
  for (const n of nodes) {
    if (skip.has(n)) continue;
    if (n.op === 'Transpose') {
      const perm = n.attrs.perm as number[] | undefined;
      const r = perm?.length ?? 0;
      const swapsLast = !!perm && r >= 2 && perm[r - 1] === r - 2 && perm[r - 2] === r - 1 && perm.slice(0, r - 2).every((p, i) => p === i);
      if (swapsLast && onlyMatMuls(n.outputs[0])) fused.add(n);
    } else if ((n.op === 'Mul' || n.op === 'Div') && n.inputs.length === 2) {
      const k = n.op === 'Div' ? (scalar(n.inputs[1]) ? 1 : -1) : scalar(n.inputs[1]) ? 1 : scalar(n.inputs[0]) ? 0 : -1;
      if (k < 0) continue;
      const x = n.inputs[1 - k];
      const fromMatMul = g.producer(x)?.op === 'MatMul' && consumers.get(x)?.length === 1 && !g.outputs.includes(x);
      if (fromMatMul || onlyMatMuls(n.outputs[0])) fused.add(n);
    }
  }
  return fused;
}

/** Run-time cost of `nodes` (folded constants excluded). */
export function nodesCost(g: Graph, nodes: readonly Node[], dims: Record<string, number>, folded: ReadonlySet<Node> = new Set()): OpCost {
  const shapes = new ConcreteShapes(g, dims);
  return addCost(...nodes.filter((n) => !folded.has(n)).map((n) => nodeCost(g, n, shapes)));
}

/**
 * Peak bytes of values alive at once when the nodes run in order, each value freed after its last
 * consumer (ONNX Runtime's memory planner does the same; graph inputs and folded constants are not counted).
 */
export function livePeakBytes(g: Graph, nodes: readonly Node[], dims: Record<string, number>, folded: ReadonlySet<Node> = new Set()): number {
  const shapes = new ConcreteShapes(g, dims);
  const run = nodes.filter((n) => !folded.has(n));
  const last = new Map<string, number>();
  run.forEach((n, k) => n.inputs.forEach((i) => i && last.set(i, k)));
  g.outputs.forEach((o) => last.set(o, run.length));
  const size = new Map<string, number>();
  let live = 0;
  let peak = 0;
  run.forEach((n, k) => {
    for (const o of n.outputs) {
      // Shape-only ops alias their input's buffer.
      const b = FREE.has(n.op) ? 0 : shapes.numel(o) * BYTES_PER_ELEMENT[g.info(o).dtype];
      size.set(o, b);
      live += b;
    }
    peak = Math.max(peak, live);
    for (const i of new Set(n.inputs)) if (i && last.get(i) === k && size.has(i)) live -= size.get(i)!;
  });
  return peak;
}

/** Bytes of the values `producers` make that some node of `consumers` reads (activations saved for backward). */
export function savedBytes(g: Graph, producers: readonly Node[], consumers: readonly Node[], dims: Record<string, number>, folded: ReadonlySet<Node> = new Set()): number {
  const shapes = new ConcreteShapes(g, dims);
  const read = new Set(consumers.filter((n) => !folded.has(n)).flatMap((n) => n.inputs));
  let bytes = 0;
  for (const n of producers) if (!folded.has(n) && !FREE.has(n.op)) for (const o of n.outputs) if (read.has(o)) bytes += shapes.numel(o) * BYTES_PER_ELEMENT[g.info(o).dtype];
  return bytes;
}

/** The largest single value the nodes produce (a forward run's working set is a few of these). */
export function largestValueBytes(g: Graph, nodes: readonly Node[], dims: Record<string, number>, folded: ReadonlySet<Node> = new Set()): number {
  const shapes = new ConcreteShapes(g, dims);
  let max = 0;
  for (const n of nodes) if (!folded.has(n)) for (const o of n.outputs) max = Math.max(max, shapes.numel(o) * BYTES_PER_ELEMENT[g.info(o).dtype]);
  return max;
}
