// The analytic peak memory of one pipeline rank (or of a single-process run, the whole model as one
// range): the figure bench/memory.ts measures against, and what a planner can size workers with.
//
//   peak = frozen weights as held (4-bit codes, scales and zero points once per process)
//        + 4 B × every tensor that trains in some stage (held as float32 values)
//        + 8 B × the tensors that have trained so far (AdamW m and v stay for later stages)
//        + 4 B × the tensors that train now (their gradient)
//        + activations: per token, each block from the lowest trainable one up keeps
//          4 B × (10·h + 3·kv + 5·m + 2·heads·seq) for its backward, the head 4 B × 3·vocab,
//          for one micro-batch (the backward recomputes from the range input), plus the range
//          input of every micro-batch in flight
//        + one block upcast to float32 when frozen weights are held in half precision or 4 bits
//        + RUNTIME_ALLOWANCE_BYTES (Node, ONNX Runtime, session state; measured once, below)
import type { ModelConfig } from '../model/hf/config.ts';
import type { BlockRange } from '../model/llama/range-graph.ts';
import { paramSpecs, type ParamSpec } from '../model/llama/param-specs.ts';
import { quantized4Bytes } from '../model/quant/quant4.ts';

/**
 * Peak RSS of `propipe train` on a 2-layer, hidden-64 model (weights and activations under 1 MB):
 * 185 MB with onnxruntime-node 1.30 on Node 20 (bench/memory.ts prints the figure of its machine).
 */
export const RUNTIME_ALLOWANCE_BYTES = 190e6;

export interface RankMemoryInput {
  config: ModelConfig;
  range: BlockRange;
  /** Distinct frozen elements the rank holds (LLaMA Pro copies of a base block count once). */
  frozenParams: number;
  /** 4 for fp32, 2 for fp16/bf16. */
  frozenBytesPerParam: number;
  /** Bytes of the frozen linears held in 4 bits (`--quantize 4bit`), once per process; 0 otherwise. */
  frozenQuantizedBytes?: number;
  /** Elements of tensors that train in any stage, held as float32 (LoRA factors included). */
  heldTrainableParams: number;
  /** Elements with AdamW moments: trained in this or an earlier stage. */
  momentParams: number;
  /** Elements that train in the current stage (a gradient each). */
  trainingParams: number;
  /** Blocks of the range whose activations the backward keeps (at or above the lowest trainable block). */
  activationBlocks: number;
  /** Whether the head's logits take part in a backward on this rank. */
  headActivations: boolean;
  microBatch: { batch: number; seq: number };
  /** Micro-batches whose range input is kept until their backward (1 in one process). */
  inFlight: number;
}

export interface RankMemoryEstimate {
  frozenBytes: number;
  trainableBytes: number;
  activationBytes: number;
  runtimeBytes: number;
  totalBytes: number;
}

/** The analytic peak of one rank. */
export function analyticRankPeakBytes(i: RankMemoryInput): RankMemoryEstimate {
  const c = i.config;
  const tokens = i.microBatch.batch * i.microBatch.seq;
  const h = c.hiddenSize;
  const kv = c.numKvHeads * c.headDim;
  const perBlockToken = 4 * (10 * h + 3 * kv + 5 * c.intermediateSize + 2 * c.numHeads * i.microBatch.seq);
  const head = i.headActivations ? 4 * 3 * c.vocabSize * tokens : 0;
  const inputs = i.range.embed ? 0 : 4 * h * tokens * i.inFlight;
  const quantized = i.frozenQuantizedBytes ?? 0;
  const upcast = (i.frozenBytesPerParam < 4 || quantized > 0) && i.range.end > i.range.start ? 4 * blockParams(c) : 0;
  const activationBytes = i.activationBlocks * perBlockToken * tokens + head + inputs + upcast;
  const frozenBytes = i.frozenParams * i.frozenBytesPerParam + quantized;
  const trainableBytes = 4 * i.heldTrainableParams + 8 * i.momentParams + 4 * i.trainingParams;
  const runtimeBytes = RUNTIME_ALLOWANCE_BYTES;
  return { frozenBytes, trainableBytes, activationBytes, runtimeBytes, totalBytes: frozenBytes + trainableBytes + activationBytes + runtimeBytes };
}

function blockParams(c: ModelConfig): number {
  return paramSpecs(c).filter((s) => s.layer === 0).reduce((n, s) => n + numel(s), 0);
}

function numel(s: ParamSpec): number {
  return s.shape.reduce((a, b) => a * b, 1);
}

/** Whether a range binds tensor `s` (a tied head binds the embedding on the last rank too). */
export function rangeUses(c: ModelConfig, range: BlockRange, s: ParamSpec): boolean {
  if (typeof s.layer === 'number') return s.layer >= range.start && s.layer < range.end;
  if (s.layer === 'embed') return range.embed || (range.head && c.tieWordEmbeddings);
  return range.head;
}

export interface RankParams {
  config: ModelConfig;
  range: BlockRange;
  /** Tensors that train in any stage, in this or an earlier stage, and in this one (HF names, LoRA factors aside). */
  everTrainable: ReadonlySet<string>;
  trainedSoFar: ReadonlySet<string>;
  trainable: ReadonlySet<string>;
  /** Linear layers (e.g. model.layers.3.self_attn.q_proj) with a LoRA adapter of rank `loraRank`; all train. */
  loraLinears?: readonly string[];
  loraRank?: number;
  /** Base tensor a stack tensor is read from (LLaMA Pro copies); identity by default. */
  sourceOf?: (name: string) => string;
  /** `--quantize 4bit`: frozen linear weights are held as 4-bit codes of this block size. */
  quantBlockSize?: number | null;
}

/** Counts of RankMemoryInput from tensor names: which tensors are frozen, held, and training. */
export function rankParamCounts(p: RankParams): Pick<RankMemoryInput, 'frozenParams' | 'frozenQuantizedBytes' | 'heldTrainableParams' | 'momentParams' | 'trainingParams' | 'activationBlocks' | 'headActivations'> {
  const specs = paramSpecs(p.config).filter((s) => rangeUses(p.config, p.range, s));
  const frozen = new Map<string, number>();
  const lora = new Set(p.loraLinears ?? []);
  let loraParams = 0;
  for (const s of specs) if (lora.has(s.name.replace(/\.weight$/, ''))) loraParams += (p.loraRank ?? 0) * (s.shape[0] + s.shape[1]);
  let held = loraParams;
  let moments = loraParams;
  let training = loraParams;
  let quantized = 0;
  for (const s of specs) {
    if (p.everTrainable.has(s.name)) held += numel(s);
    else if (p.quantBlockSize && s.kind === 'linear_weight') quantized += quantized4Bytes(s.shape[0], s.shape[1], { blockSize: p.quantBlockSize });
    else frozen.set(p.sourceOf?.(s.name) ?? s.name, numel(s));
    if (p.trainedSoFar.has(s.name)) moments += numel(s);
    if (p.trainable.has(s.name)) training += numel(s);
  }
  const layerOf = (n: string) => Number(/^model\.layers\.(\d+)\./.exec(n)?.[1] ?? (n.startsWith('model.embed_tokens') ? -1 : p.config.numLayers));
  const lowest = Math.min(...[...p.trainable, ...lora].map(layerOf));
  const blocks = Math.max(0, p.range.end - Math.max(p.range.start, lowest));
  return {
    frozenParams: [...frozen.values()].reduce((a, b) => a + b, 0),
    frozenQuantizedBytes: quantized,
    heldTrainableParams: held,
    momentParams: moments,
    trainingParams: training,
    activationBlocks: Number.isFinite(lowest) ? blocks : 0,
    headActivations: p.range.head && Number.isFinite(lowest),
  };
}
