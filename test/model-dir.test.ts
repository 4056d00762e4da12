// A model directory whose weights do not match its config.json: the error names the directory, the
// tensor and the shape config.json implies; it is permanent (exit 4): in one process, and in a pipelined
// job, where the workers stop at once and propipe launch exits 4 instead of restarting them.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { openSafetensors } from '../model/hf/safetensors-read.ts';
import { writeSafetensors } from '../model/hf/safetensors-write.ts';
import { propipe } from './support/cli.ts';
import { makeTiny } from './support/tiny.ts';

/** Rewrites model.safetensors without `drop` and with `reshape` given a new shape (and matching bytes). */
function editModel(dir: string, edit: { drop?: string; reshape?: [string, number[]] }): void {
  const file = path.join(dir, 'model.safetensors');
  const f = openSafetensors(file);
  const tensors = f
    .names()
    .filter((n) => n !== edit.drop)
    .map((n) => {
      if (edit.reshape?.[0] !== n) return { name: n, dtype: f.dtype(n), shape: f.shape(n), data: new Uint8Array(f.readRaw(n).bytes) };
      const shape = edit.reshape[1];
      return { name: n, dtype: 'F32' as const, shape, data: new Float32Array(shape.reduce((a, b) => a * b, 1)) };
    });
  f.close();
  writeSafetensors(file, tensors);
}

test('a missing tensor and a wrong shape are named with the directory and the shape config.json implies', async () => {
  const tiny = await makeTiny();
  const missing = path.join(tiny.root, 'missing');
  fs.cpSync(tiny.model, missing, { recursive: true });
  editModel(missing, { drop: 'model.layers.1.mlp.up_proj.weight' });
  const a = propipe(['train', '--model', missing, '--dataset', tiny.train, '--output-dir', path.join(tiny.root, 'o1'), '--train-type', 'full']);
  assert.equal(a.status, 4, a.stderr);
  assert.ok(a.stderr.includes(`${missing}: the checkpoint has no tensor 'model.layers.1.mlp.up_proj.weight' (is it a llama model with 4 layers?)`), a.stderr);

  const reshaped = path.join(tiny.root, 'reshaped');
  fs.cpSync(tiny.model, reshaped, { recursive: true });
  editModel(reshaped, { reshape: ['model.layers.2.self_attn.q_proj.weight', [32, 16]] });
  const b = propipe(['train', '--model', reshaped, '--dataset', tiny.train, '--output-dir', path.join(tiny.root, 'o2'), '--train-type', 'full']);
  assert.equal(b.status, 4, b.stderr);
  assert.ok(b.stderr.includes(`${reshaped}: tensor 'model.layers.2.self_attn.q_proj.weight' has shape [32,16], config.json implies [32,32]`), b.stderr);

  // Pipelined: the coordinator reads config.json only; the workers find the missing tensor and stop the job.
  const c = propipe(['launch', '--workers', '2', '--insecure', '--model', missing, '--dataset', tiny.train, '--output-dir', path.join(tiny.root, 'o3'), '--llamapro-new-blocks', '2', '--steps-per-stage', '2'], { PROPIPE_LOG_LEVEL: 'warn' });
  assert.equal(c.status, 4, c.stderr.slice(-3000));
  assert.match(c.stderr, /propipe launch: the job cannot run as configured: .*missing: the checkpoint has no tensor 'model\.layers\.1\.mlp\.up_proj\.weight'/);
  assert.equal(c.stderr.match(/no tensor 'model\.layers\.1\.mlp\.up_proj\.weight'/g)?.length, 1, 'the reason is printed once');
  assert.doesNotMatch(c.stderr, /process died: restarting it/);
});
