// A random Llama-family model in real HF format (config.json, model.safetensors, tokenizer), so
// tests and the demo exercise the same loading code as a downloaded checkpoint.
import fs from 'node:fs';
import path from 'node:path';
import { parseConfig, writeConfig, type ModelConfig } from './config.ts';
import { paramSpecs } from '../llama/param-specs.ts';
import { Rng } from '../../common/rng.ts';
import { writeCheckpoint } from './checkpoint.ts';
import { type TensorToWrite } from './safetensors-write.ts';
import { trainByteLevelBpe, writeTokenizer } from './tokenizer.ts';

export interface RandomModelOptions {
  layers: number;
  hidden: number;
  heads: number;
  kvHeads: number;
  intermediate: number;
  vocab: number;
  tie?: boolean;
  qkvBias?: boolean;
  seed?: number;
  /** HF's initializer_range: std of the normal init of matrices. */
  initStd?: number;
  maxPositions?: number;
  /** Text the tokenizer's merges are learned from; a built-in corpus when absent. */
  corpus?: string[];
}

export function randomModelConfig(o: RandomModelOptions): { config: ModelConfig; raw: Record<string, unknown> } {
  const qwen = o.qkvBias === true;
  return parseConfig({
    architectures: [qwen ? 'Qwen2ForCausalLM' : 'LlamaForCausalLM'],
    model_type: qwen ? 'qwen2' : 'llama',
    hidden_size: o.hidden,
    intermediate_size: o.intermediate,
    num_hidden_layers: o.layers,
    num_attention_heads: o.heads,
    num_key_value_heads: o.kvHeads,
    vocab_size: o.vocab,
    rms_norm_eps: 1e-5,
    rope_theta: 10000,
    max_position_embeddings: o.maxPositions ?? 2048,
    tie_word_embeddings: o.tie ?? false,
    hidden_act: 'silu',
    initializer_range: o.initStd ?? 0.02,
    bos_token_id: 0,
    eos_token_id: 1,
    pad_token_id: 2,
    torch_dtype: 'float32',
  });
}

/** HF's init: normal(0, initializer_range) for matrices and embeddings, zero biases, unit norms. */
export function randomWeights(config: ModelConfig, seed: number, std: number): TensorToWrite[] {
  const rng = new Rng(seed);
  return paramSpecs(config).map((spec) => {
    const size = spec.shape.reduce((a, b) => a * b, 1);
    const data = new Float32Array(size);
    if (spec.kind === 'norm') data.fill(1);
    else if (spec.kind !== 'linear_bias') for (let i = 0; i < size; i++) data[i] = rng.nextGaussian() * std;
    return { name: spec.name, dtype: 'F32', shape: spec.shape, data };
  });
}

export async function createRandomModel(dir: string, o: RandomModelOptions): Promise<ModelConfig> {
  const { config, raw } = randomModelConfig(o);
  const { tokenizerJson, tokenizerConfig } = trainByteLevelBpe(o.corpus, o.vocab, [], { modelMaxLength: config.maxPositionEmbeddings });
  fs.mkdirSync(dir, { recursive: true });
  writeConfig(dir, config, raw);
  writeCheckpoint(dir, randomWeights(config, o.seed ?? 0, o.initStd ?? 0.02));
  await writeTokenizer(dir, tokenizerJson, tokenizerConfig);
  fs.writeFileSync(path.join(dir, 'generation_config.json'), JSON.stringify({ bos_token_id: 0, eos_token_id: 1, pad_token_id: 2 }, null, 2) + '\n');
  return config;
}
