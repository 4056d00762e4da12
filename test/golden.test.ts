// Loss and every gradient against the independent PyTorch reference (test/fixtures/golden), through
// the real CLI: max relative error ≤ 1e-4 in float32.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { paramSpecs } from '../model/llama/param-specs.ts';
import { loadConfig } from '../model/hf/config.ts';
import { openSafetensors } from '../model/hf/safetensors-read.ts';
import { propipe } from './support/cli.ts';
import { maxRelError } from './support/compare.ts';

const FIXTURES = path.resolve(import.meta.dirname, 'fixtures/golden');

for (const name of ['llama-gqa', 'qwen2-tied']) {
  const dir = path.join(FIXTURES, name);
  const golden = openSafetensors(path.join(dir, 'golden.safetensors'));

  test(`${name}: eval loss matches PyTorch`, () => {
    const r = propipe(['eval', '--model', dir, '--data', path.join(dir, 'data.jsonl'), '--json']);
    assert.equal(r.status, 0, r.stderr);
    const out = JSON.parse(r.stdout);
    assert.equal(out.tokens, golden.readF32('tokens')[0]);
    assert.ok(Math.abs(out.loss - golden.readF32('loss')[0]) <= 1e-4 * golden.readF32('loss')[0], `loss ${out.loss}`);
    assert.ok(Math.abs(out.perplexity - Math.exp(out.loss)) < 1e-9);
  });

  test(`${name}: every gradient matches PyTorch (batch of 1 and of all lines)`, () => {
    const { config } = loadConfig(dir);
    for (const batchSize of ['1', '8']) {
      const out = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'propipe-grad-')), 'g.safetensors');
      const r = propipe(['grad', '--model', dir, '--data', path.join(dir, 'data.jsonl'), '--out', out, '--batch-size', batchSize]);
      assert.equal(r.status, 0, r.stderr);
      const grads = openSafetensors(out);
      const names = paramSpecs(config).map((s) => s.name);
      assert.deepEqual(grads.names().sort(), [...names].sort());
      for (const n of names) {
        assert.deepEqual(grads.shape(n), golden.shape(`grad.${n}`), n);
        const err = maxRelError(grads.readF32(n), golden.readF32(`grad.${n}`));
        assert.ok(err <= 1e-4, `${n}: max relative error ${err} (batch size ${batchSize})`);
      }
    }
  });

  test(`${name}: --trainable restricts the output to those blocks`, () => {
    const out = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'propipe-grad-')), 'g.safetensors');
    const r = propipe(['grad', '--model', dir, '--data', path.join(dir, 'data.jsonl'), '--out', out, '--trainable', '1,norm']);
    assert.equal(r.status, 0, r.stderr);
    const grads = openSafetensors(out);
    assert.ok(grads.names().length > 0);
    for (const n of grads.names()) {
      assert.ok(n.startsWith('model.layers.1.') || n === 'model.norm.weight', n);
      assert.ok(maxRelError(grads.readF32(n), golden.readF32(`grad.${n}`)) <= 1e-4, n);
    }
  });
}

test('grad rejects a bad --trainable with a message naming it', () => {
  const dir = path.join(FIXTURES, 'llama-gqa');
  const r = propipe(['grad', '--model', dir, '--data', path.join(dir, 'data.jsonl'), '--out', '/tmp/x.safetensors', '--trainable', '7']);
  assert.equal(r.status, 2);
  assert.match(r.stderr, /--trainable: block range '7' is outside 0..2/);
});
