// Sequence packing: examples packed into shared rows (block-diagonal causal mask, positions restarting
// per example) give each example the loss it has alone, the same gradients, and a packed program fed
// ordinary rows gives the ordinary results.
import assert from 'node:assert/strict';
import path from 'node:path';
import { test } from 'node:test';
import { IGNORE_INDEX } from '../common/labels.ts';
import { RangeProgram } from '../model/llama/program.ts';
import { wholeModel } from '../model/llama/range-graph.ts';
import { paramSpecs } from '../model/llama/param-specs.ts';
import { openPretrained } from '../model/hf/pretrained.ts';
import { makeBatch } from '../recipe/batch.ts';
import { readJsonl, type Example } from '../recipe/data.ts';
import { packExamples } from '../recipe/packing.ts';
import { maxRelError } from './support/compare.ts';

const DIR = path.resolve(import.meta.dirname, 'fixtures/golden/llama-gqa');

test('a packed row gives every example its unpacked loss, and the packed batch the unpacked gradients', async () => {
  const model = openPretrained(DIR);
  const { examples } = await readJsonl(path.join(DIR, 'data.jsonl'), { vocabSize: model.config.vocabSize });
  const all = new Set(paramSpecs(model.config).map((s) => s.name));
  const params = new Map([...all].map((n) => [n, model.load(n)]));
  const base = { config: model.config, range: wholeModel(model.config), trainable: all, load: model.load, inputGrad: false, rowLoss: true };
  const plain = await RangeProgram.create(base);
  const packed = await RangeProgram.create({ ...base, packed: true });

  const unpackedBatch = makeBatch(examples);
  const alone = (await plain.forward(unpackedBatch, params)).rowLoss;
  // The packed program on ordinary rows is the ordinary program.
  const same = await packed.forward(unpackedBatch, params);
  assert.ok(maxRelError(same.rowLoss, alone) <= 1e-6);

  const total = examples.reduce((n, e) => n + e.inputIds.length, 0);
  const rows = packExamples(examples, total);
  assert.equal(rows.length, 1, 'all examples share one row');
  // Only example k's labels kept: the row's loss is example k's loss alone.
  let at = 0;
  for (let k = 0; k < examples.length; k++) {
    const n = examples[k].inputIds.length;
    const labels = rows[0].labels.map((l, i) => (i >= at && i < at + n ? l : IGNORE_INDEX));
    const only: Example = { ...rows[0], labels };
    const got = (await packed.forward(makeBatch([only]), params)).rowLoss[0];
    assert.ok(Math.abs(got - alone[k]) <= 1e-5 * Math.abs(alone[k]), `example ${k}: packed ${got} vs alone ${alone[k]}`);
    at += n;
  }

  // Two packed rows of a smaller max_length, padded: same summed loss, token count and gradients.
  const two = packExamples(examples, 20);
  assert.ok(two.length >= 2 && two.length < examples.length, `${two.length} rows`);
  const pb = makeBatch(two);
  assert.equal(pb.targetTokens, unpackedBatch.targetTokens);
  const refB = await plain.backward(unpackedBatch, params, { lossScale: 1 });
  const gotB = await packed.backward(pb, params, { lossScale: 1 });
  assert.equal(gotB.tokenCount, refB.tokenCount);
  assert.ok(Math.abs(gotB.lossSum! - refB.lossSum!) <= 1e-5 * refB.lossSum!, `${gotB.lossSum} vs ${refB.lossSum}`);
  for (const [n, g] of refB.grads) assert.ok(maxRelError(gotB.grads.get(n)!, g) <= 1e-4, `${n}: ${maxRelError(gotB.grads.get(n)!, g)}`);

  await assert.rejects(plain.forward(pb, params), /built without packed/);
  await plain.release();
  await packed.release();
});
