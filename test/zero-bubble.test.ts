// The zero-bubble backward split: the input-gradient graph B and the weight-gradient graph W of a
// range give the gradients of the one-graph backward, W recomputes nothing B ran, and the ZB-H1
// schedule is deadlock-free with a smaller bubble than 1F1B.
import assert from 'node:assert/strict';
import path from 'node:path';
import { test } from 'node:test';
import { RangeProgram } from '../model/llama/program.ts';
import { type BlockRange } from '../model/llama/range-graph.ts';
import { paramSpecs } from '../model/llama/param-specs.ts';
import { openPretrained } from '../model/hf/pretrained.ts';
import { makeBatch } from '../recipe/batch.ts';
import { readJsonl } from '../recipe/data.ts';
import { trainableSet } from '../recipe/trainable.ts';
import { formatSchedule, roles, schedule, simulate, type ScheduleKind } from '../recipe/schedule.ts';
import { maxRelError } from './support/compare.ts';

const DIR = path.resolve(import.meta.dirname, 'fixtures/golden/llama-gqa');

test('B then W equal the one-graph backward on a head range and a middle range (full and frozen-weights)', async () => {
  const model = openPretrained(DIR);
  const { examples } = await readJsonl(path.join(DIR, 'data.jsonl'), { vocabSize: model.config.vocabSize });
  const batch = makeBatch(examples);
  const params = new Map(paramSpecs(model.config).map((s) => [s.name, model.load(s.name)]));
  const L = model.config.numLayers;
  const first: BlockRange = { start: 0, end: 1, embed: true, head: false };
  const top: BlockRange = { start: 1, end: L, embed: false, head: true };
  for (const trainable of [new Set(params.keys()), trainableSet(model.config, '0')]) {
    const lower = await RangeProgram.create({ config: model.config, range: first, trainable, load: model.load, inputGrad: false });
    const hidden = (await lower.forward(batch, params)).hiddenOut;
    const b = { ...batch, hidden };
    const seed = { lossScale: 1 / batch.targetTokens };
    const one = await RangeProgram.create({ config: model.config, range: top, trainable, load: model.load, inputGrad: true });
    const two = await RangeProgram.create({ config: model.config, range: top, trainable, load: model.load, inputGrad: true, splitBackward: true });
    const ref = await one.backward(b, params, seed);
    const bi = await two.backwardInput(b, params, seed);
    assert.equal(bi.lossSum, ref.lossSum);
    assert.equal(bi.tokenCount, ref.tokenCount);
    assert.ok(maxRelError(bi.hiddenGrad!, ref.hiddenGrad!) <= 1e-6, `hidden grad ${maxRelError(bi.hiddenGrad!, ref.hiddenGrad!)}`);
    assert.deepEqual(Object.keys(bi.stash).sort(), [...two.stashNames].sort());
    // W starts where B stopped: about an input and an output gradient per weight, not B's internals.
    assert.ok(two.stashNames.length <= 2 * one.trainableNames.length + 2, `${two.stashNames.length} stashed values for ${one.trainableNames.length} weights`);
    const w = await two.backwardWeight(b, params, seed, bi.stash);
    assert.deepEqual([...w.keys()].sort(), [...ref.grads.keys()].sort());
    for (const [n, g] of ref.grads) assert.ok(maxRelError(w.get(n)!, g) <= 1e-6, `${n}: ${maxRelError(w.get(n)!, g)}`);
    // The lower range has no input gradient: B is empty and W is its whole backward.
    const lowerSplit = await RangeProgram.create({ config: model.config, range: first, trainable, load: model.load, inputGrad: false, splitBackward: true });
    if (lowerSplit.hasBackward) {
      const lb = await lowerSplit.backwardInput(batch, params, { outGrad: ref.hiddenGrad });
      assert.equal(lb.hiddenGrad, undefined);
      const lw = await lowerSplit.backwardWeight(batch, params, { outGrad: ref.hiddenGrad }, lb.stash);
      const lref = await lower.backward(batch, params, { outGrad: ref.hiddenGrad });
      for (const [n, g] of lref.grads) assert.ok(maxRelError(lw.get(n)!, g) <= 1e-6, `${n}`);
    }
    await assert.rejects(two.backward(b, params, seed), /backwardInput and backwardWeight/);
    for (const p of [lower, one, two, lowerSplit]) await p.release();
  }
});

const plans = (kind: ScheduleKind, backward: boolean[], m: number) => roles(backward).map((r) => schedule(kind, r, m));
const uniform = (P: number, f: number, b: number, w: number) => ({ forward: new Array(P).fill(f), backward: new Array(P).fill(b + w), backwardInput: new Array(P).fill(b), backwardWeight: new Array(P).fill(w) });

test('ZB-H1 order for P=4, M=6 (printed): rank r defers r weight passes', () => {
  assert.deepEqual(plans('zb1', [true, true, true, true], 6).map(formatSchedule), [
    'F0 F1 F2 F3 B0 W0 F4 B1 W1 F5 B2 W2 B3 W3 B4 W4 B5 W5',
    'F0 F1 F2 B0 F3 B1 W0 F4 B2 W1 F5 B3 W2 B4 W3 B5 W4 W5',
    'F0 F1 B0 F2 B1 F3 B2 W0 F4 B3 W1 F5 B4 W2 B5 W3 W4 W5',
    'F0 B0 F1 B1 F2 B2 F3 B3 W0 F4 B4 W1 F5 B5 W2 W3 W4 W5',
  ]);
});

test('ZB-H1 runs without deadlock for P=2..4, M=1..8, keeps 1F1B memory, and its bubble is below 1F1B whenever W > 0', () => {
  for (let P = 2; P <= 4; P++) {
    for (let M = 1; M <= 8; M++) {
      for (const [f, b, w] of [[1, 1, 1], [1, 1.5, 0.5], [2, 1, 1]]) {
        const c = uniform(P, f, b, w);
        const zb = simulate(plans('zb1', new Array(P).fill(true), M), c);
        const ofob = simulate(plans('1f1b', new Array(P).fill(true), M), c);
        assert.ok(zb.bubble < ofob.bubble - 1e-9, `P=${P} M=${M} F=${f} B=${b} W=${w}: zb1 ${zb.bubble} vs 1f1b ${ofob.bubble}`);
        // Paper: (P-1)(F+B-W) idle per rank once there are at least P micro-batches.
        if (M >= P) {
          const theory = ((P - 1) * (f + b - w)) / (M * (f + b + w) + (P - 1) * (f + b - w));
          assert.ok(Math.abs(zb.bubble - theory) < 1e-9, `P=${P} M=${M}: ${zb.bubble} vs theory ${theory}`);
        }
      }
      for (const p of plans('zb1', new Array(P).fill(true), M)) {
        for (const op of ['forward', 'backward_input', 'backward_weight'] as const) {
          assert.deepEqual(p.filter((a) => a.op === op).map((a) => a.mb), Array.from({ length: M }, (_, i) => i), `${op} once per micro-batch, in order`);
        }
        // Micro-batches between their forward and their W: never more than rank 0 holds in 1F1B.
        let live = 0;
        for (const a of p) {
          live += a.op === 'forward' ? 1 : a.op === 'backward_weight' ? -1 : 0;
          assert.ok(live <= P, `P=${P} M=${M}: ${live} micro-batches in flight`);
        }
      }
    }
  }
  // Without W (all of the backward in B) the schedule degenerates to 1F1B's bubble.
  const same = uniform(3, 1, 2, 0);
  assert.ok(Math.abs(simulate(plans('zb1', [true, true, true], 8), same).bubble - simulate(plans('1f1b', [true, true, true], 8), same).bubble) < 1e-9);
});

test('ZB-H1 with a frozen prefix: the prefix only runs forwards, the next rank sends it nothing', () => {
  const p = plans('zb1', [false, true, true], 4);
  assert.equal(formatSchedule(p[0]), 'F0 F1 F2 F3');
  assert.ok(!p[1].some((a) => a.op === 'send_grad'));
  simulate(p, uniform(3, 1, 1, 1));
});
