// The serving graphs: a run of decoder blocks that reads and extends a KV cache, and the head. One
// graph serves prefill (t prompt tokens, empty past) and decode (one token per row, past of T slots).
// Cache tensors are laid out as onnxruntime-genai and transformers.js do: past_key_values.<k>.key
// [batch, kv_heads, past, head_dim] in, present.<k>.key [batch, kv_heads, past + t, head_dim] out.
import type { ModelConfig } from '../model/hf/config.ts';
import { Graph } from '../model/graph/graph.ts';
import { decoderBlock } from '../model/llama/block.ts';
import { rmsNorm } from '../model/llama/layers.ts';
import type { ParamBinder } from '../model/llama/params.ts';

export const SERVE_IO = {
  hidden: 'hidden',
  hiddenOut: 'hidden_out',
  /** [batch, 1, t, head_dim]: each row's own positions. */
  cos: 'rope_cos',
  sin: 'rope_sin',
  /** [batch, 1, 1, t, past + t] additive mask: padding, causality and the sliding window. */
  mask: 'attn_mask',
  logits: 'logits',
  pastKey: (k: number) => `past_key_values.${k}.key`,
  pastValue: (k: number) => `past_key_values.${k}.value`,
  presentKey: (k: number) => `present.${k}.key`,
  presentValue: (k: number) => `present.${k}.value`,
} as const;

/** Blocks `layers` (names model.layers.<n>, in order) over a KV cache; hidden states in and out. */
export function buildCachedBlocks(config: ModelConfig, layers: readonly number[], p: ParamBinder): Graph {
  const { hiddenSize: h, headDim: d, numKvHeads: nkv } = config;
  const g = new Graph(`serve_blocks_${layers[0]}_${layers[layers.length - 1]}`);
  const local = new Map(layers.map((n, k) => [`model.layers.${n}.self_attn`, k]));
  let x = g.input(SERVE_IO.hidden, 'float32', ['batch', 'seq', h]);
  const io = {
    cos: g.input(SERVE_IO.cos, 'float32', ['batch', 1, 'seq', d]),
    sin: g.input(SERVE_IO.sin, 'float32', ['batch', 1, 'seq', d]),
    mask: g.input(SERVE_IO.mask, 'float32', ['batch', 1, 1, 'seq', 'total']),
    cache: (gg: Graph, prefix: string, key: string, value: string) => {
      const k = local.get(prefix)!;
      const pastK = gg.input(SERVE_IO.pastKey(k), 'float32', ['batch', nkv, 'past', d]);
      const pastV = gg.input(SERVE_IO.pastValue(k), 'float32', ['batch', nkv, 'past', d]);
      const presentK = gg.rename(gg.op('Concat', [pastK, key], { axis: 2 }), SERVE_IO.presentKey(k));
      const presentV = gg.rename(gg.op('Concat', [pastV, value], { axis: 2 }), SERVE_IO.presentValue(k));
      gg.output(presentK);
      gg.output(presentV);
      return { key: presentK, value: presentV };
    },
  };
  for (const n of layers) x = decoderBlock(g, p, x, n, config, io);
  g.outputs.unshift(g.rename(x, SERVE_IO.hiddenOut));
  return g;
}

/** Final norm and LM head on one hidden state per row: [batch, hidden] -> logits [batch, vocab]. */
export function buildHead(config: ModelConfig, p: ParamBinder): Graph {
  const g = new Graph('serve_head');
  const h = config.hiddenSize;
  const x = g.input(SERVE_IO.hidden, 'float32', ['batch', h]);
  const normed = rmsNorm(g, p, x, 'model.norm', config);
  const headName = config.tieWordEmbeddings ? 'model.embed_tokens.weight' : 'lm_head.weight';
  const w = p.get(g, headName, [config.vocabSize, h]);
  g.output(g.rename(g.op('MatMul', [normed, g.op('Transpose', [w], { perm: [1, 0] })]), SERVE_IO.logits));
  return g;
}
