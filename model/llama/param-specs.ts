// The parameter inventory of a Llama-family model under Hugging Face tensor names: what a checkpoint
// holds, in forward order, with shapes derived from the config.
import type { ModelConfig } from '../hf/config.ts';

export type ParamKind = 'embed' | 'norm' | 'linear_weight' | 'linear_bias' | 'lm_head';

export interface ParamSpec {
  name: string;
  shape: number[];
  /** Decoder layer index, or the part of the model outside the layers. */
  layer: number | 'embed' | 'norm' | 'head';
  kind: ParamKind;
}

function linear(prefix: string, layer: number, out: number, inp: number, bias: boolean): ParamSpec[] {
  const specs: ParamSpec[] = [{ name: `${prefix}.weight`, shape: [out, inp], layer, kind: 'linear_weight' }];
  if (bias) specs.push({ name: `${prefix}.bias`, shape: [out], layer, kind: 'linear_bias' });
  return specs;
}

/** The tensors of decoder layer `n`, in forward order (weights are [out, in], as torch stores them). */
export function layerParamSpecs(config: ModelConfig, n: number): ParamSpec[] {
  if (!Number.isInteger(n) || n < 0 || n >= config.numLayers) {
    throw new RangeError(`layerParamSpecs: layer ${n} is outside 0..${config.numLayers - 1}`);
  }
  const h = config.hiddenSize;
  const q = config.numHeads * config.headDim;
  const kv = config.numKvHeads * config.headDim;
  const inter = config.intermediateSize;
  const p = `model.layers.${n}`;
  return [
    { name: `${p}.input_layernorm.weight`, shape: [h], layer: n, kind: 'norm' },
    ...linear(`${p}.self_attn.q_proj`, n, q, h, config.qkvBias),
    ...linear(`${p}.self_attn.k_proj`, n, kv, h, config.qkvBias),
    ...linear(`${p}.self_attn.v_proj`, n, kv, h, config.qkvBias),
    ...linear(`${p}.self_attn.o_proj`, n, h, q, config.oBias),
    { name: `${p}.post_attention_layernorm.weight`, shape: [h], layer: n, kind: 'norm' },
    ...linear(`${p}.mlp.gate_proj`, n, inter, h, config.mlpBias),
    ...linear(`${p}.mlp.up_proj`, n, inter, h, config.mlpBias),
    ...linear(`${p}.mlp.down_proj`, n, h, inter, config.mlpBias),
  ];
}

/** Every tensor of the model in forward order; `lm_head.weight` only when it is not tied to the embedding. */
export function paramSpecs(config: ModelConfig): ParamSpec[] {
  const specs: ParamSpec[] = [
    { name: 'model.embed_tokens.weight', shape: [config.vocabSize, config.hiddenSize], layer: 'embed', kind: 'embed' },
  ];
  for (let n = 0; n < config.numLayers; n++) specs.push(...layerParamSpecs(config, n));
  specs.push({ name: 'model.norm.weight', shape: [config.hiddenSize], layer: 'norm', kind: 'norm' });
  if (!config.tieWordEmbeddings) {
    specs.push({ name: 'lm_head.weight', shape: [config.vocabSize, config.hiddenSize], layer: 'head', kind: 'lm_head' });
  }
  return specs;
}

/** Number of scalar parameters (a tied head counts once, as in transformers' num_parameters()). */
export function paramCount(config: ModelConfig): number {
  let total = 0;
  for (const spec of paramSpecs(config)) total += spec.shape.reduce((a, b) => a * b, 1);
  return total;
}

const LAYER_NAME = /^model\.layers\.(\d+)\.(.+)$/;

/**
 * The one parser of decoder-layer tensor names: `model.layers.<n>.<rest>` (a weight, a bias or a LoRA
 * factor of layer n) as { layer: n, rest }, or null for a name outside the layers.
 */
export function splitLayerName(name: string): { layer: number; rest: string } | null {
  const m = LAYER_NAME.exec(name);
  return m ? { layer: Number(m[1]), rest: m[2] } : null;
}

/** The part of the model a tensor (weight or LoRA factor) belongs to, under Hugging Face names. */
export function layerOf(name: string): ParamSpec['layer'] {
  const inLayer = splitLayerName(name);
  if (inLayer) return inLayer.layer;
  if (name.startsWith('model.embed_tokens.')) return 'embed';
  if (name.startsWith('model.norm.')) return 'norm';
  if (name.startsWith('lm_head.')) return 'head';
  throw new Error(`'${name}' is not a tensor name of a Llama-family model (model.embed_tokens.*, model.layers.<n>.*, model.norm.*, lm_head.*)`);
}
