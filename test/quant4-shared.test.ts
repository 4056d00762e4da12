// 4-bit frozen weights held once per process: every session of a rank (forward, backward, teacher,
// stage after stage) is fed the codes, scales and zero points from the process's one copy as graph
// inputs and holds no 4-bit initializer of its own; results equal the initializer layout's; a rank on a
// new block range lets go of the old range's codes; pipelined 4-bit runs equal the single-process run.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import YAML from 'yaml';
import type { Graph } from '../model/graph/graph.ts';
import { CompiledGraph } from '../model/graph/session.ts';
import { openPretrained } from '../model/hf/pretrained.ts';
import { loraNames, type LoraSpec, type QuantizedMatMul } from '../model/llama/params.ts';
import { paramSpecs } from '../model/llama/param-specs.ts';
import { RangeProgram, type BackwardResult } from '../model/llama/program.ts';
import { Quant4Weights } from '../model/quant/quant4-store.ts';
import { initLora } from '../model/train/lora.ts';
import { Rng } from '../common/rng.ts';
import { parseRunConfig } from '../recipe/run-config.ts';
import { Trainer } from '../local/trainer.ts';
import { launch } from '../supervisor/launch.ts';
import { Rank } from '../worker/rank.ts';
import { prepareModel } from '../worker/training-model.ts';
import { maxRelError } from './support/compare.ts';
import { losses, recordsPerAssignment, sameWeights } from './support/runs.ts';
import { makeTiny } from './support/tiny.ts';

// 4 original blocks + 2 new ones: the expanded stack is 0 1 [2] 3 4 [5], new in brackets; each original
// block's 7 linears are held in 4 bits, the new blocks train in float.
const NEW_BLOCKS = new Set([2, 5]);
const LINEARS_PER_BLOCK = 7;
const isQ4 = (name: string) => /\.q4(_scales|_zero_points)?$/.test(name);

/** Records every graph compiled and every feed of a 4-bit input while `fn` runs. */
async function watchSessions(fn: () => Promise<void>): Promise<{ graphs: Graph[]; fed: Map<string, Set<unknown>> }> {
  const graphs: Graph[] = [];
  const fed = new Map<string, Set<unknown>>();
  const create = CompiledGraph.create;
  const run = CompiledGraph.prototype.run;
  CompiledGraph.create = (g, o) => (graphs.push(g), create.call(CompiledGraph, g, o));
  CompiledGraph.prototype.run = function (feeds) {
    for (const [name, t] of Object.entries(feeds)) if (isQ4(name) && this.inputNames.includes(name)) fed.set(name, (fed.get(name) ?? new Set()).add(t.data));
    return run.call(this, feeds);
  };
  try {
    await fn();
  } finally {
    CompiledGraph.create = create;
    CompiledGraph.prototype.run = run;
  }
  return { graphs, fed };
}

test('a 4-bit rank feeds every session from one copy: no 4-bit initializer in forward, backward or teacher, stage after stage; a new range drops the old codes', async () => {
  const t = await makeTiny();
  const run = parseRunConfig({ model: t.model, dataset: t.train, output_dir: path.join(t.root, 'out'), train_type: 'llamapro', llamapro_new_blocks: 2, lora_rank: 2, quantize: '4bit', quant_block_size: 16, distill_weight: 0.5 });
  const model = prepareModel(run);
  const store = model.quant4!;
  const rank = new Rank(run, model, 0, [{ start: 0, end: 6, embed: true, head: true }]);
  const ids = BigInt64Array.from({ length: 2 * 9 }, (_, i) => BigInt((i * 37 + 5) % 300));
  const batch = { batch: 2, seq: 9, inputIds: ids, labels: ids };
  const step = async () => {
    const teacherHidden = await rank.teacher!.forward(batch, undefined);
    await rank.program!.forward(batch, rank.values);
    await rank.program!.backward({ ...batch, teacherHidden }, rank.values, { lossScale: 1 });
  };
  const held: number[] = [];
  const { graphs, fed } = await watchSessions(async () => {
    for (const stage of [0, 1]) {
      await rank.enterStage(stage);
      await step();
      held.push(store.weights);
    }
  });
  // Stage 0: forward, backward and teacher; stage 1: a new forward and backward (the teacher stays).
  assert.equal(graphs.length, 5);
  for (const g of graphs) {
    const q4 = [...g.initializers].filter(([name, init]) => isQ4(name) || init.dtype === 'uint4' || (init.dtype === 'uint8' && init.data.length > 4));
    assert.deepEqual(q4.map(([n]) => n), [], `${g.name} holds 4-bit initializers of its own`);
    assert.ok(g.inputs.some(isQ4), `${g.name} reads no 4-bit input`);
  }
  // Every original block's linears, quantized once for the whole run.
  assert.deepEqual(held, [4 * LINEARS_PER_BLOCK, 4 * LINEARS_PER_BLOCK]);
  // Each 4-bit input got the same host buffer in every session and every run: the process's copy.
  const codes = 'model.layers.0.self_attn.q_proj.weight.q4';
  assert.ok(fed.has(codes));
  for (const [name, buffers] of fed) assert.deepEqual([...buffers], [store.tensor(name).data], `${name} fed from ${buffers.size} buffers`);
  await rank.release();

  // The same process re-assigned to blocks 3..5: only blocks 3 and 4 stay in 4 bits.
  const upper = new Rank(run, model, 1, [{ start: 0, end: 3, embed: true, head: false }, { start: 3, end: 6, embed: false, head: true }]);
  await upper.enterStage(0);
  assert.equal(store.weights, 2 * LINEARS_PER_BLOCK);
  assert.throws(() => store.tensor(codes), /not held in this process/);
  assert.ok(store.tensor('model.layers.3.mlp.down_proj.weight.q4'));
  await upper.release();
});

/** The layout before: the same products with the codes as initializers, which each session copies. */
function asInitializers(store: Quant4Weights): QuantizedMatMul {
  return {
    matmul(g, x, name, out, inp) {
      const r = store.matmul(g, x, name, out, inp);
      for (const input of r.inputs.filter((n) => g.inputs.includes(n))) {
        g.inputs.splice(g.inputs.indexOf(input), 1);
        const h = store.tensor(input);
        g.initializers.set(input, { dtype: h.dtype, dims: h.shape, data: h.data });
      }
      return { y: r.y, inputs: [] };
    },
    tensor: (n) => store.tensor(n),
  };
}

test('4-bit codes fed as inputs give the losses and LoRA, block and input gradients of the initializer layout', async () => {
  const t = await makeTiny();
  const base = openPretrained(t.model);
  const config = base.config;
  const top = paramSpecs(config).filter((s) => s.layer === 3).map((s) => s.name);
  const adapted = ['model.layers.1.self_attn.q_proj', 'model.layers.2.mlp.down_proj'];
  const lora: LoraSpec = { rank: 2, alpha: 4, linears: new Set(adapted) };
  const rng = new Rng(4);
  const params = new Map(top.map((n) => [n, base.load(n)]));
  for (const linear of adapted) {
    const [out, inp] = paramSpecs(config).find((s) => s.name === `${linear}.weight`)!.shape;
    const ad = initLora(lora.rank, inp, out, rng);
    for (let i = 0; i < ad.b.length; i++) ad.b[i] = rng.nextGaussian() * 0.05;
    params.set(loraNames(linear).a, ad.a);
    params.set(loraNames(linear).b, ad.b);
  }
  // A middle rank: hidden_in through frozen 4-bit blocks 0..2 and the trainable block 3 to the loss.
  const common = { config, range: { start: 0, end: 4, embed: false, head: true }, trainable: new Set(params.keys()), inputGrad: true, lora, load: base.load };
  const hidden = Float32Array.from({ length: 2 * 9 * config.hiddenSize }, () => rng.nextGaussian());
  const batch = { batch: 2, seq: 9, hidden, labels: BigInt64Array.from({ length: 18 }, (_, i) => BigInt((i * 11) % 300)) };
  const store = new Quant4Weights(base.load, 16);
  const results: BackwardResult[] = [];
  for (const quantized of [store, asInitializers(store)]) {
    const { graphs } = await watchSessions(async () => {
      const program = await RangeProgram.create({ ...common, quantized });
      results.push(await program.backward(batch, params, { lossScale: 1 }));
      await program.release();
    });
    // The two layouts differ where they should: only the initializer one carries the codes.
    assert.equal(graphs.some((g) => [...g.initializers.keys()].some(isQ4)), quantized !== store);
  }
  const [fed, initialized] = results;
  assert.ok(Math.abs(fed.lossSum! - initialized.lossSum!) <= 1e-5 * Math.abs(initialized.lossSum!), `loss ${fed.lossSum} vs ${initialized.lossSum}`);
  assert.equal(fed.grads.size, top.length + 2 * adapted.length);
  for (const [name, g] of initialized.grads) assert.ok(maxRelError(fed.grads.get(name)!, g) <= 1e-5, `${name}: ${maxRelError(fed.grads.get(name)!, g)}`);
  assert.ok(maxRelError(fed.hiddenGrad!, initialized.hiddenGrad!) <= 1e-5, 'input gradient');
});

test('pipelined QLoRA + LLaMA Pro with distillation (2-worker GPipe, re-planned at the stage transition) equals the single-process run', async () => {
  // 8 base layers: enough blocks that the stage transition moves the cut under the calibrated CPU prices.
  const t = await makeTiny({ layers: 8 });
  const newBlocks = new Set([4, 9]);
  const run = { model: t.model, dataset: t.train, train_type: 'llamapro' as const, llamapro_new_blocks: 2, lora_rank: 2, lora_targets: 'q_proj,down_proj', quantize: '4bit' as const, quant_block_size: 16, distill_weight: 0.3, steps_per_stage: 2, learning_rate: 1e-2, per_device_train_batch_size: 4, gradient_accumulation_steps: 2, logging_steps: 1, seed: 5 };
  const local = await new Trainer({ ...run, output_dir: path.join(t.root, 'local') }).train();
  const ref = losses(path.join(t.root, 'local'));
  assert.equal(ref.length, 4);
  const out = path.join(t.root, 'gpipe');
  const file = path.join(t.root, 'gpipe.yaml');
  fs.writeFileSync(file, YAML.stringify({ ...run, output_dir: out }));
  const lines: string[] = [];
  const code = await launch({ workers: 2, coordinatorArgs: ['--config', file, '--schedule', 'gpipe', '--metrics-port', '0'], quiet: true, env: { PROPIPE_LOG_LEVEL: 'info' }, onLine: (tag, line) => lines.push(`${tag} ${line}`) });
  assert.equal(code, 0, lines.slice(-20).join('\n'));
  const got = losses(out);
  assert.equal(got.length, ref.length);
  got.forEach((l, i) => assert.ok(Math.abs(l - ref[i]) <= 1e-5 * Math.abs(ref[i]), `step ${i + 1}: loss ${l} vs ${ref[i]}`));
  sameWeights(local.finalDir, path.join(out, 'final'));
  assert.ok(lines.some((l) => l.includes('re-planning the partition')), 'the run re-planned at the transition');
  // Each worker holds the 4-bit codes of exactly its range's original blocks, whatever range it had before.
  for (const w of ['w0', 'w1']) {
    const held = recordsPerAssignment(lines, w, '4-bit weights held once for every session');
    assert.ok(held.length >= 2, `${w}: ${JSON.stringify(held)}`);
    for (const h of held) assert.equal(h.rec.weights, h.assigned.filter((l) => !newBlocks.has(l)).length * LINEARS_PER_BLOCK, `${w} on blocks ${h.assigned}`);
  }
});
