import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { ConfigError, loadConfig, parseConfig, toHfConfig, writeConfig, type ModelConfig } from '../model/hf/config.ts';
import { layerParamSpecs, paramCount, paramSpecs } from '../model/llama/param-specs.ts';
import { openCheckpoint } from '../model/hf/checkpoint.ts';

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'propipe-config-'));
after(() => fs.rmSync(root, { recursive: true, force: true }));
let seq = 0;
function dirWith(config: unknown): string {
  const dir = path.join(root, String(seq++));
  fs.mkdirSync(dir);
  fs.writeFileSync(path.join(dir, 'config.json'), typeof config === 'string' ? config : JSON.stringify(config));
  return dir;
}

// Abridged from meta-llama/Meta-Llama-3-8B's config.json (GQA, llama3 RoPE scaling, two EOS ids).
const llama3 = {
  architectures: ['LlamaForCausalLM'],
  attention_bias: false,
  attention_dropout: 0.0,
  bos_token_id: 128000,
  eos_token_id: [128001, 128009],
  hidden_act: 'silu',
  hidden_size: 4096,
  initializer_range: 0.02,
  intermediate_size: 14336,
  max_position_embeddings: 131072,
  mlp_bias: false,
  model_type: 'llama',
  num_attention_heads: 32,
  num_hidden_layers: 32,
  num_key_value_heads: 8,
  pretraining_tp: 1,
  rms_norm_eps: 1e-5,
  rope_scaling: { factor: 8.0, low_freq_factor: 1.0, high_freq_factor: 4.0, original_max_position_embeddings: 8192, rope_type: 'llama3' },
  rope_theta: 500000.0,
  tie_word_embeddings: false,
  torch_dtype: 'bfloat16',
  transformers_version: '4.43.0.dev0',
  use_cache: true,
  vocab_size: 128256,
};

// Llama 2 7B: multi-head attention, fields that later versions added are absent.
const llama2 = {
  architectures: ['LlamaForCausalLM'],
  bos_token_id: 1,
  eos_token_id: 2,
  hidden_act: 'silu',
  hidden_size: 4096,
  intermediate_size: 11008,
  max_position_embeddings: 4096,
  model_type: 'llama',
  num_attention_heads: 32,
  num_hidden_layers: 32,
  num_key_value_heads: 32,
  pad_token_id: 0,
  rms_norm_eps: 1e-5,
  rope_scaling: null,
  tie_word_embeddings: false,
  torch_dtype: 'float16',
  vocab_size: 32000,
};

// Qwen/Qwen2-0.5B.
const qwen2 = {
  architectures: ['Qwen2ForCausalLM'],
  attention_dropout: 0.0,
  bos_token_id: 151643,
  eos_token_id: 151643,
  hidden_act: 'silu',
  hidden_size: 896,
  initializer_range: 0.02,
  intermediate_size: 4864,
  max_position_embeddings: 131072,
  max_window_layers: 24,
  model_type: 'qwen2',
  num_attention_heads: 14,
  num_hidden_layers: 24,
  num_key_value_heads: 2,
  rms_norm_eps: 1e-6,
  rope_theta: 1000000.0,
  sliding_window: 131072,
  tie_word_embeddings: true,
  torch_dtype: 'bfloat16',
  use_cache: true,
  use_sliding_window: false,
  vocab_size: 151936,
};

// mistralai/Mistral-7B-v0.1.
const mistral = {
  architectures: ['MistralForCausalLM'],
  bos_token_id: 1,
  eos_token_id: 2,
  hidden_act: 'silu',
  hidden_size: 4096,
  initializer_range: 0.02,
  intermediate_size: 14336,
  max_position_embeddings: 32768,
  model_type: 'mistral',
  num_attention_heads: 32,
  num_hidden_layers: 32,
  num_key_value_heads: 8,
  rms_norm_eps: 1e-5,
  rope_theta: 10000.0,
  sliding_window: 4096,
  tie_word_embeddings: false,
  torch_dtype: 'bfloat16',
  vocab_size: 32000,
};

const spec = (config: ModelConfig, name: string) => paramSpecs(config).find((s) => s.name === name);

describe('loadConfig normalization', () => {
  it('llama 3 (GQA, rope scaling, two EOS ids)', () => {
    const { config, raw } = loadConfig(dirWith(llama3));
    assert.deepEqual(config, {
      arch: 'llama',
      hiddenSize: 4096,
      intermediateSize: 14336,
      numLayers: 32,
      numHeads: 32,
      numKvHeads: 8,
      headDim: 128,
      vocabSize: 128256,
      rmsNormEps: 1e-5,
      ropeTheta: 500000,
      ropeScaling: llama3.rope_scaling,
      maxPositionEmbeddings: 131072,
      tieWordEmbeddings: false,
      qkvBias: false,
      oBias: false,
      mlpBias: false,
      bosTokenId: 128000,
      eosTokenIds: [128001, 128009],
      padTokenId: null,
      slidingWindow: null,
    } satisfies ModelConfig);
    assert.equal(raw.pretraining_tp, 1, 'raw keeps unknown fields');
    assert.deepEqual(spec(config, 'model.layers.0.self_attn.k_proj.weight')?.shape, [1024, 4096]);
    assert.deepEqual(spec(config, 'model.layers.31.self_attn.o_proj.weight')?.shape, [4096, 4096]);
    assert.deepEqual(spec(config, 'lm_head.weight')?.shape, [128256, 4096]);
    assert.equal(paramCount(config), 8_030_261_248); // Llama 3 8B
  });

  it('llama 2 defaults: kv heads = heads, head_dim = hidden/heads, rope_theta 10000', () => {
    const { config } = parseConfig({ ...llama2, num_key_value_heads: undefined });
    assert.equal(config.numKvHeads, 32);
    assert.equal(config.headDim, 128);
    assert.equal(config.ropeTheta, 10000);
    assert.equal(config.ropeScaling, null);
    assert.deepEqual(config.eosTokenIds, [2]);
    assert.equal(config.padTokenId, 0);
    assert.equal(paramCount(config), 6_738_415_616); // Llama 2 7B
  });

  it('llama attention_bias puts biases on q, k, v and o; mlp_bias on gate, up, down', () => {
    const { config } = parseConfig({ ...llama2, attention_bias: true, mlp_bias: true, num_hidden_layers: 1 });
    assert.deepEqual([config.qkvBias, config.oBias, config.mlpBias], [true, true, true]);
    const biases = layerParamSpecs(config, 0).filter((s) => s.kind === 'linear_bias').map((s) => `${s.name} ${s.shape}`);
    assert.deepEqual(biases, [
      'model.layers.0.self_attn.q_proj.bias 4096',
      'model.layers.0.self_attn.k_proj.bias 4096',
      'model.layers.0.self_attn.v_proj.bias 4096',
      'model.layers.0.self_attn.o_proj.bias 4096',
      'model.layers.0.mlp.gate_proj.bias 11008',
      'model.layers.0.mlp.up_proj.bias 11008',
      'model.layers.0.mlp.down_proj.bias 4096',
    ]);
  });

  it('qwen2: q/k/v biases, no o_proj bias, tied head', () => {
    const { config } = loadConfig(dirWith(qwen2));
    assert.equal(config.arch, 'qwen2');
    assert.deepEqual([config.qkvBias, config.oBias, config.mlpBias], [true, false, false]);
    assert.equal(config.tieWordEmbeddings, true);
    assert.equal(config.headDim, 64);
    assert.equal(config.numKvHeads, 2);
    assert.equal(config.slidingWindow, null, 'use_sliding_window is false');
    assert.deepEqual(config.eosTokenIds, [151643]);
    const names = paramSpecs(config).map((s) => s.name);
    assert.ok(names.includes('model.layers.3.self_attn.k_proj.bias'));
    assert.equal(spec(config, 'model.layers.3.self_attn.k_proj.bias')?.shape[0], 128);
    assert.ok(!names.includes('model.layers.3.self_attn.o_proj.bias'));
    assert.ok(!names.includes('model.layers.3.mlp.down_proj.bias'));
    assert.ok(!names.includes('lm_head.weight'));
    assert.equal(names.at(-1), 'model.norm.weight');
    assert.equal(paramCount(config), 494_032_768); // Qwen2-0.5B as transformers counts it
  });

  it('mistral: sliding window kept, and no biases even when the config asks (transformers ignores it)', () => {
    const { config } = parseConfig({ ...mistral, attention_bias: true });
    assert.equal(config.arch, 'mistral');
    assert.equal(config.slidingWindow, 4096);
    assert.equal(config.numKvHeads, 8);
    assert.deepEqual([config.qkvBias, config.oBias, config.mlpBias], [false, false, false]);
    assert.equal(parseConfig({ ...mistral, sliding_window: null }).config.slidingWindow, null);
    assert.equal(paramCount(config), 7_241_732_096); // Mistral 7B
  });

  it('architecture from architectures when model_type is absent; explicit head_dim need not be hidden/heads', () => {
    const { config } = parseConfig({ ...mistral, model_type: undefined, hidden_size: 5120, head_dim: 128, num_hidden_layers: 1 });
    assert.equal(config.arch, 'mistral');
    assert.equal(config.headDim, 128);
    assert.deepEqual(spec(config, 'model.layers.0.self_attn.q_proj.weight')?.shape, [4096, 5120]);
    assert.deepEqual(spec(config, 'model.layers.0.self_attn.o_proj.weight')?.shape, [5120, 4096]);
  });

  it('transformers 5 rope_parameters and legacy rope_scaling.type', () => {
    const v5 = { ...llama3, rope_theta: undefined, rope_scaling: undefined, rope_parameters: { rope_type: 'llama3', rope_theta: 500000, factor: 8 } };
    const { config } = parseConfig(v5);
    assert.equal(config.ropeTheta, 500000);
    assert.deepEqual(config.ropeScaling, { rope_type: 'llama3', factor: 8 });
    const legacy = parseConfig({ ...llama2, rope_scaling: { type: 'linear', factor: 2 } }).config;
    assert.deepEqual(legacy.ropeScaling, { type: 'linear', factor: 2, rope_type: 'linear' });
  });

  it('matches the golden fixtures tensor for tensor', () => {
    for (const name of ['llama-gqa', 'qwen2-tied']) {
      const dir = path.join(import.meta.dirname, 'fixtures/golden', name);
      const { config } = loadConfig(dir);
      const ck = openCheckpoint(dir);
      try {
        const specs = paramSpecs(config);
        assert.deepEqual(specs.map((s) => s.name).sort(), ck.names().sort(), name);
        for (const s of specs) assert.deepEqual(s.shape, ck.shape(s.name), s.name);
      } finally {
        ck.close();
      }
    }
  });
});

describe('bad configs name the file and the field', () => {
  const cases: Array<[string, unknown, RegExp, string | undefined]> = [
    ['missing field', { ...llama2, hidden_size: undefined }, /: hidden_size is missing/, 'hidden_size'],
    ['wrong type', { ...llama2, vocab_size: '32000' }, /: vocab_size \("32000"\): .*expected number/, 'vocab_size'],
    ['non-positive size', { ...llama2, num_hidden_layers: 0 }, /: num_hidden_layers \(0\): /, 'num_hidden_layers'],
    ['heads not dividing hidden', { ...llama2, hidden_size: 1000, num_attention_heads: 12 }, /: num_attention_heads \(12\) must divide hidden_size \(1000\)$/, 'num_attention_heads'],
    ['kv heads not dividing heads', { ...llama2, num_key_value_heads: 5 }, /: num_key_value_heads \(5\) must divide num_attention_heads \(32\)$/, 'num_key_value_heads'],
    ['odd head_dim', { ...llama2, head_dim: 7 }, /: head_dim \(7\) must be even/, 'head_dim'],
    ['unsupported model_type', { ...llama2, model_type: 'gpt2', architectures: ['GPT2LMHeadModel'] }, /unsupported architecture \(model_type "gpt2".*supported: LlamaForCausalLM \(model_type "llama"\), MistralForCausalLM \(model_type "mistral"\), Qwen2ForCausalLM \(model_type "qwen2"\)/, 'model_type'],
    ['supported model_type, unsupported class', { ...llama2, architectures: ['LlamaForSequenceClassification'] }, /unsupported architecture .*LlamaForSequenceClassification/, 'model_type'],
    ['no architecture at all', { ...llama2, model_type: undefined, architectures: undefined }, /has neither model_type nor architectures; supported: /, 'model_type'],
    ['gelu', { ...llama2, hidden_act: 'gelu' }, /: hidden_act is "gelu"; only "silu"/, 'hidden_act'],
  ];
  for (const [what, config, pattern, field] of cases) {
    it(what, () => {
      const dir = dirWith(config);
      const file = path.join(dir, 'config.json');
      assert.throws(
        () => loadConfig(dir),
        (err: unknown) => {
          assert.ok(err instanceof ConfigError, String(err));
          assert.ok(err.message.startsWith(`${file}: `), err.message);
          assert.match(err.message, pattern);
          assert.equal(err.field, field);
          return true;
        },
      );
    });
  }

  it('invalid JSON and a missing file', () => {
    const dir = dirWith('{"hidden_size": 4096,');
    assert.throws(() => loadConfig(dir), new RegExp(`${path.join(dir, 'config.json').replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: invalid JSON`));
    const empty = path.join(root, 'empty');
    fs.mkdirSync(empty);
    assert.throws(() => loadConfig(empty), /config\.json: not found; is .* a Hugging Face model directory\?/);
  });
});

describe('writing config.json', () => {
  it('round-trips every normalized field and keeps unknown raw fields', () => {
    for (const source of [llama3, llama2, qwen2, mistral]) {
      const { config, raw } = parseConfig(source);
      const dir = path.join(root, `out-${seq++}`);
      const file = writeConfig(dir, config, raw);
      assert.deepEqual(fs.readdirSync(dir), ['config.json'], 'no temp file left behind');
      const back = loadConfig(dir);
      assert.deepEqual(back.config, config, source.model_type);
      const written = JSON.parse(fs.readFileSync(file, 'utf8'));
      assert.deepEqual(Object.keys(written), Object.keys(written).sort());
      assert.equal(written.initializer_range ?? null, (source as Record<string, unknown>).initializer_range ?? null);
      assert.deepEqual(written.eos_token_id, source.eos_token_id, 'a single EOS id stays a number, a list stays a list');
      assert.equal(written.torch_dtype, source.torch_dtype);
    }
  });

  it('writes HF fields for an expanded model and drops a stale layer_types list', () => {
    const { config, raw } = parseConfig({ ...qwen2, layer_types: Array(24).fill('full_attention') });
    const expanded = { ...config, numLayers: 32 };
    const out = toHfConfig(expanded, raw, { torchDtype: 'float32' });
    assert.equal(out.num_hidden_layers, 32);
    assert.equal('layer_types' in out, false);
    assert.deepEqual(out.architectures, ['Qwen2ForCausalLM']);
    assert.equal(out.model_type, 'qwen2');
    assert.equal(out.torch_dtype, 'float32');
    assert.equal(out.max_window_layers, 24, 'unknown fields are kept as they were');
    assert.equal(out.use_sliding_window, false);
    assert.equal(out.head_dim, 64);
    assert.equal('attention_bias' in out, false, 'Qwen2 has no attention_bias field');
  });

  it('without raw: a complete config with torch_dtype float32', () => {
    const { config } = parseConfig(llama3);
    const out = toHfConfig(config);
    for (const key of ['hidden_size', 'intermediate_size', 'num_hidden_layers', 'num_attention_heads', 'num_key_value_heads', 'head_dim', 'vocab_size', 'rms_norm_eps', 'rope_theta', 'rope_scaling', 'max_position_embeddings', 'tie_word_embeddings', 'attention_bias', 'mlp_bias', 'hidden_act', 'bos_token_id', 'eos_token_id', 'pad_token_id']) {
      assert.ok(key in out, key);
    }
    assert.equal(out.torch_dtype, 'float32');
    assert.deepEqual(parseConfig(out).config, config);
  });

  it('refuses bias layouts the architecture cannot express', () => {
    const llama = parseConfig(llama2).config;
    assert.throws(() => toHfConfig({ ...llama, qkvBias: true }), /LlamaForCausalLM puts attention_bias on q, k, v and o_proj alike/);
    const q = parseConfig(qwen2).config;
    assert.throws(() => toHfConfig({ ...q, oBias: true }), /Qwen2ForCausalLM has biases on q, k and v only/);
    const m = parseConfig(mistral).config;
    assert.throws(() => toHfConfig({ ...m, mlpBias: true }), /MistralForCausalLM has no biases/);
  });

  it('keeps transformers 5 rope_parameters in its own shape', () => {
    const v5 = { ...llama3, rope_theta: undefined, rope_scaling: undefined, rope_parameters: { rope_type: 'llama3', rope_theta: 500000, factor: 8 } };
    const { config, raw } = parseConfig(JSON.parse(JSON.stringify(v5)));
    const out = toHfConfig({ ...config, ropeTheta: 1e6 }, raw);
    assert.deepEqual(out.rope_parameters, { rope_type: 'llama3', factor: 8, rope_theta: 1e6 });
    assert.equal('rope_theta' in out, false);
  });
});

describe('paramSpecs', () => {
  it('orders tensors as the forward pass uses them, with layer and kind', () => {
    const { config } = parseConfig({ ...qwen2, num_hidden_layers: 2, tie_word_embeddings: false });
    const specs = paramSpecs(config);
    assert.deepEqual(specs.slice(0, 3).map((s) => [s.name, s.layer, s.kind]), [
      ['model.embed_tokens.weight', 'embed', 'embed'],
      ['model.layers.0.input_layernorm.weight', 0, 'norm'],
      ['model.layers.0.self_attn.q_proj.weight', 0, 'linear_weight'],
    ]);
    assert.deepEqual(specs.slice(-2).map((s) => [s.name, s.layer, s.kind]), [
      ['model.norm.weight', 'norm', 'norm'],
      ['lm_head.weight', 'head', 'lm_head'],
    ]);
    assert.deepEqual(layerParamSpecs(config, 1).map((s) => s.name.replace('model.layers.1.', '')), [
      'input_layernorm.weight',
      'self_attn.q_proj.weight', 'self_attn.q_proj.bias',
      'self_attn.k_proj.weight', 'self_attn.k_proj.bias',
      'self_attn.v_proj.weight', 'self_attn.v_proj.bias',
      'self_attn.o_proj.weight',
      'post_attention_layernorm.weight',
      'mlp.gate_proj.weight', 'mlp.up_proj.weight', 'mlp.down_proj.weight',
    ]);
    assert.throws(() => layerParamSpecs(config, 2), /layer 2 is outside 0..1/);
  });
});
