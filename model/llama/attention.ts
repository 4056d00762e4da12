// Causal grouped-query attention. Query heads are grouped per kv head ([b, kv, group, t, d]) so the
// shared keys and values broadcast instead of being copied per query head.
import type { ModelConfig } from '../hf/config.ts';
import type { Graph } from '../graph/graph.ts';
import { linear } from './layers.ts';
import type { ParamBinder } from './params.ts';
import { applyRope } from './rope.ts';

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

export function attention(g: Graph, p: ParamBinder, x: string, prefix: string, config: ModelConfig, io: AttentionInputs): string {
  const { hiddenSize: h, numHeads: nh, numKvHeads: nkv, headDim: d } = config;
  const group = nh / nkv;
  const heads = (v: string, n: number) => g.op('Transpose', [g.op('Reshape', [v, g.i64([0, 0, n, d])])], { perm: [0, 2, 1, 3] });
  const q = heads(linear(g, p, x, `${prefix}.q_proj`, nh * d, h, config.qkvBias), nh);
  const k = heads(linear(g, p, x, `${prefix}.k_proj`, nkv * d, h, config.qkvBias), nkv);
  const v = heads(linear(g, p, x, `${prefix}.v_proj`, nkv * d, h, config.qkvBias), nkv);

  const qr = g.op('Mul', [applyRope(g, q, io.cos, io.sin, d), g.constant(1 / Math.sqrt(d), 'float32')]);
  const kr = applyRope(g, k, io.cos, io.sin, d);
  const kv = io.cache ? io.cache(g, prefix, kr, v) : { key: kr, value: v };
  const q5 = g.op('Reshape', [qr, g.i64([0, nkv, group, -1, d])]);
  const k5 = g.op('Unsqueeze', [kv.key, g.i64([2])]);
  const v5 = g.op('Unsqueeze', [kv.value, g.i64([2])]);

  const scores = g.op('Add', [g.op('MatMul', [q5, g.op('Transpose', [k5], { perm: [0, 1, 2, 4, 3] })]), io.mask]);
  const probs = g.op('Softmax', [scores], { axis: -1 });
  const ctx = g.op('Reshape', [g.op('MatMul', [probs, v5]), g.i64([0, nh, -1, d])]);
  const merged = g.op('Reshape', [g.op('Transpose', [ctx], { perm: [0, 2, 1, 3] }), g.i64([0, 0, nh * d])]);
  return linear(g, p, merged, `${prefix}.o_proj`, h, nh * d, config.oBias);
}
