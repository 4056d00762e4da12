// What the partition balances is each rank's whole F + B per micro-batch: the head and its loss on the
// last rank, the forward that rank 0 runs twice when it trains from its first block (its forward run, then the recompute inside its backward; a frozen prefix is stashed instead)
// while the last rank folds its forward into the backward graph. And the pieces of the model that the
// S-full-p1 miss of bench:plan came down to: forward-only kernels, host work per step, uncollected outputs.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { randomModelConfig } from '../model/hf/init.ts';
import { layerParamSpecs, paramSpecs } from '../model/llama/param-specs.ts';
import type { ModelConfig } from '../model/hf/config.ts';
import { CPU_DEFAULT, type DeviceProfile } from '../plan/devices.ts';
import { estimateRank, planPartition } from '../plan/partition.ts';
import { RUNTIME, type RuntimeFactors } from '../plan/runtime.ts';
import { phaseSeconds, StageModel, type RunShape } from '../plan/stage-model.ts';
import { blockCosts } from '../plan/unit-costs.ts';

const cpu: DeviceProfile = { ...CPU_DEFAULT, memoryBytes: 64 * 2 ** 30 };
const full = (config: ModelConfig, microBatches = 4): RunShape => {
  const all = paramSpecs(config).map((p) => p.name);
  return { config, base: config, trainable: all, everTrainable: all, trainedSoFar: all, loraLinears: [], loraRank: 0, quantBlockSize: null, frozenDtype: 'fp32', batch: 4, seq: 128, microBatches, schedule: '1f1b', distill: false };
};
const shape = { layers: 12, hidden: 256, heads: 8, kvHeads: 4, intermediate: 688 };
const blocks = (p: { start: number; end: number }) => p.end - p.start;

test('rank 0 training from block 0 runs each block forward twice (forward run, then the recompute in its backward): with a light head it gets fewer blocks', () => {
  const { config } = randomModelConfig({ ...shape, vocab: 64 });
  const model = new StageModel(full(config));
  const [r0, r1] = planPartition({ model, workers: [cpu, cpu] });
  assert.ok(blocks(r0) < blocks(r1), `rank 0 ${r0.start}..${r0.end - 1}, rank 1 ${r1.start}..${r1.end - 1}`);
  const [e0, e1] = [estimateRank(model, r0.start, r0.end, 0, 2, cpu), estimateRank(model, r1.start, r1.end, 1, 2, cpu)];
  assert.ok(e0.forwardSeconds > 0 && e1.forwardSeconds === 0, 'the last rank folds its forward into its backward graph');
  // Both backward graphs recompute their blocks' forward before the gradients.
  const sum = (r: { start: number; end: number }, f: (i: number) => number) => Array.from({ length: blocks(r) }, (_, k) => f(r.start + k)).reduce((a, b) => a + b, 0);
  const recompute = (i: number) => phaseSeconds(cpu, 'recompute', model.block(i, true).recompute);
  const grads = (i: number) => phaseSeconds(cpu, 'inputGrad', model.block(i, true).inputGrad) + phaseSeconds(cpu, 'weightGrad', model.block(i, true).weightGrad);
  for (const [r, e] of [[r0, e0], [r1, e1]] as const) assert.ok(e.backwardSeconds >= sum(r, recompute) + sum(r, grads), JSON.stringify(e));
  // The chosen cut is the best one: moving it either way makes the slower rank slower.
  const worst = (cut: number) => Math.max(...[estimateRank(model, 0, cut, 0, 2, cpu), estimateRank(model, cut, 12, 1, 2, cpu)].map((e) => e.forwardSeconds + e.backwardSeconds));
  assert.ok(worst(r0.end) <= worst(r0.end - 1) && worst(r0.end) <= worst(r0.end + 1));
});

test('a rank whose lowest blocks only run forward (LLaMA Pro, one new block trains) does not recompute them: its backward starts from the stashed hidden state', () => {
  const { config } = randomModelConfig({ ...shape, vocab: 64 });
  const trainable = layerParamSpecs(config, 5).map((p) => p.name);
  const stage = (stashPrefix: boolean, runtime: RuntimeFactors = RUNTIME) => new StageModel({ ...full(config), trainable, everTrainable: trainable, trainedSoFar: trainable, stashPrefix, runtime });
  const [stashing, recomputing] = [stage(true), stage(false)];
  const recompute = (i: number) => phaseSeconds(cpu, 'recompute', stashing.block(i, true, true).recompute);
  const prefix = Array.from({ length: 5 }, (_, i) => recompute(i)).reduce((a, b) => a + b, 0) + phaseSeconds(cpu, 'recompute', stashing.embedCosts().recompute);
  for (const cut of [6, 8, 10]) {
    const [a, b] = [estimateRank(stashing, 0, cut, 0, 2, cpu), estimateRank(recomputing, 0, cut, 0, 2, cpu)];
    assert.ok(prefix > 0 && Math.abs(b.backwardSeconds - a.backwardSeconds - prefix) <= 1e-9 * b.backwardSeconds, `cut ${cut}: ${b.backwardSeconds} - ${a.backwardSeconds} vs the prefix's recompute ${prefix}`);
    assert.equal(a.forwardSeconds, b.forwardSeconds, 'the forward runs the prefix either way');
    // The stash: one [batch, seq, hidden] float32 frame per micro-batch in flight (1F1B rank 0 of 2: 2).
    assert.equal(a.memory.activations - b.memory.activations, 2 * 4 * 128 * 4 * config.hiddenSize);
    assert.equal(a.memory.frozenWeights, b.memory.frozenWeights, 'frozen tensors are fed from one shared copy');
    // The last rank folds its forward into its backward: nothing to stash.
    assert.equal(estimateRank(stashing, cut - 2, 12, 1, 2, cpu).backwardSeconds, estimateRank(recomputing, cut - 2, 12, 1, 2, cpu).backwardSeconds);
  }
  // Sessions holding their own weights: the stashing backward session holds no prefix weights.
  const own = { ...RUNTIME, sharedWeightCopies: 0 };
  assert.ok(estimateRank(stage(true, own), 0, 8, 0, 2, cpu).memory.frozenWeights < estimateRank(stage(false, own), 0, 8, 0, 2, cpu).memory.frozenWeights);
  // Without the prefix's second forward, rank 0 takes more blocks.
  const [s0] = planPartition({ model: stashing, workers: [cpu, cpu] });
  const [r0] = planPartition({ model: recomputing, workers: [cpu, cpu] });
  assert.ok(blocks(s0) > blocks(r0), `stashing rank 0 ${s0.start}..${s0.end - 1}, recomputing ${r0.start}..${r0.end - 1}`);
});

test('a heavy head and loss (vocab 32000 over hidden 256) move blocks off the last rank', () => {
  const light = planPartition({ model: new StageModel(full(randomModelConfig({ ...shape, vocab: 64 }).config)), workers: [cpu, cpu] });
  const heavy = planPartition({ model: new StageModel(full(randomModelConfig({ ...shape, vocab: 32000 }).config)), workers: [cpu, cpu] });
  assert.ok(blocks(heavy[1]) < blocks(light[1]), `light ${light[1].start}..11, heavy ${heavy[1].start}..11`);
  assert.ok(blocks(heavy[1]) < blocks(heavy[0]), 'the head outweighs rank 0\'s second forward');
});

test('a forward-only block on CPU is priced as it runs: GroupQueryAttention with its products, fewer ops than the standard attention', () => {
  const { config } = randomModelConfig({ layers: 2, hidden: 128, heads: 4, kvHeads: 2, intermediate: 352, vocab: 256 });
  const dims = { batch: 2, seq: 32 };
  const tokens = dims.batch * dims.seq;
  const spec = { state: 'forward' as const, lora: [], trains: 'block' as const };
  const fused = blockCosts(config, spec, 0, dims, true);
  const standard = blockCosts(config, spec, 0, dims, false);
  const linear = layerParamSpecs(config, 0).filter((p) => p.kind === 'linear_weight').reduce((a, p) => a + p.shape[0] * p.shape[1], 0);
  const scores = dims.batch * config.numHeads * dims.seq * dims.seq;
  // Q·Kᵀ and P·V inside the kernel, over the whole score matrix.
  assert.equal(fused.forward.flops, 2 * tokens * linear + 4 * scores * config.headDim);
  assert.equal(fused.forward.flops, standard.forward.flops);
  assert.equal(fused.forward.mathBytes, 8 * scores + 2 * 4 * tokens * config.intermediateSize, 'the softmax inside the kernel and SwiGLU\'s Sigmoid');
  assert.ok(fused.forward.nodes < standard.forward.nodes && fused.forward.bytes < standard.forward.bytes, JSON.stringify({ fused: fused.forward, standard: standard.forward }));
  assert.deepEqual(fused.recompute, fused.forward, 'the backward graph recomputes the same fused block');
  // A block gradients pass through keeps the standard ops.
  assert.deepEqual(blockCosts(config, { ...spec, state: 'cross' }, 0, dims, true).forward, blockCosts(config, { ...spec, state: 'cross' }, 0, dims, false).forward);
});

test('host work: AdamW + sum of squares once a step; each backward adds its gradients to the running sum', () => {
  const { config } = randomModelConfig({ ...shape, vocab: 512 });
  const P = paramSpecs(config).reduce((a, p) => a + p.shape.reduce((x, y) => x * y, 1), 0);
  const none = estimateRank(new StageModel(full(config, 2)), 0, 12, 0, 1, { ...cpu, accumulateSecondsPerParam: 0 });
  for (const M of [1, 2, 8]) {
    const e = estimateRank(new StageModel(full(config, M)), 0, 12, 0, 1, cpu);
    assert.equal(e.trainableParams, P);
    assert.ok(Math.abs(e.optimizerSeconds - P * cpu.optimizerSecondsPerParam) < 1e-12, `M=${M}`);
    // In every backward run, so the partitioner balances it with the rank's compute.
    assert.ok(Math.abs(e.backwardSeconds - none.backwardSeconds - P * cpu.accumulateSecondsPerParam) < 1e-9, `M=${M}`);
  }
});

test('a CPU rank holds the outputs of earlier runs until V8 collects them: up to its external-memory slack', () => {
  const small = randomModelConfig({ layers: 2, hidden: 64, heads: 4, kvHeads: 2, intermediate: 160, vocab: 128 }).config;
  const big = randomModelConfig({ ...shape, vocab: 4096 }).config;
  for (const [config, M] of [[small, 2], [big, 2], [big, 8]] as const) {
    const e = estimateRank(new StageModel(full(config, M)), 0, config.numLayers, 0, 1, cpu);
    const frame = 4 * 128 * 4 * config.hiddenSize;
    const expected = Math.min(RUNTIME.collectorSlackBytes, M * (4 * e.trainableParams + 2 * frame));
    assert.equal(e.memory.runtime, RUNTIME.processBytes + expected);
  }
  // The 7.9 M-parameter model's 2 micro-batches of gradients reach the slack.
  assert.equal(estimateRank(new StageModel(full(big, 8)), 0, 12, 0, 1, cpu).memory.runtime, RUNTIME.processBytes + RUNTIME.collectorSlackBytes);
});

test('gradient_checkpointing off: a rank below the head drops its recompute and holds the saved values of each micro-batch in flight', () => {
  const { config } = randomModelConfig({ ...shape, vocab: 512 });
  const on = new StageModel(full(config));
  const off = new StageModel({ ...full(config), keepActivations: true });
  const [a, b] = [estimateRank(on, 0, 6, 0, 2, cpu), estimateRank(off, 0, 6, 0, 2, cpu)];
  const recompute = Array.from({ length: 6 }, (_, l) => phaseSeconds(cpu, 'recompute', blockCosts(config, { state: 'train-bottom', lora: [], trains: 'block' }, 0, { batch: 4, seq: 128 }).recompute)).reduce((x, y) => x + y, 0);
  assert.ok(recompute > 0);
  assert.ok(Math.abs(a.backwardSeconds - b.backwardSeconds - recompute) < 1e-9 * a.backwardSeconds + 1e-12, `${a.backwardSeconds} − ${b.backwardSeconds} vs ${recompute}`);
  assert.ok(b.memoryBytes > a.memoryBytes, 'the kept activations cost memory');
  assert.equal(b.forwardSeconds, a.forwardSeconds);
  // The head folds its forward into its backward: nothing to keep.
  const [ha, hb] = [estimateRank(on, 6, 12, 1, 2, cpu), estimateRank(off, 6, 12, 1, 2, cpu)];
  assert.equal(hb.backwardSeconds, ha.backwardSeconds);
  assert.equal(hb.memoryBytes, ha.memoryBytes);
});
