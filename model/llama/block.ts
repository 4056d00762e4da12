// One decoder block: pre-norm attention and pre-norm SwiGLU, each with a residual.
import type { ModelConfig } from '../hf/config.ts';
import type { Graph } from '../graph/graph.ts';
import { attention, type AttentionInputs } from './attention.ts';
import { rmsNorm, swiGlu } from './layers.ts';
import type { ParamBinder } from './params.ts';

/** `noGrad`: no gradient passes through this block (forward-only kernels may run it). */
export function decoderBlock(g: Graph, p: ParamBinder, x: string, layer: number, config: ModelConfig, io: AttentionInputs, noGrad = false): string {
  const prefix = `model.layers.${layer}`;
  const attn = attention(g, p, rmsNorm(g, p, x, `${prefix}.input_layernorm`, config), `${prefix}.self_attn`, config, io, noGrad);
  const h = g.op('Add', [x, attn]);
  const mlp = swiGlu(g, p, rmsNorm(g, p, h, `${prefix}.post_attention_layernorm`, config), `${prefix}.mlp`, config);
  return g.op('Add', [h, mlp]);
}
