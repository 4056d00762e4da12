// The freeze-aware partition planner on the one cost and memory model (plan/): costs follow the mask,
// memory limits hold, and a partition that does not fit is refused, naming rank, stage and bytes,
// before any worker loads weights (through the coordinator's Job API and through real processes).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { jobFor, register } from './support/job.ts';
import { PermanentError } from '../common/errors.ts';
import { randomModelConfig } from '../model/hf/init.ts';
import { layerParamSpecs } from '../model/llama/param-specs.ts';
import { CPU_DEFAULT, GPUS, type DeviceProfile } from '../plan/devices.ts';
import { estimateRank, planCost, planPartition } from '../plan/partition.ts';
import { StageModel, type RunShape } from '../plan/stage-model.ts';
import { resolveFrozenDtype } from '../plan/request.ts';
import type { FrozenDtype } from '../plan/runtime.ts';
import { makeTiny } from './support/tiny.ts';

const { config } = randomModelConfig({ layers: 12, hidden: 256, heads: 8, kvHeads: 4, intermediate: 688, vocab: 512 });
const GiB = 2 ** 30;
const BIN = path.resolve(import.meta.dirname, '../bin/propipe.mjs');
const cpu = (memoryBytes = 8 * GiB): DeviceProfile => ({ ...CPU_DEFAULT, memoryBytes });
const names = (layers: number[]) => layers.flatMap((l) => layerParamSpecs(config, l).map((p) => p.name));
const shape = (trainable: number[]): RunShape => ({
  config, base: config, trainable: names(trainable), everTrainable: names(trainable), trainedSoFar: names(trainable),
  loraLinears: [], loraRank: 0, quantBlockSize: null, frozenDtype: 'fp32', batch: 4, seq: 128, microBatches: 4, schedule: '1f1b', distill: false,
});

test('costs follow the mask: forward only below the lowest trainable block, recompute + B (+ W) above it, the last rank folds its forward', () => {
  const m = new StageModel(shape([8]));
  const prefix = estimateRank(m, 0, 8, 0, 2, cpu());
  assert.ok(prefix.forwardSeconds > 0);
  assert.equal(prefix.backwardSeconds, 0, 'a rank below every trainable block runs no backward');
  const top = estimateRank(m, 8, 12, 1, 2, cpu());
  assert.equal(top.forwardSeconds, 0, 'the last rank gets its loss from the backward graph');
  assert.ok(top.backwardSeconds > 0);
  assert.equal(m.blockState(7), 'forward');
  assert.equal(m.blockState(8), 'train-bottom');
  assert.equal(m.blockState(9), 'cross');
  // A trainable block costs more in backward than a frozen one that gradients cross.
  const train = new StageModel(shape([8, 9])).block(9, true);
  const cross = m.block(9, true);
  assert.ok(train.weightGrad.flops > 0 && cross.weightGrad.flops === 0);
  assert.ok(train.inputGrad.flops === cross.inputGrad.flops);
});

test('the freeze-aware split beats a mask-blind one, priced with the true costs', () => {
  const model = new StageModel(shape([9, 10, 11]));
  const all = names(Array.from({ length: 12 }, (_, i) => i));
  const blindModel = new StageModel({ ...shape([9, 10, 11]), trainable: all, trainedSoFar: all, everTrainable: all });
  const workers = [cpu(), cpu(), cpu()];
  const aware = planPartition({ model, workers });
  const blind = planPartition({ model, costModel: blindModel, workers });
  assert.ok(aware[0].end - aware[0].start > blind[0].end - blind[0].start, `${JSON.stringify(aware)} vs ${JSON.stringify(blind)}`);
  const truth = Math.max(...blind.map((r, i) => { const e = estimateRank(model, r.start, r.end, i, 3, cpu()); return e.forwardSeconds + e.backwardSeconds; }));
  assert.ok(planCost(aware) < truth, `${planCost(aware)} vs ${truth}`);
  for (let i = 1; i < 3; i++) assert.equal(aware[i].start, aware[i - 1].end, 'contiguous ranges');
});

test('memory limits shape the split; no split fitting gives none', () => {
  const model = new StageModel(shape([11]));
  const even = planPartition({ model, workers: [cpu(), cpu()] });
  const limit = even[0].memoryBytes - 1;
  const tight = planPartition({ model, workers: [cpu(limit), cpu()] });
  assert.ok(tight.length === 2 && tight[0].memoryBytes <= limit && tight[0].end < even[0].end, JSON.stringify({ even, tight }));
  assert.deepEqual(planPartition({ model, workers: [cpu(GiB / 100), cpu(GiB / 100)] }), []);
  assert.throws(() => planPartition({ model, workers: Array.from({ length: 13 }, () => cpu()) }), /at most 12 workers/);
});


test('the coordinator refuses a partition that does not fit, naming the rank, the stage and the bytes', async () => {
  const job = jobFor('unused', 2);
  const a = register(job, 'w0', 8 * GiB);
  const b = register(job, 'w1', 40 * 2 ** 20);
  const err = await b.catch((e: Error) => e);
  assert.ok(err instanceof PermanentError, String(err));
  assert.match(err.message, /stage 1\/\d+, rank 1 \(worker w1, blocks \d+\.\.\d+\) needs \d+ bytes .* offers 41943040 bytes/);
  await assert.rejects(a, PermanentError);
  assert.equal(job.failure?.message, err.message);
  // With enough memory the same job is assigned.
  const ok = jobFor('unused', 2);
  const [r0, r1] = await Promise.all([register(ok, 'w0', 8 * GiB), register(ok, 'w1', 8 * GiB)]);
  assert.equal(r0.range?.start, 0);
  assert.equal(r1.range?.end, 6);
});

test('the coordinator prices frozen weights as the workers hold them: a bf16 checkpoint (auto) needs fewer bytes than fp32', async () => {
  assert.equal(resolveFrozenDtype('auto', { torch_dtype: 'bfloat16' }), 'bf16');
  assert.equal(resolveFrozenDtype('auto', { torch_dtype: 'float16' }), 'fp16');
  assert.equal(resolveFrozenDtype('auto', {}), 'fp32');
  assert.equal(resolveFrozenDtype('fp32', { torch_dtype: 'bfloat16' }), 'fp32');
  const needs = async (d: FrozenDtype) => {
    const job = jobFor('unused', 2, d);
    const a = register(job, 'w0', 8 * GiB);
    const err = await register(job, 'w1', 1).catch((e: Error) => e);
    await a.catch(() => {});
    return Number(/needs (\d+) bytes/.exec(String(err))?.[1]);
  };
  const [fp32, bf16] = [await needs('fp32'), await needs('bf16')];
  assert.ok(bf16 > 0 && bf16 < fp32, `bf16 ${bf16} bytes, fp32 ${fp32} bytes`);
});

test('the coordinator prices each worker with its own device: a CUDA worker on the GPU memory model (device memory + CUDA runtime)', async () => {
  // 1 GiB is plenty for this tiny run as a CPU process (~0.25 GiB of RSS)...
  const cpuJob = jobFor('unused', 2);
  const [c0, c1] = await Promise.all([register(cpuJob, 'w0', GiB), register(cpuJob, 'w1', GiB)]);
  assert.ok(c0.range && c1.range, 'CPU workers with 1 GiB are assigned');
  // ...but not as CUDA device memory, which must hold the CUDA context and cuBLAS workspace first.
  const cudaJob = jobFor('unused', 2);
  const g0 = register(cudaJob, 'w0', GiB, 'cuda');
  const err = await register(cudaJob, 'w1', GiB, 'cuda').catch((e: Error) => e);
  await g0.catch(() => {});
  assert.ok(err instanceof PermanentError, String(err));
  const needs = Number(/needs (\d+) bytes/.exec(err.message)?.[1]);
  assert.ok(needs >= GPUS.a10g.deviceRuntimeBytes, `a CUDA rank needs at least the CUDA runtime's ${GPUS.a10g.deviceRuntimeBytes} bytes, got ${err.message}`);
  assert.match(err.message, /CUDA device memory/);
  // With room for the runtime the same CUDA workers are assigned, on the split `propipe plan --device` would price.
  const roomy = jobFor('unused', 2);
  const [r0, r1] = await Promise.all([register(roomy, 'w0', 3 * GiB, 'cuda'), register(roomy, 'w1', 3 * GiB, 'cuda')]);
  assert.ok(r0.range && r1.range);
  // A worker that reports a device the coordinator cannot price is refused with what to do.
  await assert.rejects(register(jobFor('unused', 2), 'w0', GiB, 'tpu'), /reports device 'tpu': start it with --device cpu or --device cuda/);
});

test('propipe launch --memory-gb too small: refused before any worker loads weights, exit 4 naming rank, stage and bytes', async () => {
  const { root, model, train: dataset } = await makeTiny();
  try {
    const r = spawnSync(process.execPath, [BIN, 'launch', '--workers', '2', '--memory-gb', '0.01', '--insecure', '--model', model, '--dataset', dataset, '--output-dir', path.join(root, 'out'), '--llamapro-new-blocks', '2', '--max-steps', '2'], { encoding: 'utf8', timeout: 120_000, env: { ...process.env, PROPIPE_LOG_JSON: '1', PROPIPE_LOG_LEVEL: 'info' } });
    assert.equal(r.status, 4, r.stderr.slice(-3000));
    assert.match(r.stderr, /propipe launch: the job cannot run as configured: the run does not fit the workers' memory: stage 1\/\d+, rank \d \(worker w\d, blocks \d+\.\.\d+\) needs \d+ bytes .*offers 10737418 bytes/);
    assert.doesNotMatch(r.stderr, /"assigned"/, 'no worker got an assignment (none loaded weights)');
    assert.doesNotMatch(r.stderr, /registering again/, 'no worker retried');
    assert.equal(r.stderr.match(/does not fit the workers' memory/g)?.length, 1, 'the reason is printed once');
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
});
