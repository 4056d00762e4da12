import { createRandomModel } from '../../model/hf/init.ts';
import { paramCount } from '../../model/llama/param-specs.ts';
import { log } from '../../common/log.ts';
import type { Command } from '../command.ts';

export const initModel: Command = {
  name: 'init-model',
  summary: 'write a tiny random Llama-family model in HF format (config.json, model.safetensors, tokenizer)',
  usage: 'propipe init-model --out DIR --layers L --hidden H --heads A --kv-heads K --intermediate I --vocab V [--tie] [--qkv-bias] [--seed S]',
  flags: {
    out: { type: 'string', description: 'output directory' },
    layers: { type: 'string', description: 'number of decoder blocks' },
    hidden: { type: 'string', description: 'hidden size' },
    heads: { type: 'string', description: 'attention heads' },
    'kv-heads': { type: 'string', description: 'key/value heads (grouped-query attention when fewer than heads)' },
    intermediate: { type: 'string', description: 'MLP intermediate size' },
    vocab: { type: 'string', description: 'vocabulary size (a byte-level BPE tokenizer of this size is trained; at least 261)' },
    tie: { type: 'boolean', description: 'tie lm_head to the embedding' },
    'qkv-bias': { type: 'boolean', description: 'Qwen2-style q/k/v biases (writes a Qwen2ForCausalLM config)' },
    seed: { type: 'string', description: 'random seed', default: '0' },
  },
  async run(f) {
    const out = f.required('out');
    const config = await createRandomModel(out, {
      layers: f.int('layers'),
      hidden: f.int('hidden'),
      heads: f.int('heads'),
      kvHeads: f.int('kv-heads', f.int('heads')),
      intermediate: f.int('intermediate'),
      vocab: f.int('vocab'),
      tie: f.bool('tie'),
      qkvBias: f.bool('qkv-bias'),
      seed: f.int('seed', 0),
    });
    log.info({ out, arch: config.arch, layers: config.numLayers, params: paramCount(config) }, 'model written');
  },
};
