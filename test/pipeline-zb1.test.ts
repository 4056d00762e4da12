// The zero-bubble schedule for real: a 3-worker ZB-H1 run (nats-server, coordinator, worker
// processes) of a staged LLaMA Pro + LoRA + distillation job gives the losses and exported weights of
// the 1F1B run and of the single-process run, and its ranks ran split B and W passes. The job packs
// its examples (packing: true), so position ids cross the wire to every rank.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import YAML from 'yaml';
import { launch } from '../supervisor/launch.ts';
import { Trainer } from '../local/trainer.ts';
import { losses, sameWeights } from './support/runs.ts';
import { makeTiny } from './support/tiny.ts';

test('3-worker ZB-H1 equals 1F1B and the single-process run, on packed rows', async () => {
  const t = await makeTiny();
  const run = { model: t.model, dataset: t.train, train_type: 'llamapro' as const, llamapro_new_blocks: 2, lora_rank: 2, lora_targets: 'q_proj,down_proj', distill_weight: 0.3, steps_per_stage: 2, packing: true, max_length: 160, learning_rate: 1e-2, per_device_train_batch_size: 2, gradient_accumulation_steps: 4, logging_steps: 1, seed: 11 };
  const local = await new Trainer({ ...run, output_dir: path.join(t.root, 'local') }).train();
  const ref = losses(path.join(t.root, 'local'));
  assert.equal(ref.length, 4);
  const outs: Record<string, string> = {};
  for (const schedule of ['1f1b', 'zb1']) {
    const out = (outs[schedule] = path.join(t.root, schedule));
    const file = path.join(t.root, `${schedule}.yaml`);
    fs.writeFileSync(file, YAML.stringify({ ...run, output_dir: out }));
    const lines: string[] = [];
    const code = await launch({ workers: 3, coordinatorArgs: ['--config', file, '--schedule', schedule, '--metrics-port', '0', '--static-partition'], quiet: true, env: { PROPIPE_LOG_LEVEL: 'warn' }, onLine: (tag, line) => lines.push(`${tag} ${line}`) });
    assert.equal(code, 0, lines.slice(-20).join('\n'));
    const got = losses(out);
    assert.equal(got.length, ref.length);
    got.forEach((l, i) => assert.ok(Math.abs(l - ref[i]) <= 1e-5 * Math.abs(ref[i]), `${schedule} step ${i + 1}: ${l} vs ${ref[i]}`));
    sameWeights(local.finalDir, path.join(out, 'final'));
  }
  sameWeights(path.join(outs['1f1b'], 'final'), path.join(outs.zb1, 'final'));
  // The ZB-H1 ranks that train ran weight passes, deferred behind input-gradient passes.
  const trace = fs.readFileSync(path.join(outs.zb1, 'trace.json'), 'utf8').trim().split('\n').slice(1, -2).map((l) => JSON.parse(l.replace(/,$/, '')));
  assert.ok(trace.some((e) => /^W\d/.test(e.name)), 'weight-gradient spans in the ZB-H1 trace');
  assert.ok(!fs.readFileSync(path.join(outs['1f1b'], 'trace.json'), 'utf8').includes('"W0"'), '1F1B runs no split passes');
});
