// Distillation with a teacher per rank: each rank runs the original blocks of its own range over the
// frozen buffers the student reads, the teacher's hidden state travels beside the student's, and no
// rank builds the whole base model. Pipelined runs (real processes) equal the single-process run.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import YAML from 'yaml';
import { openPretrained } from '../model/hf/pretrained.ts';
import { encodeFrames, FrameAssembler, FrameError } from '../proto/frames.ts';
import { frozenWholeModel } from '../model/llama/program.ts';
import type { BlockRange } from '../model/llama/range-graph.ts';
import { parseRunConfig } from '../recipe/run-config.ts';
import { Trainer } from '../local/trainer.ts';
import { launch } from '../supervisor/launch.ts';
import { Rank } from '../worker/rank.ts';
import { prepareModel } from '../worker/training-model.ts';
import { maxRelError } from './support/compare.ts';
import { losses, recordsPerAssignment, sameWeights } from './support/runs.ts';
import { makeTiny } from './support/tiny.ts';

// 4 original blocks + 2 new ones (groups of 2): the expanded stack is 0 1 [2] 3 4 [5], new in brackets.
const NEW_BLOCKS = new Set([2, 5]);

test('each rank builds a teacher of its own original blocks over the student\'s buffers; chained, they are the one-rank teacher and the base model', async () => {
  const t = await makeTiny();
  const input = { model: t.model, dataset: t.train, output_dir: path.join(t.root, 'out'), train_type: 'llamapro' as const, llamapro_new_blocks: 2 };
  const partition: BlockRange[] = [{ start: 0, end: 3, embed: true, head: false }, { start: 3, end: 6, embed: false, head: true }];
  const ranks: Rank[] = [];
  for (let r = 0; r < partition.length; r++) {
    // One model per rank, as in separate processes: each holds only its range's frozen weights.
    const withTeacher = new Rank(parseRunConfig({ ...input, distill_weight: 0.5 }), prepareModel(parseRunConfig(input)), r, partition);
    const plain = new Rank(parseRunConfig(input), prepareModel(parseRunConfig(input)), r, partition);
    await withTeacher.enterStage(0);
    await plain.enterStage(0);
    assert.deepEqual(withTeacher.teacher!.range, partition[r], 'the teacher covers this rank\'s range, not the whole model');
    assert.deepEqual(withTeacher.teacher!.layers, [[0, 1], [3, 4]][r]);
    assert.equal(plain.teacher, null);
    // The teacher reads the frozen buffers the student already holds: distillation loads no weight.
    assert.equal(withTeacher.model.frozen.bytes, plain.model.frozen.bytes);
    await plain.release();
    ranks.push(withTeacher);
  }

  // Chained over the two ranks, the teachers give the hidden state the one-rank teacher gives, and the
  // head's graph turns it into the base model's logits: at step 0 the expanded student is the base
  // (new blocks are identities), so its KL against the teacher is 0 and its loss is the base's.
  const ids = BigInt64Array.from({ length: 2 * 9 }, (_, i) => BigInt((i * 37 + 5) % 300));
  const batch = { batch: 2, seq: 9, inputIds: ids, labels: ids };
  const teacherHidden = await ranks[1].teacher!.forward(batch, await ranks[0].teacher!.forward(batch, undefined));
  const single = new Rank(parseRunConfig({ ...input, distill_weight: 0.5 }), prepareModel(parseRunConfig(input)), 0, [{ start: 0, end: 6, embed: true, head: true }]);
  await single.enterStage(0);
  assert.deepEqual(single.teacher!.layers, [0, 1, 3, 4]);
  const alone = await single.teacher!.forward(batch, undefined);
  assert.ok(maxRelError(teacherHidden, alone) <= 1e-6, `chained teachers vs one: ${maxRelError(teacherHidden, alone)}`);
  const r = await single.program!.backward({ ...batch, teacherHidden: alone }, single.values, { lossScale: 1 });
  assert.ok(Math.abs(r.klSum!) < 1e-5, `KL at step 0: ${r.klSum}`);
  const base = openPretrained(t.model);
  const whole = await frozenWholeModel(base.config, base.load, { logits: true });
  const expected = (await whole.forward(batch, new Map())).lossSum;
  assert.ok(Math.abs(r.lossSum! - expected) <= 1e-5 * Math.abs(expected), `loss ${r.lossSum} vs the base model's ${expected}`);
  // A wrong teacher is seen: the first rank's hidden state in place of the whole stack's.
  const wrong = await single.program!.backward({ ...batch, teacherHidden: await ranks[0].teacher!.forward(batch, undefined) }, single.values, { lossScale: 1 });
  assert.ok(wrong.klSum! > 1e-3, `KL against a wrong teacher: ${wrong.klSum}`);
  for (const r of [...ranks, single]) await r.release();
  await whole.release();
});

/** Each "teacher built" line of a worker, with the block range it was assigned just before. */
function teachersBuilt(lines: string[], worker: string): { assigned: number[]; blocks: number[]; skipped: number[]; embed: boolean; head: boolean }[] {
  return recordsPerAssignment(lines, worker, 'teacher built for this range').map(({ assigned, rec }) => ({ assigned, blocks: rec.blocks as number[], skipped: rec.skipped as number[], embed: rec.embed as boolean, head: rec.head as boolean }));
}

test('pipelined distillation (2-worker GPipe with a re-plan, 3-worker 1F1B) equals the single-process run', async () => {
  const t = await makeTiny();
  const run = { model: t.model, dataset: t.train, train_type: 'llamapro' as const, llamapro_new_blocks: 2, distill_weight: 1, distill_temperature: 2, steps_per_stage: 2, learning_rate: 3e-2, per_device_train_batch_size: 4, gradient_accumulation_steps: 2, logging_steps: 1, seed: 3 };
  const local = await new Trainer({ ...run, output_dir: path.join(t.root, 'local') }).train();
  const ref = losses(path.join(t.root, 'local'));
  const kl = (dir: string) => fs.readFileSync(path.join(dir, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l)).filter((r) => typeof r.kl === 'number').map((r) => r.kl as number);
  const refKl = kl(path.join(t.root, 'local'));
  assert.equal(ref.length, 4);
  assert.ok(refKl[refKl.length - 1] > 1e-4, `the student moved away from the teacher: KL ${refKl}`);

  for (const [workers, schedule, extra] of [[2, 'gpipe', []], [3, '1f1b', ['--static-partition']]] as const) {
    const out = path.join(t.root, `${schedule}-${workers}`);
    const file = path.join(t.root, `${schedule}.yaml`);
    fs.writeFileSync(file, YAML.stringify({ ...run, output_dir: out }));
    const lines: string[] = [];
    const code = await launch({ workers, coordinatorArgs: ['--config', file, '--schedule', schedule, '--metrics-port', '0', ...extra], quiet: true, env: { PROPIPE_LOG_LEVEL: 'info' }, onLine: (tag, line) => lines.push(`${tag} ${line}`) });
    assert.equal(code, 0, lines.slice(-20).join('\n'));
    const got = losses(out);
    got.forEach((l, i) => assert.ok(Math.abs(l - ref[i]) <= 1e-5 * Math.abs(ref[i]), `${schedule} step ${i + 1}: loss ${l} vs ${ref[i]}`));
    kl(out).forEach((k, i) => assert.ok(Math.abs(k - refKl[i]) <= 1e-5 * Math.abs(refKl[i]) + 1e-9, `${schedule} step ${i + 1}: KL ${k} vs ${refKl[i]}`));
    sameWeights(local.finalDir, path.join(out, 'final'));

    // What was built: on every worker, per assignment, one teacher of exactly its range's original blocks.
    for (let w = 0; w < workers; w++) {
      const built = teachersBuilt(lines, `w${w}`);
      assert.ok(built.length >= 1, `worker ${w} built a teacher`);
      for (const b of built) {
        assert.deepEqual(b.blocks, b.assigned.filter((l) => !NEW_BLOCKS.has(l)), `worker ${w}: teacher of blocks ${b.assigned}`);
        assert.deepEqual(b.skipped, b.assigned.filter((l) => NEW_BLOCKS.has(l)));
        assert.ok(!(b.embed && b.head), `worker ${w} built a teacher of the whole base model`);
      }
    }
    const assignments = lines.filter((l) => l.includes('"msg":"assigned"')).length;
    assert.equal(lines.filter((l) => l.includes('teacher built for this range')).length, assignments, 'one teacher per assignment, kept across stages');
  }
});

test('the teacher\'s hidden state travels in the activation frames, chunked in step with the student\'s', () => {
  const student = Float32Array.from({ length: 2 * 3 * 50 }, (_, i) => i * 0.5);
  const teacher = Float32Array.from(student, (x) => -x);
  const shape = [2, 3, 50];
  const frames = encodeFrames({ kind: 'ACTIVATION', step: 1, microBatch: 0, tensor: { dtype: 'float32', shape, data: student }, teacher: { dtype: 'float32', shape, data: teacher } }, 256);
  assert.ok(frames.length > 4 && frames.every((f) => f.teacher!.data.length === f.tensor!.data.length));
  const assembler = new FrameAssembler();
  const got = frames.map((f) => assembler.push(f)).pop()!;
  assert.deepEqual(got.tensor.data, student);
  assert.deepEqual(got.teacher!.data, teacher);
  // A chunk that drops the teacher's part is refused, naming it.
  const broken = frames.map((f, i) => (i === 2 ? { ...f, teacher: null } : f));
  const again = new FrameAssembler();
  assert.throws(() => broken.forEach((f) => again.push(f)), (e: Error) => e instanceof FrameError && /teacher's hidden state/.test(e.message));
  assert.throws(() => encodeFrames({ kind: 'ACTIVATION', step: 1, microBatch: 0, tensor: { dtype: 'float32', shape, data: student }, teacher: { dtype: 'float32', shape: [2, 3, 25], data: teacher.subarray(0, 150) } }), /must match the activation/);
});
