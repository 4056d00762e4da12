// The shape, flags and FLOP formula of the block benchmark (the convention is in bench/block-throughput.ts).
import { parseConfig, type ModelConfig } from '../model/hf/config.ts';
import { type BlockRange } from '../model/llama/range-graph.ts';
import { Flags } from './common.ts';

export interface BlockShape {
  hidden: number;
  heads: number;
  kvHeads: number;
  intermediate: number;
  /** Blocks in the range. */
  layers: number;
  seq: number;
  batch: number;
}

export const DEFAULT_SHAPE: BlockShape = { hidden: 512, heads: 8, kvHeads: 4, intermediate: 1376, layers: 2, seq: 256, batch: 4 };

export const SHAPE_FLAGS = ['hidden', 'heads', 'kv-heads', 'intermediate', 'layers', 'seq', 'batch'] as const;
export const RUN_FLAGS = ['reps', 'warmup', 'threads', 'seed', 'diagnostics'] as const;

export function shapeFromFlags(f: Flags): BlockShape {
  const d = DEFAULT_SHAPE;
  return {
    hidden: f.int('hidden', d.hidden),
    heads: f.int('heads', d.heads),
    kvHeads: f.int('kv-heads', d.kvHeads),
    intermediate: f.int('intermediate', d.intermediate),
    layers: f.int('layers', d.layers),
    seq: f.int('seq', d.seq),
    batch: f.int('batch', d.batch),
  };
}

export interface BlockBenchOptions {
  shape: BlockShape;
  threads: number;
  reps: number;
  warmup: number;
  seed: number;
  /**
   * Also run each graph under ORT's profiler (kernel time per op type) and time the two-session modes
   * with thread-pool spinning on and off.
   */
  diagnostics: boolean;
}

/** An in-memory HF config: a model of layers+2 blocks whose middle `layers` blocks are benchmarked. */
export function benchConfig(s: BlockShape): ModelConfig {
  return parseConfig(
    {
      architectures: ['LlamaForCausalLM'],
      model_type: 'llama',
      hidden_size: s.hidden,
      intermediate_size: s.intermediate,
      num_hidden_layers: s.layers + 2,
      num_attention_heads: s.heads,
      num_key_value_heads: s.kvHeads,
      vocab_size: 256,
      rms_norm_eps: 1e-5,
      rope_theta: 10000,
      max_position_embeddings: Math.max(2048, s.seq),
      hidden_act: 'silu',
    },
    'bench config',
  ).config;
}

export function benchRange(s: BlockShape): BlockRange {
  return { start: 1, end: 1 + s.layers, embed: false, head: false };
}

/** MatMul FLOPs of one block by the formula in the header comment. */
export function blockMatmulFlops(c: ModelConfig, batch: number, seq: number) {
  const t = batch * seq;
  const h = c.hiddenSize;
  const q = c.numHeads * c.headDim;
  const kv = c.numKvHeads * c.headDim;
  const m = c.intermediateSize;
  const projections = 2 * t * (h * q + 2 * h * kv + q * h + 3 * h * m);
  const attention = 2 * (2 * batch * c.numHeads * seq * seq * c.headDim);
  const forward = projections + attention;
  return { projections, attention, forward, inputGrad: projections + 2 * attention, weightGrad: projections };
}
