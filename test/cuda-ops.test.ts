// Every op (with its element type) of every graph the trainer and the evaluator build, for Llama,
// Qwen2 and Mistral shapes, must have a CUDA kernel in ONNX Runtime's table for the version in
// package-lock.json, or be a listed CPU fallback with its cost (test/fixtures/ort/cuda-kernels.json,
// which says where its entries come from).
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { parseConfig } from '../model/hf/config.ts';
import { opUses, trainerGraphs } from './support/graph-ops.ts';

const ROOT = path.resolve(import.meta.dirname, '..');
const TABLE = JSON.parse(fs.readFileSync(path.join(ROOT, 'test/fixtures/ort/cuda-kernels.json'), 'utf8')) as {
  onnxruntime: string;
  kernels: Record<string, Record<string, string[]>>;
  cpu_fallbacks: { op: string; domain: string; dtype: string; cost: string }[];
};

function config(arch: 'llama' | 'qwen2' | 'mistral') {
  const names = { llama: 'LlamaForCausalLM', qwen2: 'Qwen2ForCausalLM', mistral: 'MistralForCausalLM' };
  return parseConfig({
    architectures: [names[arch]], model_type: arch, hidden_size: 32, intermediate_size: 64, num_hidden_layers: 3,
    num_attention_heads: 4, num_key_value_heads: 2, vocab_size: 64, rms_norm_eps: 1e-5, rope_theta: 10000,
    max_position_embeddings: 256, tie_word_embeddings: arch === 'qwen2', hidden_act: 'silu',
    ...(arch === 'mistral' ? { sliding_window: 16 } : {}),
  }).config;
}

test('the kernel table is for the onnxruntime version in package-lock.json', () => {
  const lock = JSON.parse(fs.readFileSync(path.join(ROOT, 'package-lock.json'), 'utf8'));
  assert.equal(TABLE.onnxruntime, lock.packages['node_modules/onnxruntime-node'].version, 'regenerate test/fixtures/ort/cuda-kernels.json for the new onnxruntime version');
});

test('every op of every trainer and evaluator graph runs on the CUDA provider or is a known CPU fallback', () => {
  const uses = ['llama', 'qwen2', 'mistral'].flatMap((a) => opUses(trainerGraphs(config(a as 'llama'))));
  assert.ok(uses.length > 20, 'the graphs were listed');
  const fallbacksSeen = new Set<string>();
  const missing: string[] = [];
  for (const u of uses) {
    const domain = u.domain || 'ai.onnx';
    if (TABLE.kernels[domain]?.[u.op]?.includes(u.dtype)) continue;
    const fb = TABLE.cpu_fallbacks.find((f) => f.op === u.op && f.domain === domain && f.dtype === u.dtype);
    if (fb) fallbacksSeen.add(`${domain}:${u.op}:${u.dtype}`);
    else missing.push(`${domain} ${u.op} (${u.dtype}), first in the ${u.graph} graph`);
  }
  assert.deepEqual(missing, [], 'ops the CUDA provider would run on CPU: add a kernel-free formulation or list them with their cost');
  // A listed fallback that no graph uses any more is stale.
  for (const f of TABLE.cpu_fallbacks) assert.ok(fallbacksSeen.has(`${f.domain}:${f.op}:${f.dtype}`), `${f.op} (${f.dtype}) is listed as a fallback but no graph uses it`);
});
