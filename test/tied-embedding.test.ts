// A trainable tied embedding (Qwen2-style tie_word_embeddings, full fine-tune) split over the first and
// the last rank: both hold it, exchange and sum their gradients before the update, and stay
// bit-identical; pipelined runs (real processes) equal the single-process run and export it once.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import YAML from 'yaml';
import { openCheckpoint } from '../model/hf/checkpoint.ts';
import { openSafetensors } from '../model/hf/safetensors-read.ts';
import { Trainer } from '../local/trainer.ts';
import { launch } from '../supervisor/launch.ts';
import { losses, sameWeights } from './support/runs.ts';
import { makeTiny } from './support/tiny.ts';

const EMBED = 'model.embed_tokens.weight';

/** The last committed checkpoint's shard files, in rank order. */
function lastShards(out: string): string[] {
  const dirs = fs.readdirSync(out).filter((d) => /^checkpoint-\d+$/.test(d)).sort((a, b) => Number(a.split('-')[1]) - Number(b.split('-')[1]));
  const dir = path.join(out, dirs[dirs.length - 1]);
  return fs.readdirSync(dir).filter((f) => f.endsWith('.safetensors')).sort().map((f) => path.join(dir, f));
}

const bytesOf = (file: string, name: string) => {
  const f = openSafetensors(file);
  const b = Buffer.from(f.readRaw(name).bytes);
  f.close();
  return b;
};

test('a trainable tied embedding over the first and the last rank (2-worker 1F1B staged, 3-worker GPipe) equals the single-process run; both copies stay bit-identical', async () => {
  const t = await makeTiny({ tie: true });
  const base = { model: t.model, dataset: t.train, train_type: 'full' as const, learning_rate: 2e-2, per_device_train_batch_size: 4, gradient_accumulation_steps: 2, logging_steps: 1, seed: 4 };
  // Staged (the embedding trains in its group's stage only, and the exchange follows), then one stage.
  const cases = [
    { workers: 2, schedule: '1f1b', run: { ...base, steps_per_stage: 1 } },
    { workers: 3, schedule: 'gpipe', run: { ...base, stage_order: 'none', steps_per_stage: 3 } },
  ] as const;
  for (const c of cases) {
    const name = `${c.schedule}-${c.workers}`;
    const local = await new Trainer({ ...c.run, output_dir: path.join(t.root, `local-${name}`) }).train();
    const ref = losses(path.join(t.root, `local-${name}`));
    const out = path.join(t.root, name);
    const file = path.join(t.root, `${name}.yaml`);
    fs.writeFileSync(file, YAML.stringify({ ...c.run, output_dir: out }));
    const lines: string[] = [];
    const code = await launch({ workers: c.workers, coordinatorArgs: ['--config', file, '--schedule', c.schedule, '--metrics-port', '0', '--static-partition'], quiet: true, env: { PROPIPE_LOG_LEVEL: 'info' }, onLine: (tag, line) => lines.push(`${tag} ${line}`) });
    assert.equal(code, 0, lines.slice(-20).join('\n'));
    const got = losses(out);
    assert.equal(got.length, ref.length);
    got.forEach((l, i) => assert.ok(Math.abs(l - ref[i]) <= 1e-5 * Math.abs(ref[i]), `${name} step ${i + 1}: loss ${l} vs ${ref[i]}`));
    sameWeights(local.finalDir, path.join(out, 'final'));

    // The embedding trained, and the first and the last rank's copies (with their AdamW moments) are one bit pattern.
    const shards = lastShards(out);
    assert.equal(shards.length, c.workers);
    const [first, last] = [shards[0], shards[shards.length - 1]];
    for (const n of [`param.${EMBED}`, `exp_avg.${EMBED}`, `exp_avg_sq.${EMBED}`]) assert.ok(bytesOf(first, n).equals(bytesOf(last, n)), `${name}: ${n} differs between rank 0 and rank ${c.workers - 1}`);
    const baseEmbed = openCheckpoint(t.model).readF32(EMBED);
    const trained = openCheckpoint(path.join(out, 'final'));
    assert.ok(trained.readF32(EMBED).some((v, i) => v !== baseEmbed[i]), 'the tied embedding trained');
    // Exported once, still tied (no lm_head).
    assert.equal(trained.names().filter((n) => n === EMBED).length, 1);
    assert.ok(!trained.names().includes('lm_head.weight'));
  }
});
