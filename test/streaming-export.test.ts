// final/ written shard by shard: a small --max-shard-size gives an index and several shards whose
// tensors equal the single-file export; pipeline ranks each write their own blocks' shards and rank 0
// adds the index; merge shards the same way.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { writeMergedModel } from '../model/hf/export.ts';
import { mergeAdapter } from '../model/hf/merge.ts';
import { openPretrained } from '../model/hf/pretrained.ts';
import { openCheckpoint, parseShardSize } from '../model/hf/checkpoint.ts';
import { INDEX_FILE, SINGLE_FILE } from '../model/hf/safetensors-format.ts';
import { openSafetensors } from '../model/hf/safetensors-read.ts';
import { parseRunConfig } from '../recipe/run-config.ts';
import { exportRankShards } from '../worker/export-ranks.ts';
import { trainedParts, writeRunAdapter } from '../worker/export-run.ts';
import { ownsTensor } from '../worker/rank.ts';
import { initialTrainables, prepareModel } from '../worker/training-model.ts';
import { makeTiny } from './support/tiny.ts';

function sameTensors(a: string, b: string): void {
  const ca = openCheckpoint(a);
  const cb = openCheckpoint(b);
  assert.deepEqual(new Set(cb.names()), new Set(ca.names()));
  for (const n of ca.names()) {
    const x = ca.readRaw(n);
    const y = cb.readRaw(n);
    assert.equal(y.dtype, x.dtype, n);
    assert.deepEqual(y.bytes, x.bytes, n);
  }
}

function shardFiles(dir: string): string[] {
  return fs.readdirSync(dir).filter((f) => /^model-\d{5}-of-\d{5}\.safetensors$/.test(f));
}

async function trainedRun() {
  const t = await makeTiny();
  const run = parseRunConfig({ model: t.model, dataset: t.train, output_dir: path.join(t.root, 'out'), train_type: 'llamapro', llamapro_new_blocks: 2, max_shard_size: '20KB' });
  const model = prepareModel(run);
  const values = initialTrainables(model, run);
  // Stand-in for training: every trained tensor moves.
  for (const v of values.values()) for (let i = 0; i < v.length; i++) v[i] += 0.25 + i * 1e-4;
  return { t, run, model, values };
}

test('a small max shard size writes an index and shards equal to the single-file export, and loads back', async () => {
  const { t, run, model, values } = await trainedRun();
  const whole = writeMergedModel(path.join(t.root, 'whole'), trainedParts(model, values, null), t.model);
  assert.ok(fs.existsSync(path.join(whole, SINGLE_FILE)));
  const sharded = writeMergedModel(path.join(t.root, 'sharded'), trainedParts(model, values, null), t.model, { maxShardBytes: parseShardSize(run.max_shard_size) });
  assert.ok(fs.existsSync(path.join(sharded, INDEX_FILE)));
  assert.ok(!fs.existsSync(path.join(sharded, SINGLE_FILE)));
  assert.ok(shardFiles(sharded).length > 3, `expected several shards, got ${shardFiles(sharded)}`);
  for (const f of shardFiles(sharded)) assert.ok(fs.statSync(path.join(sharded, f)).size < 20_000 + 4096 || openSafetensors(path.join(sharded, f)).names().length === 1, f);
  sameTensors(whole, sharded);
  const loaded = openPretrained(sharded);
  assert.equal(loaded.config.numLayers, model.config.numLayers);
  assert.deepEqual(loaded.load('model.layers.2.mlp.down_proj.weight'), values.get('model.layers.2.mlp.down_proj.weight'));
});

test('pipeline ranks write their own shards, rank 0 the index: same tensors as one process, no shard spans two ranks', async () => {
  const { t, run, model, values } = await trainedRun();
  const whole = writeMergedModel(path.join(t.root, 'whole'), trainedParts(model, values, null), t.model);
  const n = model.config.numLayers;
  const partition = [
    { start: 0, end: 3, embed: true, head: false },
    { start: 3, end: n, embed: false, head: true },
  ];
  const own = (r: number) => new Map([...values].filter(([name]) => ownsTensor(partition[r], name)));
  // Rank 0 finishes only when rank 1's shards are there: start it first, let rank 1 write later.
  const rank0 = exportRankShards({ run, model, values: own(0), lora: null, partition, rank: 0, step: 7, timeoutMs: 20_000 });
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(fs.existsSync(path.join(run.output_dir, 'final')), false, 'rank 0 must wait for rank 1');
  assert.equal(await exportRankShards({ run, model, values: own(1), lora: null, partition, rank: 1, step: 7 }), null);
  const finalDir = await rank0;
  assert.ok(finalDir && fs.existsSync(path.join(finalDir, INDEX_FILE)));
  sameTensors(whole, finalDir);
  for (const f of shardFiles(finalDir)) {
    const ranks: Set<number> = new Set(openSafetensors(path.join(finalDir, f)).names().map((name) => partition.findIndex((p) => ownsTensor(p, name))));
    assert.equal(ranks.size, 1, `${f} holds tensors of ranks ${[...ranks]}`);
  }
  assert.equal(fs.readdirSync(run.output_dir).some((f) => f.startsWith('.final-staging')), false);

  // merge of the run's adapter shards the same way and gives the same tensors.
  const adapter = writeRunAdapter(run, model, trainedParts(model, values, null));
  const merged = mergeAdapter(t.model, adapter, path.join(t.root, 'merged'), { maxShardBytes: 20_000 });
  assert.ok(fs.existsSync(path.join(merged, INDEX_FILE)));
  sameTensors(whole, merged);
});

test('a shard size that is not a size is refused with the accepted forms', () => {
  assert.equal(parseShardSize('5GB'), 5e9);
  assert.equal(parseShardSize('500MB'), 5e8);
  assert.equal(parseShardSize('2MiB'), 2 ** 21);
  assert.throws(() => parseShardSize('five gigs'), /is not a size like 5GB, 500MB/);
  assert.throws(() => parseShardSize('0'), /is not a size/);
});

test('a bad max_shard_size is refused when the run config is read, not at export', () => {
  assert.throws(() => parseRunConfig({ model: 'm', dataset: 'd', output_dir: 'o', max_shard_size: '5 gigs' }), /max_shard_size.*must be a size like 5GB/s);
});
