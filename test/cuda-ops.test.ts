// Every op (with its element type) of every graph the trainer and the evaluator build, for Llama,
// Qwen2 and Mistral shapes, must have a CUDA kernel in ONNX Runtime's table for the version in
// package-lock.json — test/fixtures/ort/cuda-kernels.json, converted from docs/OperatorKernels.md by
// test/fixtures/ort/convert-kernels.ts (its `source` names the commit) — or be a listed CPU fallback
// with its cost. The kernel row must cover the opset the graph imports (model/graph/serialize.ts).
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { parseConfig } from '../model/hf/config.ts';
import { OPSET } from '../model/graph/serialize.ts';
import { opUses, trainerGraphs, type OpUse } from './support/graph-ops.ts';
import type { KernelRow } from './fixtures/ort/convert-kernels.ts';

const ROOT = path.resolve(import.meta.dirname, '..');
const TABLE = JSON.parse(fs.readFileSync(path.join(ROOT, 'test/fixtures/ort/cuda-kernels.json'), 'utf8')) as {
  onnxruntime: string;
  source: { repository: string; path: string; commit: string };
  kernels: Record<string, Record<string, KernelRow[]>>;
  cpu_fallbacks: { op: string; domain: string; dtype: string; cost: string }[];
};
/** The opset each domain is imported at by every graph propipe serializes. */
const OPSETS: Record<string, number> = { 'ai.onnx': OPSET, 'com.microsoft': 1 };

function config(arch: 'llama' | 'qwen2' | 'mistral') {
  const names = { llama: 'LlamaForCausalLM', qwen2: 'Qwen2ForCausalLM', mistral: 'MistralForCausalLM' };
  return parseConfig({
    architectures: [names[arch]], model_type: arch, hidden_size: 32, intermediate_size: 64, num_hidden_layers: 3,
    num_attention_heads: 4, num_key_value_heads: 2, vocab_size: 64, rms_norm_eps: 1e-5, rope_theta: 10000,
    max_position_embeddings: 256, tie_word_embeddings: arch === 'qwen2', hidden_act: 'silu',
    ...(arch === 'mistral' ? { sliding_window: 16 } : {}),
  }).config;
}

/** Why `u` has no CUDA kernel, or null when it has one. */
function missingKernel(u: OpUse): string | null {
  const domain = u.domain || 'ai.onnx';
  const rows = TABLE.kernels[domain]?.[u.op];
  if (!rows) return `${domain} ${u.op}: the CUDA provider has no kernel for this op at all (first in the ${u.graph} graph)`;
  const opset = OPSETS[domain];
  const row = rows.find((r) => r.versions[0] <= opset && (r.versions[1] === null || opset <= r.versions[1]));
  if (!row) return `${domain} ${u.op}: no CUDA kernel for opset ${opset} (kernels for ${rows.map((r) => `${r.versions[0]}..${r.versions[1] ?? ''}`).join(', ')}; first in the ${u.graph} graph)`;
  // Some rows define the first parameter under another constraint name (Identity 19+: T in the
  // parameters, V in the types): then any type the row lists.
  const fixed = row.first !== null && /^[a-z]/.test(row.first) ? [row.first] : null; // e.g. tensor(int64) as a parameter's type
  const allowed: string[] = (row.first !== null ? (row.types[row.first] ?? fixed) : null) ?? Object.values(row.types).flat();
  if (!allowed.includes(u.dtype)) return `${domain} ${u.op} (${u.dtype}): the CUDA kernel for opset ${opset} takes ${allowed.join(', ')} (first in the ${u.graph} graph)`;
  return null;
}

test('the kernel table is for the onnxruntime version in package-lock.json and names where it came from', () => {
  const lock = JSON.parse(fs.readFileSync(path.join(ROOT, 'package-lock.json'), 'utf8'));
  assert.equal(TABLE.onnxruntime, lock.packages['node_modules/onnxruntime-node'].version, 'regenerate test/fixtures/ort/cuda-kernels.json (test/fixtures/ort/convert-kernels.ts) for the new onnxruntime version');
  assert.equal(TABLE.source.repository, 'microsoft/onnxruntime');
  assert.match(TABLE.source.commit, /^[0-9a-f]{40}$/);
  // The table is the real one, not a list of what propipe happens to use.
  assert.ok(Object.keys(TABLE.kernels['ai.onnx']).length > 100 && Object.keys(TABLE.kernels['com.microsoft']).length > 30);
});

test('every op of every trainer and evaluator graph runs on the CUDA provider or is a known CPU fallback', () => {
  const uses = ['llama', 'qwen2', 'mistral'].flatMap((a) => opUses(trainerGraphs(config(a as 'llama'))));
  assert.ok(uses.length > 20, 'the graphs were listed');
  const fallbacksSeen = new Set<string>();
  const missing: string[] = [];
  for (const u of uses) {
    const why = missingKernel(u);
    if (!why) continue;
    const domain = u.domain || 'ai.onnx';
    const fb = TABLE.cpu_fallbacks.find((f) => f.op === u.op && f.domain === domain && f.dtype === u.dtype);
    if (fb) fallbacksSeen.add(`${domain}:${u.op}:${u.dtype}`);
    else missing.push(why);
  }
  assert.deepEqual([...new Set(missing)], [], 'ops the CUDA provider would run on CPU: use ops it has kernels for, or list them in cpu_fallbacks with their cost');
  // A listed fallback that no graph uses, or that the table now covers, is stale.
  for (const f of TABLE.cpu_fallbacks) assert.ok(fallbacksSeen.has(`${f.domain}:${f.op}:${f.dtype}`), `${f.op} (${f.dtype}) is listed as a CPU fallback but no graph runs it on CPU`);
});

test('the check catches what the CUDA provider lacks: an unknown fused op, an old opset, a dtype', () => {
  const at = (op: string, dtype: string, domain = '') => missingKernel({ op, domain, dtype, graph: 'probe' });
  assert.equal(at('MatMul', 'float32'), null);
  assert.equal(at('MatMulNBits', 'float32', 'com.microsoft'), null);
  assert.match(at('FusedRmsNormSwiGlu', 'float32', 'com.microsoft')!, /com\.microsoft FusedRmsNormSwiGlu: the CUDA provider has no kernel for this op at all/);
  assert.match(at('MatMul', 'int32')!, /ai\.onnx MatMul \(int32\): the CUDA kernel for opset 21 takes bfloat16, float64, float32, float16/);
  assert.match(at('Scatter', 'float32')!, /no CUDA kernel for opset 21 \(kernels for 9\.\.10/);
});
