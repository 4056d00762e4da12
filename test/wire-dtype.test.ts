// Activations and gradients as bfloat16 on the wire (`wire_dtype: bf16`): frames carry half the bytes
// and round each value to bfloat16; a pipelined run then trains close to, but not exactly like, the
// float32 single-process run.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import YAML from 'yaml';
import { Trainer } from '../local/trainer.ts';
import { encodeFrames, FrameAssembler } from '../proto/frames.ts';
import { launch } from '../supervisor/launch.ts';
import { fromWire, toWire } from '../worker/wire-dtype.ts';
import { losses } from './support/runs.ts';
import { makeTiny } from './support/tiny.ts';

test('bf16 frames: half the bytes, chunked and reassembled, values within bfloat16 rounding', () => {
  const n = 3 * 40000;
  const x = Float32Array.from({ length: n }, (_, i) => Math.sin(i * 0.37) * 10 ** ((i % 7) - 3));
  const wire = toWire(x, [3, 400, 100], 'bf16');
  const frames = encodeFrames({ kind: 'GRADIENT', step: 2, microBatch: 1, tensor: wire }, 64 * 1024);
  assert.equal(frames.reduce((s, f) => s + f.tensor!.data.length, 0), 2 * n);
  assert.ok(frames.length > 1);
  const asm = new FrameAssembler();
  const got = frames.map((f) => asm.push(f)).find((f) => f !== null)!;
  assert.equal(got.tensor.dtype, 'bfloat16');
  const back = fromWire(got.tensor, 'test');
  for (let i = 0; i < n; i++) assert.ok(Math.abs(back[i] - x[i]) <= Math.abs(x[i]) * 2 ** -8, `element ${i}: ${back[i]} vs ${x[i]}`);
  assert.deepEqual(fromWire(toWire(x, [n], 'float32'), 'test'), x);
});

test('a 2-worker run with bf16 on the wire stays within 1 % of the float32 losses, and is not identical', async () => {
  const t = await makeTiny();
  const run = { model: t.model, dataset: t.train, train_type: 'full' as const, steps_per_stage: 3, learning_rate: 1e-2, per_device_train_batch_size: 4, gradient_accumulation_steps: 2, logging_steps: 1, seed: 5 };
  await new Trainer({ ...run, output_dir: path.join(t.root, 'local') }).train();
  const ref = losses(path.join(t.root, 'local'));
  const out = path.join(t.root, 'bf16');
  const file = path.join(t.root, 'bf16.yaml');
  fs.writeFileSync(file, YAML.stringify({ ...run, output_dir: out, wire_dtype: 'bf16' }));
  const lines: string[] = [];
  const code = await launch({ workers: 2, coordinatorArgs: ['--config', file, '--metrics-port', '0'], quiet: true, env: { PROPIPE_LOG_LEVEL: 'warn' }, onLine: (tag, line) => lines.push(`${tag} ${line}`) });
  assert.equal(code, 0, lines.slice(-20).join('\n'));
  const got = losses(out);
  assert.equal(got.length, ref.length);
  got.forEach((l, i) => assert.ok(Math.abs(l - ref[i]) <= 1e-2 * ref[i], `step ${i + 1}: ${l} vs ${ref[i]}`));
  assert.ok(got.some((l, i) => Math.abs(l - ref[i]) > 1e-6 * ref[i]), `bf16 frames changed nothing: ${got} vs ${ref}`);
});
