// The recipe as data: stage masks, learning rates, early stopping, AdamW and run-config validation.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { AdamW, clipScale, sumOfSquares } from '../model/train/adamw.ts';
import { planExpansion } from '../model/expand/expand.ts';
import { randomModelConfig } from '../model/hf/init.ts';
import { EarlyStopper } from '../recipe/early-stop.ts';
import { layerLearningRate, stageLrFactor } from '../recipe/lr-schedule.ts';
import { loadRunConfig, parseRunConfig, RunConfigError } from '../recipe/run-config.ts';
import { planStages, type LayerKind } from '../recipe/stages.ts';

const { config } = randomModelConfig({ layers: 8, hidden: 16, heads: 2, kvHeads: 1, intermediate: 32, vocab: 300 });
const base = { model: 'm', dataset: 'd', output_dir: 'o' };
const originals: LayerKind[] = Array.from({ length: 8 }, (_, i) => ({ kind: 'original', source: i }));

test('full fine-tune, bottom-up sliding: one group per stage, embedding with the bottom, head with the top', () => {
  const plan = planStages(parseRunConfig({ ...base, train_type: 'full', blocks_per_group: 3 }), config, originals);
  assert.deepEqual(plan.groups, [[0, 1, 2], [3, 4, 5], [6, 7]]);
  assert.deepEqual(plan.stages.map((s) => s.layers), [[0, 1, 2], [3, 4, 5], [6, 7]]);
  assert.ok(plan.stages[0].trainable.includes('model.embed_tokens.weight'));
  assert.ok(plan.stages[2].trainable.includes('lm_head.weight') && plan.stages[2].trainable.includes('model.norm.weight'));
  assert.ok(!plan.stages[1].trainable.some((n) => n.startsWith('model.layers.0.')));
});

test('top-down, cumulative and explicit orders', () => {
  const td = planStages(parseRunConfig({ ...base, train_type: 'full', blocks_per_group: 4, stage_order: 'top-down', stage_mode: 'cumulative' }), config, originals);
  assert.deepEqual(td.stages.map((s) => s.layers), [[4, 5, 6, 7], [0, 1, 2, 3, 4, 5, 6, 7]]);
  const ex = planStages(parseRunConfig({ ...base, train_type: 'full', blocks_per_group: 2, stage_order: '3,1' }), config, originals);
  assert.deepEqual(ex.stages.map((s) => s.layers), [[6, 7], [2, 3]]);
  assert.throws(() => planStages(parseRunConfig({ ...base, train_type: 'full', blocks_per_group: 2, stage_order: '1,9' }), config, originals), /'9' is not a group index in 0..3/);
  const none = planStages(parseRunConfig({ ...base, train_type: 'full', stage_order: 'none' }), config, originals);
  assert.equal(none.stages.length, 1);
  assert.equal(none.everTrainable.length, none.stages[0].trainable.length);
});

test('LLaMA Pro stages walk over the new blocks only; LoRA hybrids adapt the region of each new block', () => {
  const { config: c6 } = randomModelConfig({ layers: 6, hidden: 16, heads: 2, kvHeads: 1, intermediate: 32, vocab: 300 });
  const layout = planExpansion(4, 2).map((l) => ({ kind: l.kind, source: l.source }));
  const plan = planStages(parseRunConfig({ ...base, train_type: 'llamapro', llamapro_new_blocks: 2, lora_rank: 2, lora_targets: 'q_proj' }), c6, layout);
  assert.deepEqual(plan.stages.map((s) => s.layers), [[2], [5]]);
  assert.deepEqual(plan.loraLinears, ['model.layers.0.self_attn.q_proj', 'model.layers.1.self_attn.q_proj', 'model.layers.3.self_attn.q_proj', 'model.layers.4.self_attn.q_proj']);
  assert.ok(plan.stages[0].trainable.includes('model.layers.1.self_attn.q_proj.lora_A.weight'));
  assert.ok(!plan.stages[0].trainable.some((n) => n.startsWith('model.layers.3.')));
  assert.ok(plan.stages.every((s) => !s.trainable.some((n) => /^model\.layers\.(0|1|3|4)\..*(?<!lora_[AB])\.weight$/.test(n))), 'original blocks never train');
});

test('layer-wise learning rate interpolates bottom → top; warmup then cosine within a stage', () => {
  const run = parseRunConfig({ ...base, learning_rate: 1e-4, learning_rate_bottom: 5e-5 });
  assert.equal(layerLearningRate(run, 'model.embed_tokens.weight', 8), 5e-5);
  assert.equal(layerLearningRate(run, 'model.layers.0.mlp.up_proj.weight', 8), 5e-5);
  assert.ok(Math.abs(layerLearningRate(run, 'model.layers.7.mlp.up_proj.weight', 8) - 1e-4) < 1e-12);
  assert.ok(Math.abs(layerLearningRate(run, 'model.layers.3.self_attn.q_proj.lora_A.weight', 8) - (5e-5 + (3 / 7) * 5e-5)) < 1e-12);
  assert.equal(layerLearningRate(run, 'lm_head.weight', 8), 1e-4);
  const f = Array.from({ length: 10 }, (_, s) => stageLrFactor(s, 10, 2, 0));
  assert.ok(f[0] > 0 && f[0] < f[1] && f[1] < f[2], 'warmup rises from above zero');
  assert.equal(f[2], 1);
  for (let s = 3; s < 10; s++) assert.ok(f[s] < f[s - 1], 'cosine decays');
});

test('early stopping ends after `patience` evaluations without improvement beyond min_delta', () => {
  const e = new EarlyStopper(2, 0.01);
  assert.deepEqual(e.observe(1.0), { improved: true, stop: false });
  assert.deepEqual(e.observe(0.995), { improved: false, stop: false });
  assert.deepEqual(e.observe(0.98), { improved: true, stop: false });
  assert.deepEqual(e.observe(0.99), { improved: false, stop: false });
  assert.deepEqual(e.observe(0.975), { improved: false, stop: true });
  assert.equal(new EarlyStopper(0).observe(5).stop, false);
});

test('AdamW: the first step moves each weight by lr·sign(g); decay is decoupled and skips norms; clipping is global', () => {
  const opt = new AdamW({ beta1: 0.9, beta2: 0.999, eps: 1e-12, weightDecay: 0.1 });
  const w = Float32Array.of(1, -2, 3);
  opt.update('model.layers.0.mlp.up_proj.weight', w, Float32Array.of(0.5, -4, 0), 0.01);
  assert.ok(Math.abs(w[0] - (1 - 0.01 * 0.1 * 1 - 0.01)) < 1e-6);
  assert.ok(Math.abs(w[1] - (-2 + 0.01 * 0.1 * 2 + 0.01)) < 1e-6);
  const n = Float32Array.of(1);
  opt.update('model.norm.weight', n, Float32Array.of(1), 0.01);
  assert.ok(Math.abs(n[0] - 0.99) < 1e-6, 'no decay on norm weights');
  const grads = [Float32Array.of(3, 0), Float32Array.of(4)];
  const norm = Math.sqrt(sumOfSquares(grads));
  assert.equal(norm, 5);
  assert.ok(Math.abs(clipScale(norm, 1) - 0.2) < 1e-6);
  assert.equal(clipScale(0.5, 1), 1);
});

test('run config: errors name the field; flags override the file', () => {
  assert.throws(() => parseRunConfig({ ...base, learning_rate: -1 }), (e: Error) => e instanceof RunConfigError && /learning_rate/.test(e.message));
  assert.throws(() => parseRunConfig({ ...base, lora_rnak: 4 }), /unknown field\(s\) 'lora_rnak'/);
  assert.throws(() => parseRunConfig({ ...base, train_type: 'lora' }), /lora_rank: train_type lora needs lora_rank/);
  assert.throws(() => parseRunConfig({ ...base, train_type: 'full', quantize: '4bit' }), /quantize/);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'propipe-cfg-'));
  const file = path.join(dir, 'run.yaml');
  fs.writeFileSync(file, 'model: m\ndataset: d\noutput_dir: o\nlearning_rate: 0.001\nlora_rank: 8\n');
  const c = loadRunConfig(file, { learning_rate: 0.5 });
  assert.equal(c.learning_rate, 0.5);
  assert.equal(c.lora_rank, 8);
  fs.writeFileSync(file, 'model: m\ndataset: [d\n');
  assert.throws(() => loadRunConfig(file, {}), new RegExp(`${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:`));
});

test('shard checksums stream the file: equal to hashing it whole, for sizes around the chunk size', async () => {
  const { sha256File } = await import('../recipe/checkpoints.ts');
  const crypto = await import('node:crypto');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'propipe-sha-'));
  try {
    for (const size of [0, 1, (8 << 20) - 1, 8 << 20, (8 << 20) + 3, 17 << 20]) {
      const bytes = Buffer.alloc(size);
      for (let i = 0; i < size; i += 4096) bytes[i] = (i / 4096) % 251;
      const file = path.join(dir, `s${size}`);
      fs.writeFileSync(file, bytes);
      assert.equal(sha256File(file), crypto.createHash('sha256').update(bytes).digest('hex'), `size ${size}`);
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
