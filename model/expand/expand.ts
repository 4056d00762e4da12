// LLaMA Pro block expansion as pure name arithmetic: which original block each expanded layer comes
// from, and how an expanded tensor is read out of the original checkpoint. Nothing here touches disk,
// so a worker can expand its own block range on the fly and a full export can share the same rules.
import type { ModelConfig } from '../hf/config.ts';
import type { RawTensor } from '../hf/safetensors-read.ts';
import type { TensorToWrite } from '../hf/safetensors-write.ts';
import { splitLayerName } from '../llama/param-specs.ts';

export interface ExpandedLayer {
  kind: 'original' | 'new';
  /** The original block this layer is (kind 'original') or is a copy of (kind 'new'). */
  source: number;
}

/** Entry i describes layer i of the expanded stack. */
export type ExpansionPlan = readonly ExpandedLayer[];

/** The numbers (layers, new blocks, groups) do not make an interleaved layout. */
export class ExpansionError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ExpansionError';
  }
}

/** Group counts G that planExpansion accepts for L layers and P new blocks: common divisors of L and P. */
export function validGroupCounts(numLayers: number, newBlocks: number): number[] {
  const out: number[] = [];
  for (let g = 1; g <= Math.min(numLayers, newBlocks); g++) if (numLayers % g === 0 && newBlocks % g === 0) out.push(g);
  return out;
}

/**
 * Interleaved expansion: the L blocks form G groups of L/G, and P/G copies of each group's last block
 * follow it. Copying the last block of a group (not the first) is what LLaMA Pro and LLaMA-Factory do.
 */
export function planExpansion(numLayers: number, newBlocks: number, groups: number = newBlocks): ExpandedLayer[] {
  const isPos = (n: number) => Number.isInteger(n) && n > 0;
  if (!isPos(numLayers)) throw new ExpansionError(`the model must have a positive whole number of layers, got ${numLayers}`);
  if (!isPos(newBlocks)) throw new ExpansionError(`the number of new blocks must be a positive integer, got ${newBlocks}`);
  if (!isPos(groups)) throw new ExpansionError(`the number of groups must be a positive integer, got ${groups}`);
  if (numLayers % groups !== 0 || newBlocks % groups !== 0) {
    const why = [
      numLayers % groups !== 0 ? `${numLayers} layers do not split into ${groups} equal groups` : '',
      newBlocks % groups !== 0 ? `${newBlocks} new blocks do not spread evenly over ${groups} groups` : '',
    ].filter(Boolean).join(' and ');
    const valid = validGroupCounts(numLayers, newBlocks);
    // Valid P for this G (multiples of G) only exist when G divides L.
    const blocksHint = numLayers % groups === 0 ? `, or keep ${groups} groups with a multiple of ${groups} new blocks` : '';
    throw new ExpansionError(`${why}; with ${numLayers} layers and ${newBlocks} new blocks the valid group counts are ${valid.join(', ')}${blocksHint}`);
  }
  const perGroup = numLayers / groups;
  const copies = newBlocks / groups;
  const plan: ExpandedLayer[] = [];
  for (let i = 0; i < numLayers; i++) {
    plan.push({ kind: 'original', source: i });
    if ((i + 1) % perGroup === 0) for (let c = 0; c < copies; c++) plan.push({ kind: 'new', source: i });
  }
  return plan;
}

export function newLayerIndices(plan: ExpansionPlan): number[] {
  return plan.flatMap((l, i) => (l.kind === 'new' ? [i] : []));
}

/** The expanded index of every original block, indexed by original block. */
export function originalPositions(plan: ExpansionPlan): number[] {
  const out: number[] = [];
  plan.forEach((l, i) => {
    if (l.kind === 'original') out[l.source] = i;
  });
  return out;
}

/** The config of the expanded model; only the depth changes. */
export function expandConfig(config: ModelConfig, plan: ExpansionPlan): ModelConfig {
  checkPlanFits(plan, config.numLayers);
  return { ...config, numLayers: plan.length };
}

/**
 * config.json fields indexed by layer, carried to the expanded stack so each layer keeps its original's
 * attention kind: `layer_types` per layer, and Qwen2's `max_window_layers` (sliding attention from that
 * layer up), which stays a threshold because the plan never moves a block below an earlier one.
 */
export function expandRawConfig(raw: Record<string, unknown>, plan: ExpansionPlan): Record<string, unknown> {
  const out = { ...raw };
  if (Array.isArray(raw.layer_types)) {
    const types = raw.layer_types;
    const numLayers = plan.filter((l) => l.kind === 'original').length;
    // A list of the wrong length was already stale; toHfConfig drops it.
    if (types.length === numLayers) out.layer_types = plan.map((l) => types[l.source]);
  }
  if (typeof raw.max_window_layers === 'number') {
    const threshold = raw.max_window_layers;
    const first = plan.findIndex((l) => l.source >= threshold);
    out.max_window_layers = first === -1 ? plan.length : first;
  }
  return out;
}

// The two projections that write into the residual stream; with them zero a block adds nothing.
const ZEROED = new Set(['self_attn.o_proj.weight', 'self_attn.o_proj.bias', 'mlp.down_proj.weight', 'mlp.down_proj.bias']);
const OUTPUT_PROJ = /^(self_attn\.o_proj|mlp\.down_proj)\./;

function checkPlanFits(plan: ExpansionPlan, numLayers: number): void {
  const originals = plan.filter((l) => l.kind === 'original').length;
  if (originals !== numLayers || plan.some((l) => l.source >= numLayers)) {
    throw new Error(`the expansion plan is for a ${originals}-layer model, not ${numLayers} layers`);
  }
}

function checkZeroable(name: string, rest: string): void {
  // Zeroing a packed quantized weight (GPTQ qweight, scales, ...) would not give a zero projection.
  if (OUTPUT_PROJ.test(rest) && !ZEROED.has(rest)) {
    throw new Error(`cannot zero '${name}': only float weight and bias tensors can be expanded; dequantize the checkpoint first`);
  }
}

/** Where an expanded model's tensor comes from: the original tensor's name, and whether to zero it. */
export function expandedSource(name: string, plan: ExpansionPlan): { name: string; zero: boolean } {
  const m = splitLayerName(name);
  if (!m) return { name, zero: false };
  const index = m.layer;
  const layer = plan[index];
  if (!layer) throw new RangeError(`'${name}': layer ${index} is outside the expanded model's ${plan.length} layers`);
  const rest = m.rest;
  if (layer.kind === 'original') return { name: `model.layers.${layer.source}.${rest}`, zero: false };
  checkZeroable(name, rest);
  return { name: `model.layers.${layer.source}.${rest}`, zero: ZEROED.has(rest) };
}

/** The expanded-model names an original tensor feeds: itself outside the layers, every copy inside. */
export function expandedTargets(name: string, plan: ExpansionPlan): string[] {
  const m = splitLayerName(name);
  if (!m) return [name];
  return plan.flatMap((l, i) => (l.source === m.layer ? [`model.layers.${i}.${m.rest}`] : []));
}

/**
 * A float32 loader for the expanded model over a loader for the original, so a worker reads only the
 * original tensors its block range needs. Zeroed tensors still read their source once, for its size.
 */
export function expandedLoader(load: (name: string) => Float32Array, plan: ExpansionPlan): (name: string) => Float32Array {
  return (name) => {
    const src = expandedSource(name, plan);
    const data = load(src.name);
    return src.zero ? new Float32Array(data.length) : data;
  };
}

/** The same mapping over raw tensors, which keeps the stored dtype (bf16 stays bf16, bit for bit). */
export function expandedRawLoader(readRaw: (name: string) => RawTensor, plan: ExpansionPlan): (name: string) => RawTensor {
  return (name) => {
    const src = expandedSource(name, plan);
    const t = readRaw(src.name);
    return src.zero ? { dtype: t.dtype, shape: t.shape, bytes: new Uint8Array(t.bytes.length) } : t;
  };
}

/** What expandWeights reads from: any checkpoint. */
export interface TensorSource {
  names(): string[];
  readRaw(name: string): RawTensor;
}

/**
 * Every tensor of the expanded model, in layer order (embedding, layers 0..L+P-1, then the rest), with
 * the stored dtypes. Each original tensor is read once; copies share its bytes and zeroed tensors of
 * one size share one buffer, so memory is the original model's size plus a few zero buffers.
 */
export function expandWeights(source: TensorSource, plan: ExpansionPlan): TensorToWrite[] {
  const sourceNames = source.names();
  const layerCount = new Set(sourceNames.flatMap((n) => splitLayerName(n)?.layer ?? [])).size;
  checkPlanFits(plan, layerCount);
  const cache = new Map<string, RawTensor>();
  const zeros = new Map<number, Uint8Array>();
  const read = (name: string): RawTensor => {
    let t = cache.get(name);
    if (!t) cache.set(name, (t = source.readRaw(name)));
    return t;
  };
  const load = (name: string): RawTensor => {
    const src = expandedSource(name, plan);
    const t = read(src.name);
    if (!src.zero) return t;
    let z = zeros.get(t.bytes.length);
    if (!z) zeros.set(t.bytes.length, (z = new Uint8Array(t.bytes.length)));
    return { dtype: t.dtype, shape: t.shape, bytes: z };
  };
  const rank = (name: string): number => {
    if (name.startsWith('model.embed_tokens.')) return -1;
    return splitLayerName(name)?.layer ?? plan.length;
  };
  // Stable sort: within a layer, tensors keep the source's order.
  const names = sourceNames.flatMap((n) => expandedTargets(n, plan)).sort((a, b) => rank(a) - rank(b));
  return names.map((name) => {
    const t = load(name);
    return { name, dtype: t.dtype, shape: t.shape, data: t.bytes };
  });
}
