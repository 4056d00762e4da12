// The fused kernels and layouts of model/graph/kernels.ts change how a step is computed, not what:
// with every lever off (the standard-op graphs) a training step and a forward pass give the same
// loss and gradients, and forward-only kernels run only where no gradient passes.
import assert from 'node:assert/strict';
import path from 'node:path';
import { test } from 'node:test';
import { KERNEL_LEVERS, withKernelChoices, type KernelChoices } from '../model/graph/kernels.ts';
import { frozenWholeModel, programGraphs, RangeProgram } from '../model/llama/program.ts';
import { wholeModel, type BlockRange } from '../model/llama/range-graph.ts';
import { layerParamSpecs, paramSpecs } from '../model/llama/param-specs.ts';
import { openPretrained } from '../model/hf/pretrained.ts';
import { makeBatch } from '../recipe/batch.ts';
import { readJsonl } from '../recipe/data.ts';
import { maxRelError } from './support/compare.ts';

const DIR = path.resolve(import.meta.dirname, 'fixtures/golden/llama-gqa');
const ALL_OFF = Object.fromEntries(KERNEL_LEVERS.map((l) => [l, false])) as Partial<KernelChoices>;

async function setup() {
  const model = openPretrained(DIR);
  const { examples } = await readJsonl(path.join(DIR, 'data.jsonl'), { vocabSize: model.config.vocabSize });
  return { model, batch: makeBatch(examples) };
}

// RangeProgram.create builds its graphs before its first await, so the choices apply to them.
const build = (choices: Partial<KernelChoices>, create: () => Promise<RangeProgram>) => withKernelChoices(choices, create);

for (const [name, trainable] of [
  ['full fine-tune', (c: ReturnType<typeof openPretrained>['config']) => new Set(paramSpecs(c).map((s) => s.name))],
  ['top block only (frozen prefix)', (c: ReturnType<typeof openPretrained>['config']) => new Set(layerParamSpecs(c, c.numLayers - 1).map((s) => s.name))],
] as const) {
  test(`a training step (${name}) gives the standard-op graphs' loss and gradients`, async () => {
    const { model, batch } = await setup();
    const set = trainable(model.config);
    const params = new Map([...set].map((n) => [n, model.load(n)]));
    const o = { config: model.config, range: wholeModel(model.config), trainable: set, load: model.load, inputGrad: false };
    const on = await build({}, () => RangeProgram.create(o));
    const off = await build(ALL_OFF, () => RangeProgram.create(o));
    const seed = { lossScale: 1 / batch.targetTokens };
    const a = await on.backward(batch, params, seed);
    const b = await off.backward(batch, params, seed);
    assert.ok(Math.abs(a.lossSum! - b.lossSum!) <= 1e-5 * b.lossSum!, `loss ${a.lossSum} vs ${b.lossSum}`);
    assert.equal(a.tokenCount, b.tokenCount);
    assert.equal(a.grads.size, set.size);
    for (const [n, g] of b.grads) assert.ok(maxRelError(a.grads.get(n)!, g) <= 1e-4, `${n}: ${maxRelError(a.grads.get(n)!, g)}`);
    await Promise.all([on.release(), off.release()]);
  });
}

test('forward-only kernels give the standard forward: logits and loss of evaluation', async () => {
  const { model, batch } = await setup();
  const on = await build({}, () => frozenWholeModel(model.config, model.load, { logits: true }));
  const off = await build(ALL_OFF, () => frozenWholeModel(model.config, model.load, { logits: true }));
  const a = await on.forward(batch, new Map());
  const b = await off.forward(batch, new Map());
  assert.ok(maxRelError(a.logits, b.logits) <= 1e-5, `logits differ by ${maxRelError(a.logits, b.logits)}`);
  assert.ok(Math.abs(a.lossSum - b.lossSum) <= 1e-5 * b.lossSum);
  await Promise.all([on.release(), off.release()]);
});

test('GroupQueryAttention runs exactly in the blocks no gradient passes through', () => {
  const { config, load } = openPretrained(DIR);
  const L = config.numLayers;
  const gqa = (range: BlockRange, trainable: Set<string>, inputGrad: boolean, device?: 'cuda') => {
    const p = programGraphs({ config, range, trainable, load, inputGrad, device });
    const count = (g: typeof p.forward | null) => (g ? g.nodes.filter((n) => n.op === 'GroupQueryAttention').length : 0);
    return { forward: count(p.forward), backward: count(p.backward) };
  };
  const top = new Set(layerParamSpecs(config, L - 1).map((s) => s.name));
  // Whole model, only the top block trains: the blocks below it, in both graphs (same activations).
  assert.deepEqual(gqa(wholeModel(config), top, false), { forward: L - 1, backward: L - 1 });
  // Forward-only (evaluation, a frozen rank): every block.
  assert.deepEqual(gqa(wholeModel(config), new Set(), false), { forward: L, backward: 0 });
  // A rank whose input gradient the rank below waits for: none.
  assert.deepEqual(gqa({ start: 1, end: L, embed: false, head: true }, top, true), { forward: 0, backward: 0 });
  // CUDA (half-precision-only kernel): none.
  assert.deepEqual(gqa(wholeModel(config), new Set(), false, 'cuda'), { forward: 0, backward: 0 });
});
