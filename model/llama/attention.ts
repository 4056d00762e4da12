// Causal grouped-query attention. The query heads of each kv head are stacked as rows of one GEMM
// ([b, kv, group·t, d]), so the shared keys and values are used as they are, never copied per query head.
import type { ModelConfig } from '../hf/config.ts';
import type { Graph } from '../graph/graph.ts';
import { linear } from './layers.ts';
import type { ParamBinder } from './params.ts';
import { kernelChoices } from '../graph/kernels.ts';
import { applyRope, halfTables } from './rope.ts';

export interface AttentionInputs {
  /** [seq, headDim] rotary tables. */
  cos: string;
  sin: string;
  /** [seq, seq] additive causal mask (0 or a large negative); with a cache, [batch, 1, 1, seq, past + seq]. */
  mask: string;
  /**
   * Serving: joins this step's rotated keys and values [b, kv, t, d] to the cached ones and returns the
   * whole [b, kv, past + t, d] (kv heads only, as GQA caches keep them).
   */
  cache?: (g: Graph, prefix: string, key: string, value: string) => { key: string; value: string };
}

/** `noGrad`: no gradient will pass through this block, so a forward-only kernel may compute it. */
export function attention(g: Graph, p: ParamBinder, x: string, prefix: string, config: ModelConfig, io: AttentionInputs, noGrad = false): string {
  const { hiddenSize: h, numHeads: nh, numKvHeads: nkv, headDim: d } = config;
  if (noGrad && fusedApplies(g, config, io)) return fusedAttention(g, p, x, prefix, config, io);
  const group = nh / nkv;
  const heads = (v: string, n: number) => g.op('Transpose', [g.op('Reshape', [v, g.i64([0, 0, n, d])])], { perm: [0, 2, 1, 3] });
  const q = heads(linear(g, p, x, `${prefix}.q_proj`, nh * d, h, config.qkvBias), nh);
  const k = heads(linear(g, p, x, `${prefix}.k_proj`, nkv * d, h, config.qkvBias), nkv);
  const v = heads(linear(g, p, x, `${prefix}.v_proj`, nkv * d, h, config.qkvBias), nkv);

  const qr = g.op('Mul', [applyRope(g, q, io.cos, io.sin, d), g.constant(1 / Math.sqrt(d), 'float32')]);
  const kr = applyRope(g, k, io.cos, io.sin, d);
  const kv = io.cache ? io.cache(g, prefix, kr, v) : { key: kr, value: v };
  const ctx = kernelChoices().stackedGqa ? stackedAttention(g, qr, kv, io.mask, nkv, group, d) : broadcastAttention(g, qr, kv, io.mask, nh, nkv, group, d);
  const merged = g.op('Reshape', [g.op('Transpose', [ctx], { perm: [0, 2, 1, 3] }), g.i64([0, 0, nh * d])]);
  return linear(g, p, merged, `${prefix}.o_proj`, h, nh * d, config.oBias);
}

/**
 * GroupQueryAttention needs a plain causal mask (the [t, t] one, no sliding window), position tables
 * of one sequence ([t, d]), no cache, and (ONNX Runtime 1.30's CPU kernel) a head size that is a
 * multiple of 8; elsewhere the standard ops run.
 */
function fusedApplies(g: Graph, config: ModelConfig, io: AttentionInputs): boolean {
  return kernelChoices().fusedAttention && !io.cache && config.slidingWindow === null && config.headDim % 8 === 0 && g.info(io.mask).shape.length === 2 && g.info(io.cos).shape.length === 2;
}

/** Causal GQA as one kernel on [b, t, heads·d] projections, rotated by RotaryEmbedding first. */
function fusedAttention(g: Graph, p: ParamBinder, x: string, prefix: string, config: ModelConfig, io: AttentionInputs): string {
  const { hiddenSize: h, numHeads: nh, numKvHeads: nkv, headDim: d } = config;
  const t = halfTables(g, io.cos, io.sin, d);
  const rotate = (v: string, heads: number) => g.op('RotaryEmbedding', [v, t.offset, t.cos, t.sin], { interleaved: 0, num_heads: heads }, 'com.microsoft');
  const q = rotate(linear(g, p, x, `${prefix}.q_proj`, nh * d, h, config.qkvBias), nh);
  const k = rotate(linear(g, p, x, `${prefix}.k_proj`, nkv * d, h, config.qkvBias), nkv);
  const v = linear(g, p, x, `${prefix}.v_proj`, nkv * d, h, config.qkvBias);
  const lens = sequenceLengths(g, x);
  const [ctx] = g.opN('GroupQueryAttention', [q, k, v, '', '', lens.lastIndex, lens.total], 3, { num_heads: nh, kv_num_heads: nkv, scale: { float: 1 / Math.sqrt(d) } }, 'com.microsoft');
  return linear(g, p, ctx, `${prefix}.o_proj`, h, nh * d, config.oBias);
}

const lengths = new WeakMap<Graph, { lastIndex: string; total: string }>();

/** GroupQueryAttention's lengths for full rows of x [b, t, h]: t − 1 per row (int32 [b]) and t. */
function sequenceLengths(g: Graph, x: string): { lastIndex: string; total: string } {
  let l = lengths.get(g);
  if (!l) {
    const shape = g.op('Shape', [x]);
    const total = g.op('Cast', [g.op('Gather', [shape, g.constant(1, 'int64')], { axis: 0 })], { to: 6 });
    const rows = g.op('Slice', [shape, g.i64([0]), g.i64([1]), g.i64([0])]);
    l = { lastIndex: g.op('Expand', [g.op('Sub', [total, g.constant(1, 'int32')]), rows]), total };
    lengths.set(g, l);
  }
  return l;
}

/**
 * Query heads of one kv head stacked as rows ([b, kv, group·t, d], a free reshape of [b, heads, t, d]):
 * every score and context product is one GEMM per (batch, kv head), and the key and value gradients
 * need no sum over a broadcast group axis. Returns [b, heads, t, d].
 */
function stackedAttention(g: Graph, q: string, kv: { key: string; value: string }, mask: string, nkv: number, group: number, d: number): string {
  const q4 = g.op('Reshape', [q, g.i64([0, nkv, -1, d])]);
  const scores = g.op('Add', [g.op('MatMul', [q4, g.op('Transpose', [kv.key], { perm: [0, 1, 3, 2] })]), groupedMask(g, mask, group)]);
  const probs = g.op('Softmax', [scores], { axis: -1 });
  // Shaped like the queries, so that the builder keeps naming t.
  return g.op('Reshape', [g.op('MatMul', [probs, kv.value]), g.op('Shape', [q])]);
}

/** The unstacked form: [b, kv, group, t, d] queries against keys and values broadcast over the group. */
function broadcastAttention(g: Graph, q: string, kv: { key: string; value: string }, mask: string, nh: number, nkv: number, group: number, d: number): string {
  const q5 = g.op('Reshape', [q, g.i64([0, nkv, group, -1, d])]);
  const k5 = g.op('Unsqueeze', [kv.key, g.i64([2])]);
  const v5 = g.op('Unsqueeze', [kv.value, g.i64([2])]);
  const scores = g.op('Add', [g.op('MatMul', [q5, g.op('Transpose', [k5], { perm: [0, 1, 2, 4, 3] })]), mask]);
  const probs = g.op('Softmax', [scores], { axis: -1 });
  return g.op('Reshape', [g.op('MatMul', [probs, v5]), g.i64([0, nh, -1, d])]);
}

const tiledMasks = new WeakMap<Graph, Map<string, string>>();

/**
 * The additive mask repeated for each query head of a group, rows in the order of the stacked
 * queries: [t, T] → [group·t, T], or per row [b, 1, 1, t, T] → [b, 1, group·t, T]. Built once per
 * graph and mask (a few KB), shared by every block.
 */
function groupedMask(g: Graph, mask: string, group: number): string {
  let byMask = tiledMasks.get(g);
  if (!byMask) tiledMasks.set(g, (byMask = new Map()));
  const cached = byMask.get(mask);
  if (cached) return cached;
  const rank = g.info(mask).shape.length;
  let tiled: string;
  if (rank === 2) tiled = group === 1 ? mask : g.op('Tile', [mask, g.i64([group, 1])]);
  else if (rank === 5) {
    const m4 = g.op('Squeeze', [mask, g.i64([2])]);
    tiled = group === 1 ? m4 : g.op('Tile', [m4, g.i64([1, 1, group, 1])]);
  } else throw new Error(`attention mask of rank ${rank}: expected [t, T] or [b, 1, 1, t, T]`);
  byMask.set(mask, tiled);
  return tiled;
}
