// LLaMA Pro expansion: the layout, the exported checkpoint (bit-exact originals, zeroed output
// projections, identical logits), the sidecar, the on-the-fly loader, and refusals.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, test } from 'node:test';
import { loadConfig, parseConfig, writeConfig } from '../model/hf/config.ts';
import { expandCheckpoint } from '../model/expand/checkpoint.ts';
import { planFromSidecar, readExpansionSidecar, SIDECAR_FILE } from '../model/expand/sidecar.ts';
import {
  expandConfig,
  expandedLoader,
  expandedRawLoader,
  expandRawConfig,
  ExpansionError,
  newLayerIndices,
  planExpansion,
  type ExpansionPlan,
} from '../model/expand/expand.ts';
import { createRandomModel } from '../model/hf/init.ts';
import { RangeProgram } from '../model/llama/program.ts';
import { wholeModel } from '../model/llama/range-graph.ts';
import { layerParamSpecs, paramSpecs } from '../model/llama/param-specs.ts';
import { openPretrained } from '../model/hf/pretrained.ts';
import { Rng } from '../common/rng.ts';
import { openCheckpoint, writeCheckpoint } from '../model/hf/checkpoint.ts';
import { type Dtype } from '../model/hf/safetensors-format.ts';
import { makeBatch } from '../recipe/batch.ts';
import { propipe } from './support/cli.ts';

const tmp = () => fs.mkdtempSync(path.join(os.tmpdir(), 'propipe-expand-'));
const layout = (plan: ExpansionPlan) => plan.map((l) => (l.kind === 'new' ? `+${l.source}` : String(l.source))).join(' ');
const ZEROED = ['self_attn.o_proj.weight', 'self_attn.o_proj.bias', 'mlp.down_proj.weight', 'mlp.down_proj.bias'];

describe('planExpansion', () => {
  test('interleaves P/G copies of the last block of each of G groups', () => {
    assert.equal(layout(planExpansion(4, 2)), '0 1 +1 2 3 +3');
    assert.equal(layout(planExpansion(4, 4)), '0 +0 1 +1 2 +2 3 +3');
    assert.equal(layout(planExpansion(4, 1)), '0 1 2 3 +3');
    assert.equal(layout(planExpansion(4, 4, 2)), '0 1 +1 +1 2 3 +3 +3');
    assert.equal(layout(planExpansion(6, 2, 1)), '0 1 2 3 4 5 +5 +5');
    assert.equal(layout(planExpansion(6, 3)), '0 1 +1 2 3 +3 4 5 +5');
    const big = planExpansion(32, 8);
    assert.equal(big.length, 40);
    assert.deepEqual(newLayerIndices(big), [4, 9, 14, 19, 24, 29, 34, 39]);
    assert.deepEqual(big.filter((l) => l.kind === 'original').map((l) => l.source), [...Array(32).keys()]);
  });

  test('a layout the numbers cannot make names them and the group counts that work', () => {
    assert.throws(() => planExpansion(4, 3), (e: Error) => e instanceof ExpansionError && /4 layers do not split into 3 equal groups/.test(e.message) && /valid group counts are 1$/.test(e.message));
    assert.throws(() => planExpansion(32, 6, 4), /6 new blocks do not spread evenly over 4 groups.*valid group counts are 1, 2, or keep 4 groups with a multiple of 4 new blocks/);
    assert.throws(() => planExpansion(6, 4, 4), /6 layers do not split into 4 equal groups.*valid group counts are 1, 2$/);
    assert.throws(() => planExpansion(4, 2, 8), /4 layers do not split into 8 equal groups/);
    assert.throws(() => planExpansion(4, 0), /new blocks must be a positive integer, got 0/);
    assert.throws(() => planExpansion(4, 2, 0), /groups must be a positive integer, got 0/);
    assert.throws(() => planExpansion(4, 1.5), /positive integer, got 1.5/);
  });

  test('per-layer config fields follow their blocks', () => {
    const plan = planExpansion(4, 2);
    const raw = expandRawConfig({ layer_types: ['full_attention', 'full_attention', 'sliding_attention', 'sliding_attention'], max_window_layers: 2, other: 1 }, plan);
    assert.deepEqual(raw.layer_types, ['full_attention', 'full_attention', 'full_attention', 'sliding_attention', 'sliding_attention', 'sliding_attention']);
    assert.equal(raw.max_window_layers, 3);
    assert.equal(raw.other, 1);
    assert.equal(expandRawConfig({ max_window_layers: 28 }, plan).max_window_layers, 6);
    assert.equal(expandRawConfig({ max_window_layers: 0 }, plan).max_window_layers, 0);
  });
});

interface Variant {
  name: string;
  layers: number;
  newBlocks: number;
  groups?: number;
  make(dir: string): Promise<void>;
}

// Random init gives zero biases; nonzero ones make "copied, not zeroed" and "zeroed" distinguishable.
function rewriteWithBiases(dir: string, dtype: Dtype, seed: number): void {
  const { config } = loadConfig(dir);
  const ck = openCheckpoint(dir);
  const rng = new Rng(seed);
  const tensors = paramSpecs(config).map((s) => {
    const data = Float32Array.from(ck.readF32(s.name));
    if (s.kind === 'linear_bias' || s.kind === 'norm') for (let i = 0; i < data.length; i++) data[i] += rng.nextGaussian() * 0.1;
    return { name: s.name, dtype, shape: s.shape, data };
  });
  ck.close();
  writeCheckpoint(dir, tensors);
}

const tiny = { hidden: 32, heads: 4, kvHeads: 2, intermediate: 64, vocab: 300, initStd: 0.2 };

const VARIANTS: Variant[] = [
  { name: 'llama, 4 layers + 2', layers: 4, newBlocks: 2, make: async (dir) => void (await createRandomModel(dir, { ...tiny, layers: 4, seed: 1 })) },
  {
    name: 'qwen2 qkv-bias, tied, 4 layers + 4 in 2 groups',
    layers: 4,
    newBlocks: 4,
    groups: 2,
    make: async (dir) => {
      await createRandomModel(dir, { ...tiny, layers: 4, qkvBias: true, tie: true, seed: 2 });
      rewriteWithBiases(dir, 'F32', 2);
    },
  },
  {
    name: 'llama with o/mlp biases in bf16, 6 layers + 3',
    layers: 6,
    newBlocks: 3,
    make: async (dir) => {
      await createRandomModel(dir, { ...tiny, layers: 6, seed: 3 });
      const { raw } = loadConfig(dir);
      const biased = parseConfig({ ...raw, attention_bias: true, mlp_bias: true, torch_dtype: 'bfloat16' });
      writeConfig(dir, biased.config, biased.raw);
      const ck = openCheckpoint(dir);
      const rng = new Rng(3);
      const tensors = paramSpecs(biased.config).map((s) => ({
        name: s.name,
        dtype: 'BF16' as const,
        shape: s.shape,
        data: ck.has(s.name) ? ck.readF32(s.name) : Float32Array.from({ length: s.shape[0] }, () => rng.nextGaussian() * 0.1),
      }));
      ck.close();
      writeCheckpoint(dir, tensors);
    },
  },
];

async function logitsOf(dir: string, ids: number[][]): Promise<Float32Array> {
  const model = openPretrained(dir);
  const batch = makeBatch(ids.map((r) => ({ inputIds: Int32Array.from(r), labels: Int32Array.from(r) })));
  const program = await RangeProgram.create({ config: model.config, range: wholeModel(model.config), trainable: new Set(), load: model.load, inputGrad: false, logits: true });
  const out = await program.forward({ batch: batch.batch, seq: batch.seq, inputIds: batch.inputIds, labels: batch.labels }, new Map());
  await program.release();
  model.checkpoint.close();
  return out.logits;
}

const bytesOf = (a: Float32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength);

for (const v of VARIANTS) {
  describe(`expandCheckpoint: ${v.name}`, async () => {
    const root = tmp();
    const src = path.join(root, 'base');
    const out = path.join(root, 'expanded');
    await v.make(src);
    const result = expandCheckpoint(src, out, v.newBlocks, v.groups);
    const plan = planExpansion(v.layers, v.newBlocks, v.groups);
    const { config: base } = loadConfig(src);

    test('writes a loadable HF model with the tokenizer, generation config and nothing else', () => {
      const { config, raw } = loadConfig(out);
      assert.equal(config.numLayers, v.layers + v.newBlocks);
      assert.equal(raw.num_hidden_layers, v.layers + v.newBlocks);
      assert.deepEqual({ ...config, numLayers: 0 }, { ...base, numLayers: 0 });
      assert.deepEqual(result.config, config);
      for (const f of ['tokenizer.json', 'tokenizer_config.json', 'generation_config.json']) {
        assert.deepEqual(fs.readFileSync(path.join(out, f)), fs.readFileSync(path.join(src, f)), f);
      }
      assert.deepEqual(fs.readdirSync(root).sort(), ['base', 'expanded'], 'no temp directory left beside the output');
      const ck = openCheckpoint(out);
      assert.deepEqual(ck.names().sort(), paramSpecs(config).map((s) => s.name).sort());
      ck.close();
    });

    test('original blocks are bit-identical at their new indices; new blocks copy their source with zero output projections', () => {
      const a = openCheckpoint(src);
      const b = openCheckpoint(out);
      for (const name of ['model.embed_tokens.weight', 'model.norm.weight', ...(base.tieWordEmbeddings ? [] : ['lm_head.weight'])]) {
        assert.deepEqual(b.readRaw(name), a.readRaw(name), name);
      }
      let zeroedSeen = 0;
      plan.forEach((layer, j) => {
        for (const spec of layerParamSpecs(base, layer.source)) {
          const rest = spec.name.slice(`model.layers.${layer.source}.`.length);
          const got = b.readRaw(`model.layers.${j}.${rest}`);
          const want = a.readRaw(spec.name);
          assert.equal(got.dtype, want.dtype);
          assert.deepEqual(got.shape, want.shape);
          if (layer.kind === 'new' && ZEROED.includes(rest)) {
            assert.ok(got.bytes.every((x) => x === 0), `layer ${j} ${rest} is zero`);
            assert.ok(want.bytes.some((x) => x !== 0), `source ${spec.name} is not already zero`);
            zeroedSeen++;
          } else {
            assert.ok(Buffer.from(got.bytes).equals(Buffer.from(want.bytes)), `layer ${j} (${layer.kind} of ${layer.source}) ${rest}`);
          }
        }
      });
      const perBlock = base.oBias && base.mlpBias ? 4 : 2;
      assert.equal(zeroedSeen, v.newBlocks * perBlock);
      a.close();
      b.close();
    });

    test('the expanded model computes the same logits as the original', async () => {
      const rng = new Rng(7);
      const ids = [0, 1].map(() => Array.from({ length: 9 }, () => rng.nextInt(base.vocabSize)));
      const [before, after] = [await logitsOf(src, ids), await logitsOf(out, ids)];
      assert.equal(after.length, before.length);
      let maxDiff = 0;
      let maxAbs = 0;
      for (let i = 0; i < before.length; i++) {
        maxDiff = Math.max(maxDiff, Math.abs(after[i] - before[i]));
        maxAbs = Math.max(maxAbs, Math.abs(before[i]));
      }
      assert.ok(maxAbs > 0.1, `logits carry signal (max |logit| ${maxAbs})`);
      assert.ok(maxDiff <= 1e-5, `max |Δlogit| ${maxDiff}`);
    });

    test('llama_pro.json records the layout and reads back', () => {
      const json = JSON.parse(fs.readFileSync(path.join(out, SIDECAR_FILE), 'utf8'));
      const newIdx = newLayerIndices(plan);
      assert.deepEqual(json, {
        original_layers: v.layers,
        new_blocks: v.newBlocks,
        groups: v.groups ?? v.newBlocks,
        new_layer_indices: newIdx,
        source_of: Object.fromEntries(newIdx.map((i) => [String(i), plan[i].source])),
        base_model: path.resolve(src),
      });
      const info = readExpansionSidecar(out);
      assert.ok(info);
      assert.deepEqual(info, result.info);
      assert.deepEqual(planFromSidecar(info), plan);
      assert.equal(readExpansionSidecar(src), null);
    });

    test('the on-the-fly loaders give the written checkpoint, bit for bit', () => {
      const base = openPretrained(src);
      const written = openPretrained(out);
      const load = expandedLoader(base.load, plan);
      const readRaw = expandedRawLoader((n) => base.checkpoint.readRaw(n), plan);
      for (const spec of paramSpecs(expandConfig(base.config, plan))) {
        assert.ok(bytesOf(load(spec.name)).equals(bytesOf(written.load(spec.name))), spec.name);
        assert.deepEqual(readRaw(spec.name), written.checkpoint.readRaw(spec.name), spec.name);
      }
      assert.throws(() => load(`model.layers.${plan.length}.mlp.up_proj.weight`), /outside the expanded model's/);
      base.checkpoint.close();
      written.checkpoint.close();
    });
  });
}

describe('refusals', async () => {
  const root = tmp();
  const src = path.join(root, 'base');
  await createRandomModel(src, { ...tiny, layers: 4, seed: 5 });

  test('layers not divisible by groups: a clear error and no output directory', () => {
    const out = path.join(root, 'nested', 'out');
    assert.throws(() => expandCheckpoint(src, out, 3), /4 layers do not split into 3 equal groups.*valid group counts are 1/);
    assert.throws(() => expandCheckpoint(src, out, 2, 3), /4 layers do not split into 3 equal groups/);
    assert.equal(fs.existsSync(path.join(root, 'nested')), false);
    assert.deepEqual(fs.readdirSync(root), ['base']);
  });

  test('a non-empty output directory is refused and left alone; an empty one is used', () => {
    const out = path.join(root, 'busy');
    fs.mkdirSync(out);
    fs.writeFileSync(path.join(out, 'keep.txt'), 'mine');
    assert.throws(() => expandCheckpoint(src, out, 2), /is not empty.*keep\.txt/);
    assert.deepEqual(fs.readdirSync(out), ['keep.txt']);
    assert.throws(() => expandCheckpoint(src, src, 2), /is not empty/);

    const empty = path.join(root, 'empty');
    fs.mkdirSync(empty);
    expandCheckpoint(src, empty, 2);
    assert.equal(loadConfig(empty).config.numLayers, 6);
  });

  test('a failure while writing removes the temp directory and any parent it created', async () => {
    const packed = path.join(root, 'packed');
    await createRandomModel(packed, { ...tiny, layers: 4, seed: 6 });
    const ck = openCheckpoint(packed);
    const tensors = ck.names().map((name) => ({ name, dtype: ck.dtype(name), shape: ck.shape(name), data: ck.readRaw(name).bytes }));
    ck.close();
    // A GPTQ-style packed weight cannot be zeroed; the refusal comes mid-write, after the temp dir exists.
    writeCheckpoint(packed, [...tensors, { name: 'model.layers.1.mlp.down_proj.qweight', dtype: 'I32', shape: [2], data: Int32Array.of(1, 2) }]);
    const out = path.join(root, 'deep', 'er', 'out');
    assert.throws(() => expandCheckpoint(packed, out, 2), /cannot zero 'model\.layers\.2\.mlp\.down_proj\.qweight'.*dequantize/);
    assert.equal(fs.existsSync(path.join(root, 'deep')), false);
  });

  test('a hand-edited sidecar that disagrees with its layout is rejected', () => {
    const out = path.join(root, 'edited');
    expandCheckpoint(src, out, 2);
    const file = path.join(out, SIDECAR_FILE);
    const json = JSON.parse(fs.readFileSync(file, 'utf8'));
    fs.writeFileSync(file, JSON.stringify({ ...json, new_layer_indices: [4, 5] }));
    assert.throws(() => readExpansionSidecar(out), /do not match the interleaved layout.*expected new_layer_indices \[2,5\]/);
    fs.writeFileSync(file, JSON.stringify({ ...json, groups: 'two' }));
    assert.throws(() => readExpansionSidecar(out), /llama_pro\.json: groups:/);
  });
});

test('propipe expand writes the model, and bad numbers are a usage error that leaves nothing', () => {
  const root = tmp();
  const src = path.join(root, 'base');
  assert.equal(propipe(['init-model', '--out', src, '--layers', '4', '--hidden', '32', '--heads', '4', '--kv-heads', '2', '--intermediate', '64', '--vocab', '300']).status, 0);
  const out = path.join(root, 'pro');
  const r = propipe(['expand', '--model', src, '--new-blocks', '2', '--out', out]);
  assert.equal(r.status, 0, r.stderr);
  assert.deepEqual(JSON.parse(r.stdout), { out, layers: 6, new_layer_indices: [2, 5] });
  assert.equal(readExpansionSidecar(out)?.groups, 2);

  const bad = propipe(['expand', '--model', src, '--new-blocks', '2', '--groups', '3', '--out', path.join(root, 'bad')]);
  assert.equal(bad.status, 2);
  assert.match(bad.stderr, /--new-blocks\/--groups: 4 layers do not split into 3 equal groups/);
  assert.equal(fs.existsSync(path.join(root, 'bad')), false);
  assert.match(propipe(['--help']).stdout, /\n {2}expand /);
});
