// The study: learning rates are chosen on B's dev loss alone, every method spends the same budget, the
// tables carry mean ± spread, and a real (tiny) study runs end to end and resumes without retraining.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { parseRunConfig } from '../recipe/run-config.ts';
import { trainedStack } from '../recipe/layout.ts';
import { randomModelConfig } from '../model/hf/init.ts';
import { ABLATIONS, BUDGETS, METHODS, NEW_BLOCKS, SEED_ADVICE, STUDY_MODEL } from '../study/plan.ts';
import { chooseLearningRate, runStudy } from '../study/run.ts';
import { formatStudy, stat } from '../study/summary.ts';

test('the learning rate is the one with the lowest B dev loss; diverged runs never win', () => {
  assert.equal(chooseLearningRate([{ lr: 1e-3, devLossB: 2 }, { lr: 3e-3, devLossB: 1.5 }, { lr: 1e-2, devLossB: NaN }]), 3e-3);
  assert.equal(chooseLearningRate([{ lr: 3e-3, devLossB: 1 }, { lr: 1e-3, devLossB: 1 }]), 1e-3, 'ties go to the smaller rate');
  assert.throws(() => chooseLearningRate([{ lr: 1, devLossB: Infinity }]), /diverged/);
  const s = stat([1, 2, 3]);
  assert.deepEqual([s.mean, s.sd, s.n], [2, 1, 3]);
});

test('every method of the study trains on the same budget; staged runs split it over their stages', () => {
  const b = BUDGETS.small;
  const base = { model: 'm', dataset: 'd', val_dataset: 'v', output_dir: 'o', seed: 1, threads: 1 };
  const budgetSteps = b.epochs * Math.ceil(b.bTrain / 16);
  const model = randomModelConfig({ ...STUDY_MODEL, corpus: [] });
  for (const m of METHODS) {
    const run = parseRunConfig(m.config(base, m.lr, b, SEED_ADVICE), m.name);
    assert.equal(run.val_dataset, 'v', `${m.name} evaluates on the dev split`);
    const stack = trainedStack(run, model.config, model.raw, null);
    assert.equal(stack.config.numLayers, 8 + (run.train_type === 'llamapro' ? NEW_BLOCKS : 0));
    const stages = stack.plan.stages.length;
    assert.equal(stages * run.steps_per_stage!, budgetSteps, `${m.name}: ${stages} stage(s) × ${run.steps_per_stage} steps`);
  }
  assert.ok(ABLATIONS.every((a) => a.values.includes(SEED_ADVICE[a.knob] ?? 1)), 'each ablation includes the seed default');
});

test('a tiny study runs end to end, writes its tables, and resumes without retraining', { timeout: 240_000 }, async () => {
  const out = fs.mkdtempSync(path.join(os.tmpdir(), 'propipe-study-'));
  const r = await runStudy({ out, seeds: 2, budget: 'tiny', threads: 1, methods: ['pro'] });
  assert.equal(r.cells.length, 2);
  assert.deepEqual(r.cells.map((c) => c.seed).sort(), [1, 2]);
  for (const c of r.cells) {
    assert.ok(c.accuracyA >= 0 && c.accuracyA <= 1 && Number.isFinite(c.lossB) && c.tokens > 0 && c.peakRssMB > 0);
  }
  assert.notEqual(r.cells[0].lossB, r.cells[1].lossB, 'seeds change the run');
  const text = formatStudy(r);
  assert.match(text, /LLaMA Pro \+4 at once \| 1\.0e-2 \| [\d.]+ ± [\d.]+% \|/);
  const firstMtime = fs.statSync(path.join(out, 'cells.jsonl')).mtimeMs;
  const again = await runStudy({ out, seeds: 2, budget: 'tiny', threads: 1, methods: ['pro'] });
  assert.deepEqual(again.cells, r.cells);
  assert.equal(fs.statSync(path.join(out, 'cells.jsonl')).mtimeMs, firstMtime, 'nothing was retrained');
  fs.rmSync(out, { recursive: true, force: true });
});
