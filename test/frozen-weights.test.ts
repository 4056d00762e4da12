// Frozen weights: one buffer per base tensor for the whole process (LLaMA Pro copies and the
// per-rank teacher included), fed to sessions as inputs rather than copied into them; half precision held as fp16 and
// upcast inside the graph, with trainable gradients within 1e-2 of the float32 run.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { backward } from '../model/autodiff/backward.ts';
import { hoistWeightChains, recomputeWeightChains } from '../model/autodiff/recompute.ts';
import { expandedSource } from '../model/expand/expand.ts';
import { Graph } from '../model/graph/graph.ts';
import { serialize } from '../model/graph/serialize.ts';
import { FrozenWeights, heldTensor } from '../model/llama/frozen.ts';
import { ParamBinder } from '../model/llama/params.ts';
import { RangeProgram } from '../model/llama/program.ts';
import { buildRangeGraph, wholeModel } from '../model/llama/range-graph.ts';
import { openPretrained } from '../model/hf/pretrained.ts';
import { openCheckpoint, writeCheckpoint } from '../model/hf/checkpoint.ts';
import { makeBatch } from '../recipe/batch.ts';
import { readJsonl } from '../recipe/data.ts';
import { parseRunConfig } from '../recipe/run-config.ts';
import { prepareModel } from '../worker/training-model.ts';
import { maxRelError } from './support/compare.ts';
import { makeTiny } from './support/tiny.ts';

const GOLDEN = path.resolve(import.meta.dirname, 'fixtures/golden/llama-gqa');

test('LLaMA Pro copies of a block read one buffer per base tensor', async () => {
  const t = await makeTiny();
  const run = parseRunConfig({ model: t.model, dataset: t.train, output_dir: path.join(t.root, 'out'), train_type: 'llamapro', llamapro_new_blocks: 2 });
  const model = prepareModel(run);
  const plan = model.onTheFly!;
  const baseView = model.frozen.view();
  for (let layer = 0; layer < model.config.numLayers; layer++) {
    const name = `model.layers.${layer}.mlp.up_proj.weight`;
    const src = expandedSource(name, plan);
    assert.equal(model.frozenView.tensor(name).data, baseView.tensor(src.name).data, `${name} and the base's ${src.name}`);
  }
  // Each base tensor is held once: new blocks copy an original block and add nothing.
  const base = openCheckpoint(t.model);
  const upBytes = [...base.names()].filter((n) => n.endsWith('up_proj.weight')).reduce((s, n) => s + base.readRaw(n).bytes.length, 0);
  assert.equal(model.frozen.bytes, upBytes);
});

test('sessions take frozen weights as graph inputs, not as initializers they would copy', () => {
  const model = openPretrained(GOLDEN);
  const frozen = new FrozenWeights('fp32', (n) => model.checkpoint.readRaw(n));
  const build = (withSource: boolean) => {
    const binder = new ParamBinder({ trainable: new Set(), load: model.load, frozen: withSource ? frozen.view() : null });
    return { graph: buildRangeGraph(model.config, wholeModel(model.config), binder).graph, binder };
  };
  const fed = build(true);
  assert.equal(serialize(fed.graph).externalData.length, 0, 'no weight travels into the session');
  assert.ok(fed.binder.frozenInputs.includes('model.layers.0.self_attn.q_proj.weight'));
  assert.ok(fed.graph.inputs.includes('model.layers.0.self_attn.q_proj.weight'));
  // The test tells the two layouts apart: initializers do travel.
  assert.ok(serialize(build(false).graph).externalData.length > 0);
});

async function gradients(frozen: FrozenWeights, trainable: Set<string>) {
  const model = openPretrained(GOLDEN);
  const { examples } = await readJsonl(path.join(GOLDEN, 'data.jsonl'), { vocabSize: model.config.vocabSize });
  const batch = makeBatch(examples);
  const program = await RangeProgram.create({ config: model.config, range: wholeModel(model.config), trainable, load: model.load, frozen: frozen.view(), inputGrad: false });
  const params = new Map([...trainable].map((n) => [n, model.load(n)]));
  const r = await program.backward(batch, params, { lossScale: 1 / batch.targetTokens });
  await program.release();
  return r;
}

test('half-precision frozen weights: trainable gradients within 1e-2 of the float32 run', async () => {
  const model = openPretrained(GOLDEN);
  const last = model.config.numLayers - 1;
  const trainable = new Set([`model.layers.${last}.mlp.down_proj.weight`, `model.layers.${last}.self_attn.q_proj.weight`, 'model.norm.weight', `model.layers.0.input_layernorm.weight`]);
  const read = (n: string) => model.checkpoint.readRaw(n);
  const ref = await gradients(new FrozenWeights('fp32', read), trainable);
  const half = new FrozenWeights('fp16', read);
  const got = await gradients(half, trainable);
  assert.equal(half.view().tensor('model.layers.0.mlp.up_proj.weight').dtype, 'float16');
  assert.ok(Math.abs(got.lossSum! - ref.lossSum!) <= 1e-2 * Math.abs(ref.lossSum!));
  for (const [name, g] of ref.grads) {
    const err = maxRelError(got.grads.get(name)!, g);
    assert.ok(err <= 1e-2, `${name}: relative error ${err}`);
    assert.ok(err > 0, `${name}: fp16 weights should change the gradient a little`);
  }
});

test('a BF16 checkpoint is held in half precision by default and in float32 on request', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'propipe-bf16-'));
  const src = openCheckpoint(GOLDEN);
  writeCheckpoint(dir, src.names().map((n) => ({ name: n, dtype: 'BF16' as const, shape: src.shape(n), data: src.readF32(n) })));
  const ck = openCheckpoint(dir);
  const name = 'model.layers.0.mlp.up_proj.weight';
  // The held form itself: FrozenWeights moves it to the session thread, leaving no values here to read.
  const auto = heldTensor(name, ck.readRaw(name), 'auto');
  const f32 = heldTensor(name, ck.readRaw(name), 'fp32');
  assert.equal(auto.dtype, 'float16');
  assert.equal(auto.data.byteLength * 2, f32.data.byteLength);
  assert.equal(f32.dtype, 'float32');
  assert.deepEqual(f32.data, ck.readF32(name));
});

test('a float16 weight too large for float16 is refused with the flag that avoids it', () => {
  const big = new Float32Array([1, 70000]);
  const frozen = new FrozenWeights('fp16', () => ({ dtype: 'F32', shape: [2], bytes: new Uint8Array(big.buffer) }));
  assert.throws(() => frozen.view().tensor('w'), /beyond float16's range; run with --frozen-dtype fp32/);
});

test('gradient nodes upcast half weights again from their own input, and upcasts run next to their use', () => {
  const g = new Graph('t');
  const x = g.input('x', 'float32', [4, 8]);
  const w = g.input('w', 'float16', [6, 8]);
  const t = g.op('Transpose', [g.op('Cast', [w], { to: 1 })], { perm: [1, 0] });
  const y = g.op('ReduceSum', [g.op('MatMul', [x, t])], { keepdims: 0 });
  const gradStart = g.nodes.length;
  const seed = g.input('seed', 'float32', []);
  const dx = backward(g, [{ value: y, grad: seed }], [x]).get(x)!;
  g.output(g.rename(dx, 'dx'));
  const forwardUpcast = g.nodes.find((n) => n.op === 'Cast')!.outputs[0];
  const aliases = recomputeWeightChains(g, gradStart, new Set([w]));
  assert.deepEqual([...aliases], [['w.recompute', 'w']]);
  const consumers = (v: string) => g.nodes.filter((n) => n.inputs.includes(v));
  const forwardT = g.nodes.find((n) => n.op === 'Transpose' && n.inputs[0] === forwardUpcast)!.outputs[0];
  assert.equal(consumers(forwardT).length, 1, 'only the forward MatMul reads the forward upcast');
  assert.ok(g.nodes.some((n) => n.op === 'Cast' && n.inputs[0] === 'w.recompute'));
  hoistWeightChains(g, new Set([w, 'w.recompute']));
  const defined = new Set(g.inputs);
  for (const k of g.initializers.keys()) defined.add(k);
  for (const n of g.nodes) {
    for (const i of n.inputs) assert.ok(i === '' || defined.has(i), `${n.op} reads ${i} before it is computed`);
    n.outputs.forEach((o) => defined.add(o));
  }
  assert.equal(g.nodes[0].op, 'Cast');
});

test('retainOnly lets go of another range’s weights and keeps the buffers still in use', () => {
  const model = openPretrained(GOLDEN);
  const frozen = new FrozenWeights('fp32', (n) => model.checkpoint.readRaw(n));
  const view = frozen.view();
  const a = 'model.layers.0.mlp.up_proj.weight';
  const b = 'model.layers.1.mlp.up_proj.weight';
  view.tensor(a);
  const kept = view.tensor(b);
  assert.equal(frozen.retainOnly(new Set([view.keyOf(b)])), 1);
  assert.equal(frozen.bytes, kept.shape.reduce((x, y) => x * y, 1) * 4);
  assert.equal(view.tensor(b), kept, 'a retained tensor is the same buffer');
});
