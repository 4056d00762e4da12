// Splitting the stack into ranges (as pipeline ranks do) gives the whole model's gradients, frozen
// ranges build only what they must, and the prefix below the lowest trainable block has no backward.
import assert from 'node:assert/strict';
import path from 'node:path';
import { test } from 'node:test';
import { RangeProgram } from '../model/llama/program.ts';
import { wholeModel, type BlockRange } from '../model/llama/range-graph.ts';
import { paramSpecs } from '../model/llama/param-specs.ts';
import { openPretrained } from '../model/hf/pretrained.ts';
import { makeBatch } from '../recipe/batch.ts';
import { readJsonl } from '../recipe/data.ts';
import { trainableSet } from '../recipe/trainable.ts';
import { maxRelError } from './support/compare.ts';

const DIR = path.resolve(import.meta.dirname, 'fixtures/golden/llama-gqa');

async function setup() {
  const model = openPretrained(DIR);
  const { examples } = await readJsonl(path.join(DIR, 'data.jsonl'), { vocabSize: model.config.vocabSize });
  const batch = makeBatch(examples);
  const all = new Set(paramSpecs(model.config).map((s) => s.name));
  const params = new Map([...all].map((n) => [n, model.load(n)]));
  return { model, batch, all, params };
}

test('two ranges chained by activations and input gradients equal the whole model', async () => {
  const { model, batch, all, params } = await setup();
  const L = model.config.numLayers;
  const whole = await RangeProgram.create({ config: model.config, range: wholeModel(model.config), trainable: all, load: model.load, inputGrad: false });
  const ref = await whole.backward(batch, params, { lossScale: 1 / batch.targetTokens });
  for (let cut = 1; cut < L; cut++) {
    const first: BlockRange = { start: 0, end: cut, embed: true, head: false };
    const second: BlockRange = { start: cut, end: L, embed: false, head: true };
    const a = await RangeProgram.create({ config: model.config, range: first, trainable: all, load: model.load, inputGrad: false });
    const b = await RangeProgram.create({ config: model.config, range: second, trainable: all, load: model.load, inputGrad: true });
    const hidden = (await a.forward(batch, params)).hiddenOut;
    const rb = await b.backward({ ...batch, hidden }, params, { lossScale: 1 / batch.targetTokens });
    const ra = await a.backward(batch, params, { outGrad: rb.hiddenGrad });
    assert.ok(Math.abs(rb.lossSum! - ref.lossSum!) <= 1e-5 * ref.lossSum!);
    for (const [name, g] of ref.grads) {
      const got = ra.grads.get(name) ?? rb.grads.get(name);
      assert.ok(got, `${name} missing at cut ${cut}`);
      assert.ok(maxRelError(got, g) <= 1e-5, `${name} at cut ${cut}: ${maxRelError(got, g)}`);
    }
    await a.release();
    await b.release();
  }
  await whole.release();
});

test('a frozen range that gradients cross yields only the input gradient', async () => {
  const { model, batch, params } = await setup();
  const middle: BlockRange = { start: 1, end: 3, embed: false, head: true };
  const trainable = trainableSet(model.config, '0');
  const p = await RangeProgram.create({ config: model.config, range: middle, trainable, load: model.load, inputGrad: true });
  assert.deepEqual(p.trainableNames, []);
  assert.ok(p.hasBackward);
  const first = await RangeProgram.create({ config: model.config, range: { start: 0, end: 1, embed: true, head: false }, trainable, load: model.load, inputGrad: false });
  const hidden = (await first.forward(batch, params)).hiddenOut;
  const r = await p.backward({ ...batch, hidden }, params, { lossScale: 1 });
  assert.equal(r.grads.size, 0);
  assert.equal(r.hiddenGrad!.length, hidden.length);
  assert.ok(r.hiddenGrad!.some((v) => v !== 0));
});

test('a range below the lowest trainable block has no backward graph at all', async () => {
  const { model } = await setup();
  const trainable = trainableSet(model.config, '2');
  const p = await RangeProgram.create({ config: model.config, range: { start: 0, end: 2, embed: true, head: false }, trainable, load: model.load, inputGrad: false });
  assert.equal(p.hasBackward, false);
  await assert.rejects(() => p.backward({ batch: 1, seq: 2 }, new Map(), {}), /nothing to differentiate/);
});
