// stashPrefix: a rank whose lowest blocks only run forward keeps the hidden state its forward reached at
// the first trainable block, and its backward starts there instead of recomputing the frozen prefix.
// Same gradients as the recomputing backward, fewer blocks in the graph, and the stash goes with the backward.
import assert from 'node:assert/strict';
import path from 'node:path';
import { test } from 'node:test';
import { programGraphs, RangeProgram, type Batch, type ProgramOptions } from '../model/llama/program.ts';
import type { BlockRange } from '../model/llama/range-graph.ts';
import { layerParamSpecs } from '../model/llama/param-specs.ts';
import { openPretrained } from '../model/hf/pretrained.ts';
import { makeBatch } from '../recipe/batch.ts';
import { readJsonl } from '../recipe/data.ts';
import { maxRelError } from './support/compare.ts';

const DIR = path.resolve(import.meta.dirname, 'fixtures/golden/llama-gqa');

async function setup(range: BlockRange) {
  const model = openPretrained(DIR);
  const { examples } = await readJsonl(path.join(DIR, 'data.jsonl'), { vocabSize: model.config.vocabSize });
  const b = makeBatch(examples);
  const h = model.config.hiddenSize;
  // Block 2 of 3 trains: blocks 0 and 1 (and the embedding) are the frozen prefix of a range from 0.
  const trainable = new Set(layerParamSpecs(model.config, 2).map((s) => s.name));
  const params = new Map([...trainable].map((n) => [n, model.load(n)]));
  const hidden = Float32Array.from({ length: b.batch * b.seq * h }, (_, i) => Math.sin(i * 0.37));
  const batch = (): Batch => ({ batch: b.batch, seq: b.seq, inputIds: range.embed ? b.inputIds : undefined, hidden: range.embed ? undefined : hidden, labels: b.labels });
  const outGrad = Float32Array.from({ length: b.batch * b.seq * h }, (_, i) => Math.cos(i * 0.11) * 1e-2);
  const o: ProgramOptions = { config: model.config, range, trainable, load: model.load, inputGrad: false };
  return { model, o, params, batch, outGrad };
}

const ranges: [string, BlockRange][] = [
  ['rank 0 (embedding + blocks 0..2)', { start: 0, end: 3, embed: true, head: false }],
  ['a middle rank (blocks 1..2)', { start: 1, end: 3, embed: false, head: false }],
];

for (const [name, range] of ranges) {
  test(`${name}: the stashing backward graph holds no prefix block and gives the recomputing one's gradients`, async () => {
    const { o, params, batch, outGrad } = await setup(range);
    const stashing = programGraphs({ ...o, stashPrefix: true });
    const recomputing = programGraphs(o);
    assert.equal(stashing.stashFrom, 2);
    assert.equal(recomputing.stashFrom, null);
    const prefixInputs = (g: typeof stashing.backward) => g!.inputs.filter((n) => /^model\.(layers\.[01]\.|embed_tokens)/.test(n));
    assert.deepEqual(prefixInputs(stashing.backward), [], 'no weight of blocks 0, 1 or the embedding in the backward graph');
    assert.ok(prefixInputs(recomputing.backward).length > 0, 'the recomputing backward reads the prefix weights');
    assert.ok(stashing.backward!.nodes.length < recomputing.backward!.nodes.length);

    for (const split of [false, true]) {
      const a = await RangeProgram.create({ ...o, stashPrefix: true, splitBackward: split });
      const b = await RangeProgram.create({ ...o, splitBackward: split });
      const grads = async (p: RangeProgram) => {
        const x = batch();
        const hiddenOut = (await p.forward(x, params)).hiddenOut;
        if (!split) return { hiddenOut, grads: (await p.backward(x, params, { outGrad })).grads };
        const r = await p.backwardInput(x, params, { outGrad });
        return { hiddenOut, grads: await p.backwardWeight(x, params, { outGrad }, r.stash) };
      };
      const [ga, gb] = [await grads(a), await grads(b)];
      assert.ok(maxRelError(ga.hiddenOut, gb.hiddenOut) <= 1e-6);
      assert.equal(ga.grads.size, params.size);
      for (const [n, g] of gb.grads) assert.ok(maxRelError(ga.grads.get(n)!, g) <= 1e-5, `split ${split} ${n}: ${maxRelError(ga.grads.get(n)!, g)}`);
      await Promise.all([a.release(), b.release()]);
    }
  });
}

test('a stashing program backs up only from a forward of the same batch, once: the stash goes with the backward', async () => {
  const { o, params, batch, outGrad } = await setup({ start: 0, end: 3, embed: true, head: false });
  const p = await RangeProgram.create({ ...o, stashPrefix: true });
  assert.equal(p.stashFrom, 2);
  await assert.rejects(p.backward(batch(), params, { outGrad }), /run forward on the same Batch object first/);
  const x = batch();
  await p.forward(x, params);
  await p.backward(x, params, { outGrad });
  await assert.rejects(p.backward(x, params, { outGrad }), /run forward on the same Batch object first/, 'released after the backward');
  await p.release();
});

test('stashPrefix changes nothing where no prefix is frozen or the forward is folded in', async () => {
  const { model, o } = await setup({ start: 0, end: 3, embed: true, head: false });
  const all = new Set([0, 1, 2].flatMap((l) => layerParamSpecs(model.config, l).map((s) => s.name)));
  assert.equal(programGraphs({ ...o, trainable: all, stashPrefix: true }).stashFrom, null, 'block 0 trains');
  assert.equal(programGraphs({ ...o, range: { start: 0, end: 3, embed: true, head: true }, stashPrefix: true }).stashFrom, null, 'the head range');
  assert.equal(programGraphs({ ...o, range: { start: 1, end: 3, embed: false, head: false }, inputGrad: true, stashPrefix: true }).stashFrom, null, 'the rank below needs an input gradient');
});
