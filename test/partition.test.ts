// The freeze-aware partition planner: costs follow the mask, memory limits hold, infeasible plans say why.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { blockFlopsPerToken, layerCosts, planCost, planPartition, rangeCost, type PartitionInput } from '../coordinator/partition.ts';
import { randomModelConfig } from '../model/hf/init.ts';

const { config } = randomModelConfig({ layers: 12, hidden: 256, heads: 8, kvHeads: 4, intermediate: 688, vocab: 512 });
const GiB = 2 ** 30;
const input = (trainable: boolean[], workers: number, memory = 8 * GiB): PartitionInput => ({
  config, mask: { layers: trainable.map((t) => (t ? 'trainable' : 'frozen')), embed: false, head: false }, trainableParams: trainable.map((t) => (t ? 1000 : 0)),
  workers: Array.from({ length: workers }, () => ({ memoryBytes: memory })), microBatchTokens: 4 * 128, inFlight: 2,
});

test('costs: F for the frozen prefix; a rank that runs backward adds the recompute, B where gradients cross, W where blocks train', () => {
  const mask = Array.from({ length: 12 }, (_, i) => i === 8);
  const c = layerCosts(input(mask, 2));
  const f = blockFlopsPerToken(config);
  assert.deepEqual(c.slice(0, 8), new Array(8).fill(f));
  assert.equal(c[8], 4 * f);
  assert.deepEqual(c.slice(9), [3 * f, 3 * f, 3 * f]);
});

test('the frozen prefix goes to wider ranks and the plan beats a mask-blind split', () => {
  const mask = Array.from({ length: 12 }, (_, i) => i >= 9);
  const aware = planPartition(input(mask, 3));
  const blind = planPartition({ ...input(mask, 3), ignoreMask: true });
  // Mask-blind, every block trains: the last rank (whose forward is folded into backward) gets more blocks.
  assert.ok(blind[2].end - blind[2].start >= blind[0].end - blind[0].start, JSON.stringify(blind));
  assert.ok(aware[0].end - aware[0].start > 4, JSON.stringify(aware));
  // Price the blind split with the true costs: its slowest rank is slower than the aware plan's.
  const truth = input(mask, 3);
  const blindTruth = Math.max(...blind.map((r, i) => rangeCost(truth, r.start, r.end, i === 2)));
  assert.ok(planCost(aware) < blindTruth, `${planCost(aware)} vs ${blindTruth}`);
  assert.ok(aware.every((r, i) => r.embed === (i === 0) && r.head === (i === 2)));
  assert.equal(aware[0].start, 0);
  assert.equal(aware[2].end, 12);
  for (let i = 1; i < 3; i++) assert.equal(aware[i].start, aware[i - 1].end, 'contiguous ranges');
});

test('memory limits shape the split, and an impossible one says what to do', () => {
  const mask = new Array(12).fill(false);
  const tight = planPartition({ ...input(mask, 3), workers: [{ memoryBytes: 40 * 2 ** 20 }, { memoryBytes: 8 * GiB }, { memoryBytes: 8 * GiB }] });
  assert.ok(tight.every((r, i) => i !== 0 || r.memoryBytes <= 40 * 2 ** 20));
  assert.throws(() => planPartition(input(mask, 2, 10 * 2 ** 20)), /no split of 12 blocks fits the workers' memory .*add workers or quantize/);
  assert.throws(() => planPartition(input(new Array(12).fill(false), 13)), /at most 12 workers/);
});

test('a rank pays for recomputing its whole range, and the last rank folds its forward into backward', () => {
  const f = blockFlopsPerToken(config);
  const mask = Array.from({ length: 12 }, (_, i) => i === 5);
  const p = input(mask, 2);
  // Blocks 3..6 with block 5 trainable: forward 4F, recompute 4F, input gradients of 5..6 (2F), W of 5 (F).
  assert.equal(rangeCost(p, 3, 7, false), 11 * f);
  // The same blocks on the last rank: no separate forward, plus the frozen head's forward and input gradient.
  const head = 2 * config.hiddenSize * config.vocabSize;
  assert.equal(rangeCost(p, 3, 7, true), 7 * f + 2 * head);
  // Below the lowest trainable block: forward only.
  assert.equal(rangeCost(p, 0, 3, false), 3 * f);
});

test('a LoRA-only layer costs like a trainable one: its input and weight gradients run', () => {
  const mask = Array.from({ length: 12 }, (_, i) => i === 5);
  const lora: PartitionInput = { ...input(mask, 2), mask: { layers: mask.map((t) => (t ? 'lora' : 'frozen')), embed: false, head: false } };
  assert.deepEqual(layerCosts(lora), layerCosts(input(mask, 2)));
});
