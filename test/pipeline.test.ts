// The pipeline for real: nats-server, a coordinator and worker processes on loopback. A 2-worker GPipe
// run and a 3-worker 1F1B run of a staged LLaMA Pro job (+LoRA, +distillation) give the losses and exported weights of the
// single-process run, across a stage transition (and the re-plan it triggers), and a rank whose NATS
// delivery is late waits instead of running a stale mask.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import YAML from 'yaml';
import { launch } from '../supervisor/launch.ts';
import { Trainer } from '../local/trainer.ts';
import { losses, sameWeights } from './support/runs.ts';
import { makeTiny } from './support/tiny.ts';

test('pipelined runs equal the single-process run: 2-worker GPipe, 3-worker 1F1B with a delayed NATS rank', async () => {
  const t = await makeTiny({ layers: 8 });
  const run = { model: t.model, dataset: t.train, val_dataset: t.val, train_type: 'llamapro' as const, llamapro_new_blocks: 2, lora_rank: 2, lora_targets: 'q_proj,down_proj', distill_weight: 0.3, steps_per_stage: 3, eval_steps: 2, learning_rate: 1e-2, per_device_train_batch_size: 4, gradient_accumulation_steps: 3, logging_steps: 1, seed: 11 };
  const local = await new Trainer({ ...run, output_dir: path.join(t.root, 'local') }).train();
  const ref = losses(path.join(t.root, 'local'));
  assert.equal(ref.length, 6);

  // GPipe re-plans at the stage transition (ranks save, re-register and resume on a new split);
  // 1F1B keeps its partition, so its ranks switch masks in place on the NATS signal.
  // The 1F1B run moves frames over the socket data plane (the default), the GPipe run over the gRPC
  // peer stream (--data-plane grpc): both must give the single-process result.
  for (const [workers, schedule, extra, plane] of [[2, 'gpipe', [], 'grpc'], [3, '1f1b', ['--static-partition'], 'socket']] as const) {
    const out = path.join(t.root, `${schedule}-${workers}`);
    const file = path.join(t.root, `${schedule}.yaml`);
    fs.writeFileSync(file, YAML.stringify({ ...run, output_dir: out }));
    const lines: string[] = [];
    const delayed = workers - 1;
    const code = await launch({
      workers,
      coordinatorArgs: ['--config', file, '--schedule', schedule, '--metrics-port', '0', ...extra],
      workerArgs: ['--data-plane', plane],
      workerEnv: (i): Record<string, string> => (i === delayed ? { PROPIPE_TEST_NATS_DELAY_MS: '1500' } : {}),
      quiet: true,
      env: { PROPIPE_LOG_LEVEL: 'info' },
      onLine: (tag, line) => lines.push(`${tag} ${line}`),
    });
    assert.equal(code, 0, lines.slice(-20).join('\n'));
    const planes = lines.filter((l) => l.includes('serving peer frames')).map((l) => JSON.parse(l.slice(l.indexOf('{'))).dataPlane);
    assert.ok(planes.length >= workers && planes.every((p) => p === plane), `every worker served frames over ${plane}: ${planes}`);
    const got = losses(out);
    assert.equal(got.length, ref.length);
    got.forEach((l, i) => assert.ok(Math.abs(l - ref[i]) <= 1e-5 * Math.abs(ref[i]), `${schedule} step ${i + 1}: ${l} vs ${ref[i]}`));
    sameWeights(local.finalDir, path.join(out, 'final'));
    if (extra.length === 0) {
      assert.ok(lines.some((l) => l.includes('re-planning the partition')), 'GPipe run re-planned at the transition');
      continue;
    }
    // The delayed worker learned stage 2 at the barrier and waited for its signal before building.
    const entering = lines.filter((l) => l.startsWith(`w${delayed} `) && l.includes('entering stage')).map((l) => JSON.parse(l.slice(l.indexOf('{'))));
    assert.ok(entering.length >= 1, 'the delayed worker entered the next stage');
    assert.ok(entering.every((e) => e.waitedMs >= 1000 || e.via === 'grpc'), JSON.stringify(entering));
    // The timeline has spans from every rank.
    const trace = fs.readFileSync(path.join(out, 'trace.json'), 'utf8').trim().split('\n').slice(1, -2).map((l) => JSON.parse(l.replace(/,$/, '')));
    assert.deepEqual([...new Set(trace.map((e) => e.tid))].sort(), Array.from({ length: workers }, (_, i) => i));
    assert.ok(trace.some((e) => e.name.startsWith('B')) && trace.some((e) => e.name.startsWith('send')));
  }
});
