// The single-process recipe end to end: LLaMA Pro keeps the originals bit-identical, resume reaches
// the same weights, adapters merge back to the same model, LoRA and distillation run.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { planExpansion } from '../model/expand/expand.ts';
import { readAdapter } from '../model/hf/export.ts';
import { mergeAdapter } from '../model/hf/merge.ts';
import { openCheckpoint } from '../model/hf/checkpoint.ts';
import type { RunConfigInput } from '../recipe/run-config.ts';
import { Trainer } from '../local/trainer.ts';
import { readMetrics, stepRecords } from './support/continuation.ts';
import { makeTiny } from './support/tiny.ts';

function tensorsEqual(a: string, b: string, nameB: (n: string) => string = (n) => n): void {
  const ca = openCheckpoint(a);
  const cb = openCheckpoint(b);
  for (const n of ca.names()) assert.deepEqual(ca.readRaw(n).bytes, cb.readRaw(nameB(n)).bytes, n);
}

test('LLaMA Pro staged run: originals bit-identical, new blocks trained, adapter merges to the same model', async () => {
  const t = await makeTiny();
  const out = path.join(t.root, 'pro');
  const r = await new Trainer({ model: t.model, dataset: t.train, val_dataset: t.val, output_dir: out, train_type: 'llamapro', llamapro_new_blocks: 2, steps_per_stage: 4, learning_rate: 1e-2, per_device_train_batch_size: 4 }).train();
  assert.equal(r.stages.length, 2);
  assert.equal(r.steps, 8);
  const plan = planExpansion(4, 2);
  const base = openCheckpoint(t.model);
  const final = openCheckpoint(r.finalDir);
  plan.forEach((layer, i) => {
    for (const n of base.names().filter((x) => x.startsWith(`model.layers.${layer.source}.`))) {
      const expanded = n.replace(`model.layers.${layer.source}.`, `model.layers.${i}.`);
      const same = Buffer.compare(Buffer.from(base.readRaw(n).bytes), Buffer.from(final.readRaw(expanded).bytes)) === 0;
      if (layer.kind === 'original') assert.ok(same, `original ${expanded} changed`);
      else if (n.endsWith('o_proj.weight')) assert.ok(!same && final.readF32(expanded).some((v) => v !== 0), `new block ${expanded} did not train`);
    }
  });
  for (const n of ['model.embed_tokens.weight', 'model.norm.weight', 'lm_head.weight']) assert.deepEqual(base.readRaw(n).bytes, final.readRaw(n).bytes);
  const adapter = readAdapter(r.adapterDir);
  assert.equal(adapter.lora, null);
  assert.ok([...adapter.trained.keys()].every((n) => /^model\.layers\.(2|5)\./.test(n)));
  const merged = mergeAdapter(t.model, r.adapterDir, path.join(t.root, 'merged'));
  tensorsEqual(r.finalDir, merged);
  const log = fs.readFileSync(path.join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  assert.equal(log.filter((l) => l.event === 'stage_start').length, 2);
  assert.equal(log.filter((l) => l.step !== undefined && l.loss !== undefined).length, 8);
});

test('resume from a mid-stage checkpoint reaches the same weights as an uninterrupted run', async () => {
  const t = await makeTiny();
  const cfg = (out: string): RunConfigInput => ({ model: t.model, dataset: t.train, val_dataset: t.val, output_dir: out, train_type: 'llamapro', llamapro_new_blocks: 2, steps_per_stage: 5, learning_rate: 1e-2, per_device_train_batch_size: 4, gradient_accumulation_steps: 2, eval_steps: 2, save_steps: 3, seed: 7 });
  const whole = await new Trainer(cfg(path.join(t.root, 'whole'))).train();
  const cut = path.join(t.root, 'cut');
  const first = await new Trainer({ ...cfg(cut), max_steps: 6 }).train();
  assert.equal(first.steps, 6);
  assert.ok(fs.existsSync(path.join(cut, 'checkpoint-6', 'manifest.json')));
  const resumed = await new Trainer({ ...cfg(cut), resume: true }).train();
  assert.equal(resumed.steps, 10);
  tensorsEqual(whole.finalDir, resumed.finalDir);
  // It continued rather than trained again: steps 1..6 once (first run), then 7..10 (resumed run).
  const cutSteps = stepRecords(readMetrics(cut));
  assert.deepEqual(cutSteps.map((r) => r.step), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 'no step trained twice');
  // The resumed steps see the data and the learning rate of the uninterrupted run's same steps.
  const wholeSteps = stepRecords(readMetrics(path.join(t.root, 'whole')));
  for (const i of [6, 7, 8, 9]) {
    assert.equal(cutSteps[i].lr, wholeSteps[i].lr, `learning rate of step ${i + 1}`);
    assert.equal(cutSteps[i].tokens, wholeSteps[i].tokens, `tokens of step ${i + 1}`);
    assert.equal(cutSteps[i].loss, wholeSteps[i].loss, `loss of step ${i + 1} (same batch, same weights)`);
  }
  assert.notEqual(cutSteps[6].lr, cutSteps[0].lr, 'the schedule is not back at its start');
});

test('a checkpoint whose shard fails its checksum is skipped for the previous one', async () => {
  const t = await makeTiny();
  const out = path.join(t.root, 'ck');
  await new Trainer({ model: t.model, dataset: t.train, output_dir: out, train_type: 'llamapro', llamapro_new_blocks: 1, llamapro_groups: 1, stage_order: 'none', steps_per_stage: 4, save_steps: 2, per_device_train_batch_size: 4 }).train();
  const shard = path.join(out, 'checkpoint-4', 'shard-00000.safetensors');
  const bytes = fs.readFileSync(shard);
  bytes[bytes.length - 1] ^= 0xff;
  fs.writeFileSync(shard, bytes);
  const { latestCheckpoint } = await import('../worker/checkpoint.ts');
  assert.equal(latestCheckpoint(out)!.manifest.step, 2);
});

test('LoRA run: only adapters train, PEFT adapter_config, merged weights differ only on targets', async () => {
  const t = await makeTiny({ tie: true });
  const r = await new Trainer({ model: t.model, dataset: t.train, output_dir: path.join(t.root, 'lora'), train_type: 'lora', lora_rank: 4, lora_targets: 'q_proj,v_proj', stage_order: 'none', steps_per_stage: 6, learning_rate: 1e-2, per_device_train_batch_size: 4 }).train();
  assert.equal(r.trainableParams, 4 * (4 * 32 + 32 * 4 + 4 * 32 + 16 * 4), "rank-4 A and B on q_proj and v_proj of 4 layers");
  const peft = JSON.parse(fs.readFileSync(path.join(r.adapterDir, 'adapter_config.json'), 'utf8'));
  assert.equal(peft.peft_type, 'LORA');
  assert.deepEqual([...peft.target_modules].sort(), ['q_proj', 'v_proj']);
  const base = openCheckpoint(t.model);
  const final = openCheckpoint(r.finalDir);
  for (const n of base.names()) {
    const same = Buffer.compare(Buffer.from(base.readRaw(n).bytes), Buffer.from(final.readRaw(n).bytes)) === 0;
    assert.equal(same, !/(q_proj|v_proj)\.weight$/.test(n), n);
  }
});

test('distillation adds a KL term whose value is logged; full fine-tune trains every tensor', async () => {
  const t = await makeTiny({ layers: 2 });
  const out = path.join(t.root, 'distill');
  const r = await new Trainer({ model: t.model, dataset: t.train, output_dir: out, train_type: 'llamapro', llamapro_new_blocks: 2, stage_order: 'none', steps_per_stage: 3, learning_rate: 5e-2, distill_weight: 0.5, per_device_train_batch_size: 4 }).train();
  const steps = fs.readFileSync(path.join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l)).filter((l) => l.loss !== undefined);
  // Step 1 starts from the identity expansion, so student = teacher and KL is exactly 0; then it moves.
  assert.ok(Math.abs(steps[0].kl) < 1e-6, `first KL ${steps[0].kl}`);
  assert.ok(steps[2].kl > 0);
  assert.ok(r.distillSeconds > 0);

  const full = await new Trainer({ model: t.model, dataset: t.train, output_dir: path.join(t.root, 'full'), train_type: 'full', stage_order: 'none', steps_per_stage: 3, per_device_train_batch_size: 4 }).train();
  const base = openCheckpoint(t.model);
  const final = openCheckpoint(full.finalDir);
  for (const n of base.names()) assert.notDeepEqual(base.readRaw(n).bytes, final.readRaw(n).bytes, `${n} did not change`);
});

test('QLoRA + LLaMA Pro: frozen base linears in 4 bits, new blocks float; memory is reported', async () => {
  const t = await makeTiny();
  const r = await new Trainer({ model: t.model, dataset: t.train, output_dir: path.join(t.root, 'q'), train_type: 'llamapro', llamapro_new_blocks: 2, lora_rank: 2, quantize: '4bit', quant_block_size: 16, stage_order: 'none', steps_per_stage: 3, per_device_train_batch_size: 4 }).train();
  assert.ok(Number.isFinite(r.finalTrainLoss));
  assert.ok(r.memory.frozenLinearBytes < r.memory.frozenLinearFloat32Bytes / 5, JSON.stringify(r.memory));
  // The export folds LoRA into the float base weights; untouched tensors stay byte-identical.
  const base = openCheckpoint(t.model);
  assert.deepEqual(base.readRaw('model.embed_tokens.weight').bytes, openCheckpoint(r.finalDir).readRaw('model.embed_tokens.weight').bytes);
});
