// The step policy alone: every rule a step follows, decided from numbers, with no model or process.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseRunConfig, type RunConfigInput } from '../recipe/run-config.ts';
import { StepPolicy } from '../recipe/step-policy.ts';

const run = (o: Partial<RunConfigInput> = {}) => parseRunConfig({ model: 'm', dataset: 'd', output_dir: 'o', ...o }, 'test');
const ok = (stageSteps = 4, gradSqSum = 4) => ({ lossSum: 10, klSum: 0, tokens: 5, gradSqSum, stageSteps, position: { epoch: 0, index: 1 } });

test('clip scale from the global norm; a non-finite step is skipped, three in a row abort', () => {
  const p = new StepPolicy(run({ max_grad_norm: 1 }), 2, false);
  const d = p.afterStep(ok(10, 4));
  assert.equal(d.gradNorm, 2);
  assert.ok(Math.abs(d.clipScale - 0.5) < 1e-6);
  assert.equal(d.skip, false);
  for (let i = 0; i < 2; i++) {
    const bad = p.afterStep({ ...ok(10), gradSqSum: NaN });
    assert.equal(bad.skip, true);
    assert.equal(bad.clipScale, 0);
    assert.equal(bad.directive, 'CONTINUE');
  }
  const third = p.afterStep({ ...ok(10), lossSum: Infinity });
  assert.equal(third.directive, 'ABORT');
  assert.match(third.abortReason!, /3 consecutive steps/);
  // A finite step in between resets the count.
  const q = new StepPolicy(run(), 2, false);
  q.afterStep({ ...ok(10), gradSqSum: NaN });
  q.afterStep({ ...ok(10), gradSqSum: NaN });
  q.afterStep(ok(10));
  assert.equal(q.afterStep({ ...ok(10), gradSqSum: NaN }).directive, 'CONTINUE');
});

test('stages end after their length, the last one stops the run and is saved; the LR schedule sees the stage step', () => {
  const p = new StepPolicy(run({ steps_per_stage: 2 }), 2, false);
  const a = p.afterStep(ok(2));
  assert.deepEqual([a.stageStep, a.stage, a.directive, a.stageEnd], [0, 0, 'CONTINUE', undefined]);
  const b = p.afterStep(ok(2));
  assert.equal(b.stage, 1);
  assert.deepEqual(b.stageEnd, { stage: 0, steps: 2, ended: 'steps', bestValLoss: null });
  assert.deepEqual(p.state.position, { epoch: 0, index: 0 }, 'a new stage starts its data stream afresh');
  assert.equal(p.afterStep(ok(2)).stageStep, 0);
  const end = p.afterStep(ok(2));
  assert.equal(end.directive, 'STOP');
  assert.equal(end.save, true);
  assert.equal(p.state.step, 4);
  assert.equal(p.state.tokens, 20);
});

test('evaluation cadence, early stopping with patience, and the evaluation that closes each stage', () => {
  const p = new StepPolicy(run({ val_dataset: 'v', eval_steps: 1, early_stop_patience: 2, steps_per_stage: 10 }), 2, true);
  const losses = [3, 2, 2.5, 2.4];
  const out = losses.map((l) => {
    assert.equal(p.afterStep(ok(10)).directive, 'EVALUATE');
    return p.afterEval(l);
  });
  assert.deepEqual(out.map((d) => d.improved), [true, true, false, false]);
  assert.equal(out[3].earlyStop?.best, 2);
  assert.equal(out[3].stageEnd?.ended, 'early-stop');
  assert.equal(out[3].stage, 1);
  assert.deepEqual(p.state.earlyStop, { best: null, bad: 0 }, 'the next stage has its own patience');
  // No cadence, but validation data: the last step of a stage is still evaluated (not counted for patience).
  const q = new StepPolicy(run({ val_dataset: 'v', steps_per_stage: 2 }), 1, true);
  assert.equal(q.afterStep(ok(2)).directive, 'CONTINUE');
  assert.equal(q.afterStep(ok(2)).directive, 'EVALUATE');
  const last = q.afterEval(1.5);
  assert.equal(last.improved, null);
  assert.equal(last.directive, 'STOP');
  assert.equal(last.stageEnd?.bestValLoss, 1.5);
});

test('max_steps stops mid-stage and saves; save_steps saves on its cadence', () => {
  const p = new StepPolicy(run({ max_steps: 3, save_steps: 2 }), 3, false);
  assert.equal(p.afterStep(ok(10)).save, false);
  assert.equal(p.afterStep(ok(10)).save, true);
  const d = p.afterStep(ok(10));
  assert.equal(d.directive, 'STOP');
  assert.equal(d.save, true);
  assert.equal(d.stageEnd?.ended, 'max-steps');
});

test('restart continues from a state (resume and fail-over)', () => {
  const p = new StepPolicy(run({ steps_per_stage: 3 }), 2, false);
  p.restart({ step: 5, stage: 1, stageStep: 2, position: { epoch: 0, index: 8 }, earlyStop: { best: null, bad: 0 }, tokens: 50 });
  const d = p.afterStep(ok(3));
  assert.equal(d.step, 5);
  assert.equal(d.stageStep, 2);
  assert.equal(d.directive, 'STOP');
});
