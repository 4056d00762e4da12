// The step's gradient sums go through the backward graph: each backward (or W) takes the running sum of
// every trainable tensor and returns it with its micro-batch's gradient added, so no host pass over the
// gradients sits between a backward and the frame the other rank waits for. Same sums as adding the
// micro-batches' own gradients, bit for bit, on one graph and on ZB-H1's B/W pair.
import assert from 'node:assert/strict';
import path from 'node:path';
import { test } from 'node:test';
import { RangeProgram, type Batch } from '../model/llama/program.ts';
import { layerParamSpecs } from '../model/llama/param-specs.ts';
import { openPretrained } from '../model/hf/pretrained.ts';
import { makeBatch } from '../recipe/batch.ts';
import { readJsonl } from '../recipe/data.ts';
import { accumulateGrads } from '../model/train/adamw.ts';

const DIR = path.resolve(import.meta.dirname, 'fixtures/golden/llama-gqa');

test('a backward adds its gradients to the running sum it is given, as the host sum would (one graph and B/W)', async () => {
  const model = openPretrained(DIR);
  const { examples } = await readJsonl(path.join(DIR, 'data.jsonl'), { vocabSize: model.config.vocabSize });
  const b = makeBatch(examples);
  const h = model.config.hiddenSize;
  const trainable = new Set([1, 2].flatMap((l) => layerParamSpecs(model.config, l).map((s) => s.name)));
  const params = new Map([...trainable].map((n) => [n, model.load(n)]));
  const range = { start: 1, end: 3, embed: false, head: false };
  const batch = (k: number): Batch => ({ batch: b.batch, seq: b.seq, hidden: Float32Array.from({ length: b.batch * b.seq * h }, (_, i) => Math.sin(i * 0.37 + k)) });
  const outGrad = (k: number) => Float32Array.from({ length: b.batch * b.seq * h }, (_, i) => Math.cos(i * 0.11 + k) * 1e-2);
  for (const split of [false, true]) {
    const p = await RangeProgram.create({ config: model.config, range, trainable, load: model.load, inputGrad: true, splitBackward: split });
    const run = async (k: number, gradSums?: Map<string, Float32Array>) => {
      const x = batch(k);
      await p.forward(x, params);
      if (!split) return (await p.backward(x, params, { outGrad: outGrad(k), gradSums })).grads;
      const r = await p.backwardInput(x, params, { outGrad: outGrad(k) });
      return p.backwardWeight(x, params, { outGrad: outGrad(k), gradSums }, r.stash);
    };
    // Each micro-batch alone (no running sum: the graph adds a broadcast zero), then summed on the host.
    const alone = [await run(0), await run(1), await run(2)];
    const host = new Map<string, Float32Array>();
    for (const g of alone) accumulateGrads(host, new Map([...g].map(([n, v]) => [n, Float32Array.from(v)])));
    // Through the graph: the sum goes in and comes back with the next micro-batch added.
    let sums = await run(0);
    sums = await run(1, sums);
    sums = await run(2, sums);
    assert.equal(sums.size, trainable.size);
    for (const [n, v] of host) {
      const got = sums.get(n)!;
      assert.ok(got.every((x, i) => x === v[i]), `split ${split} ${n}: the running sum differs from the host sum`);
      assert.ok(v.some((x, i) => x !== alone[2].get(n)![i]), `${n}: the sum is more than the last micro-batch`);
    }
    await p.release();
  }
});
