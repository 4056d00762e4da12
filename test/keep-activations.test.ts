// keepActivations (`gradient_checkpointing: false`): a range below the head runs its forward once and
// keeps the activations its gradients read, and its backward graph is only the gradient nodes — no
// recompute. Same activations and gradients as the recomputing backward, with and without a frozen
// prefix (stashPrefix), and a whole job with it equals the single-process run.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import YAML from 'yaml';
import { launch } from '../supervisor/launch.ts';
import { Trainer } from '../local/trainer.ts';
import { losses, sameWeights } from './support/runs.ts';
import { makeTiny } from './support/tiny.ts';
import { test } from 'node:test';
import { programGraphs, RangeProgram, type Batch, type ProgramOptions } from '../model/llama/program.ts';
import type { BlockRange } from '../model/llama/range-graph.ts';
import { layerParamSpecs } from '../model/llama/param-specs.ts';
import { openPretrained } from '../model/hf/pretrained.ts';
import { makeBatch } from '../recipe/batch.ts';
import { readJsonl } from '../recipe/data.ts';
import { maxRelError } from './support/compare.ts';
import type { Graph } from '../model/graph/graph.ts';
import { liveNodes } from '../model/graph/serialize.ts';

const DIR = path.resolve(import.meta.dirname, 'fixtures/golden/llama-gqa');

async function setup(range: BlockRange, trainLayers: number[], inputGrad: boolean) {
  const model = openPretrained(DIR);
  const { examples } = await readJsonl(path.join(DIR, 'data.jsonl'), { vocabSize: model.config.vocabSize });
  const b = makeBatch(examples);
  const h = model.config.hiddenSize;
  const trainable = new Set(trainLayers.flatMap((l) => layerParamSpecs(model.config, l).map((s) => s.name)));
  const params = new Map([...trainable].map((n) => [n, model.load(n)]));
  const hidden = Float32Array.from({ length: b.batch * b.seq * h }, (_, i) => Math.sin(i * 0.37));
  const batch = (): Batch => ({ batch: b.batch, seq: b.seq, inputIds: range.embed ? b.inputIds : undefined, hidden: range.embed ? undefined : hidden });
  const outGrad = Float32Array.from({ length: b.batch * b.seq * h }, (_, i) => Math.cos(i * 0.11) * 1e-2);
  const o: ProgramOptions = { config: model.config, range, trainable, load: model.load, inputGrad };
  return { o, params, batch, outGrad };
}

const cases: [string, BlockRange, number[], boolean, boolean][] = [
  ['a middle rank whose blocks pass gradients down (1..2, block 2 trains)', { start: 1, end: 3, embed: false, head: false }, [2], true, false],
  ['rank 0 with a frozen prefix stashed (embedding + 0..2, block 2 trains)', { start: 0, end: 3, embed: true, head: false }, [2], false, true],
  ['rank 0 training every block (embedding + 0..2)', { start: 0, end: 3, embed: true, head: false }, [0, 1, 2], false, true],
];

for (const [name, range, layers, inputGrad, stashPrefix] of cases) {
  test(`${name}: the gradient graph recomputes no activation and gives the recomputing backward's results`, async () => {
    const { o, params, batch, outGrad } = await setup(range, layers, inputGrad);
    const g = programGraphs({ ...o, stashPrefix, keepActivations: true });
    assert.ok(g.kept, 'split into a keeping forward and a gradient graph');
    assert.ok(g.kept.stash.length > 0);
    // No forward product is computed again in the gradient graph (the recomputing backward has them all).
    const products = (graph: Graph) => new Set(liveNodes(graph).filter((n) => /MatMul/.test(n.op)).flatMap((n) => n.outputs));
    const [forward, gradients, again] = [products(g.kept.forward), products(g.kept.gradients), products(g.backward!)];
    assert.deepEqual([...forward].filter((v) => gradients.has(v)), [], 'a forward MatMul runs again in the gradient graph');
    assert.ok([...forward].filter((v) => again.has(v)).length > 0, 'the recomputing backward does run them');
    assert.equal(g.kept.prefix !== null, g.stashFrom !== null);

    const keeping = await RangeProgram.create({ ...o, stashPrefix, keepActivations: true });
    const recomputing = await RangeProgram.create({ ...o, stashPrefix });
    const run = async (p: RangeProgram) => {
      const x = batch();
      const hiddenOut = (await p.forward(x, params)).hiddenOut;
      const r = await p.backward(x, params, { outGrad });
      return { hiddenOut, grads: r.grads, hiddenGrad: r.hiddenGrad };
    };
    const [a, b] = [await run(keeping), await run(recomputing)];
    assert.ok(maxRelError(a.hiddenOut, b.hiddenOut) <= 1e-6);
    assert.equal(a.grads.size, params.size);
    for (const [n, gb] of b.grads) assert.ok(maxRelError(a.grads.get(n)!, gb) <= 1e-5, `${n}: ${maxRelError(a.grads.get(n)!, gb)}`);
    assert.equal(!!a.hiddenGrad, inputGrad);
    if (inputGrad) assert.ok(maxRelError(a.hiddenGrad!, b.hiddenGrad!) <= 1e-5);
    // The kept activations go with the backward: a second backward of the same batch is refused.
    await assert.rejects(keeping.backward(batch(), params, { outGrad }), /keep their activations from the forward|run forward on the same Batch object first/);
    await Promise.all([keeping.release(), recomputing.release()]);
  });
}

test('keepActivations changes nothing on the head range (its forward is folded into its backward)', async () => {
  const { o } = await setup({ start: 0, end: 3, embed: true, head: true }, [2], false);
  assert.equal(programGraphs({ ...o, keepActivations: true }).kept, null);
});

test('a 2-worker 1F1B job with gradient_checkpointing: false equals the single-process run', async () => {
  const t = await makeTiny({ layers: 6 });
  const run = { model: t.model, dataset: t.train, train_type: 'llamapro' as const, llamapro_new_blocks: 2, stage_order: 'none', learning_rate: 1e-2, per_device_train_batch_size: 4, gradient_accumulation_steps: 4, max_steps: 3, logging_steps: 1, seed: 5 };
  const local = await new Trainer({ ...run, output_dir: path.join(t.root, 'local') }).train();
  const out = path.join(t.root, 'kept');
  const file = path.join(t.root, 'kept.yaml');
  fs.writeFileSync(file, YAML.stringify({ ...run, output_dir: out, gradient_checkpointing: false }));
  const lines: string[] = [];
  const code = await launch({ workers: 2, coordinatorArgs: ['--config', file, '--schedule', '1f1b'], quiet: true, onLine: (tag, line) => lines.push(`${tag} ${line}`) });
  assert.equal(code, 0, lines.slice(-20).join('\n'));
  const [ref, got] = [losses(path.join(t.root, 'local')), losses(out)];
  assert.ok(ref.length >= 2);
  assert.equal(got.length, ref.length);
  got.forEach((l, i) => assert.ok(Math.abs(l - ref[i]) <= 1e-5 * Math.abs(ref[i]), `step ${i + 1}: ${l} vs ${ref[i]}`));
  sameWeights(local.finalDir, path.join(out, 'final'));
});
