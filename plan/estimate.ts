// A whole run, planned: for every stage of the stage plan, the partition the coordinator would choose,
// each rank's memory and time, whether it fits, the schedule's bubble and tokens/s; and, when it does
// not fit, the alternatives that do (more devices, smaller micro-batches, 4-bit or half frozen weights).
import { roles, schedule as scheduleOf, simulate } from '../recipe/schedule.ts';
import type { StagePlan } from '../recipe/stages.ts';
import type { DeviceProfile } from './devices.ts';
import { estimateRank, planPartition, unconstrainedPartition, type RankPlan } from './partition.ts';
import type { FrozenDtype } from './runtime.ts';
import { StageModel, type MemoryBreakdown, type RunBasics, type RunShape } from './stage-model.ts';

export interface RunRequest extends RunBasics {
  stages: StagePlan;
  device: DeviceProfile;
  workers: number;
}

export interface RankReport {
  rank: number;
  blocks: string;
  start: number;
  end: number;
  embed: boolean;
  head: boolean;
  memory: MemoryBreakdown;
  memory_bytes: number;
  host_bytes: number;
  fits: boolean;
  forward_seconds: number;
  backward_seconds: number;
  /** ZB-H1 only: the backward as its input-gradient (B) and weight-gradient (W) runs; else 0. */
  backward_input_seconds: number;
  backward_weight_seconds: number;
  optimizer_seconds: number;
  /** Busy time of this rank in one optimizer step: M × (forward + backward) + optimizer. */
  step_seconds: number;
  trainable_params: number;
}

export interface StageReport {
  stage: number;
  layers: number[];
  trainable_tensors: number;
  fits: boolean;
  /** Why no split fits: the rank, and its bytes against the limit, of the time-balanced split. */
  refused: { rank: number; blocks: string; bytes: number; limit: number } | null;
  ranks: RankReport[];
  step_seconds: number;
  bubble: number;
  tokens_per_second: number;
}

export interface RunReport {
  device: string;
  workers: number;
  memory_limit_bytes: number;
  micro_batches: number;
  batch: number;
  seq: number;
  schedule: string;
  frozen_dtype: FrozenDtype;
  quantized: boolean;
  fits: boolean;
  stages: StageReport[];
}

export function stageShape(req: RunRequest, stage: number): RunShape {
  const { stages, device: _device, workers: _workers, ...basics } = req;
  const trainedSoFar = [...new Set(stages.stages.slice(0, stage + 1).flatMap((s) => s.trainable))];
  return { ...basics, trainable: stages.stages[stage].trainable, everTrainable: stages.everTrainable, trainedSoFar, loraLinears: stages.loraLinears };
}

const blocksOf = (p: { start: number; end: number }) => `${p.start}..${p.end - 1}`;

function report(model: StageModel, req: RunRequest, stage: number, plan: RankPlan[], refused: StageReport['refused']): StageReport {
  const P = plan.length;
  const M = req.microBatches;
  const zb = req.schedule === 'zb1';
  const ranks: RankReport[] = plan.map((p, r) => {
    const e = estimateRank(model, p.start, p.end, r, P, req.device);
    const backward = zb ? e.backwardInputSeconds + e.backwardWeightSeconds : e.backwardSeconds;
    return {
      rank: r,
      blocks: blocksOf(p),
      start: p.start,
      end: p.end,
      embed: p.embed,
      head: p.head,
      memory: e.memory,
      memory_bytes: e.memoryBytes,
      host_bytes: e.hostBytes,
      fits: e.memoryBytes <= req.device.memoryBytes,
      forward_seconds: e.forwardSeconds,
      backward_seconds: backward,
      backward_input_seconds: zb ? e.backwardInputSeconds : 0,
      backward_weight_seconds: zb ? e.backwardWeightSeconds : 0,
      optimizer_seconds: e.optimizerSeconds,
      step_seconds: M * (e.forwardSeconds + backward) + e.optimizerSeconds,
      trainable_params: e.trainableParams,
    };
  });
  const rs = roles(ranks.map((r) => r.backward_seconds > 0));
  // The executor's own action lists, run against each other with each rank's times; ZB-H1's W runs
  // fill the cool-down bubble.
  const sim = simulate(
    rs.map((role) => scheduleOf(req.schedule, role, M, req.slack)),
    {
      forward: ranks.map((r) => r.forward_seconds),
      backward: ranks.map((r) => r.backward_seconds),
      backwardInput: ranks.map((r) => r.backward_input_seconds),
      backwardWeight: ranks.map((r) => r.backward_weight_seconds),
    },
  );
  const step = sim.makespan + Math.max(...ranks.map((r) => r.optimizer_seconds)) + req.device.runSeconds * 2;
  const s = req.stages.stages[stage];
  return {
    stage,
    layers: s.layers,
    trainable_tensors: s.trainable.length,
    fits: refused === null && ranks.every((r) => r.fits),
    refused,
    ranks,
    step_seconds: step,
    bubble: sim.bubble,
    tokens_per_second: (M * req.batch * req.seq) / step,
  };
}

/** One stage: the coordinator's split when one fits, else the time-balanced split and the rank that overflows. */
export function planStage(req: RunRequest, stage: number): StageReport {
  const model = new StageModel(stageShape(req, stage));
  const workers = Array.from({ length: req.workers }, () => req.device);
  const plan = planPartition({ model, workers });
  if (plan.length) return report(model, req, stage, plan, null);
  const free = unconstrainedPartition({ model, workers });
  const over = free.map((p, r) => ({ r, p })).sort((a, b) => b.p.memoryBytes - req.device.memoryBytes - (a.p.memoryBytes - req.device.memoryBytes))[0];
  return report(model, req, stage, free, { rank: over.r, blocks: blocksOf(over.p), bytes: over.p.memoryBytes, limit: req.device.memoryBytes });
}

/** A stage priced on a given split (e.g. the one a coordinator chose), block ranges in rank order. */
export function stageOnSplit(req: RunRequest, stage: number, split: readonly { start: number; end: number }[]): StageReport {
  const model = new StageModel(stageShape(req, stage));
  const plan = split.map((p, r) => ({ ...p, embed: r === 0, head: r === split.length - 1, cost: 0, memoryBytes: 0 }));
  return report(model, { ...req, workers: split.length }, stage, plan, null);
}

export function planRun(req: RunRequest): RunReport {
  if (req.workers > req.config.numLayers) throw new Error(`${req.workers} workers for ${req.config.numLayers} blocks: every worker needs at least one block; use at most ${req.config.numLayers} workers`);
  const stages = req.stages.stages.map((_, k) => planStage(req, k));
  return {
    device: req.device.name,
    workers: req.workers,
    memory_limit_bytes: req.device.memoryBytes,
    micro_batches: req.microBatches,
    batch: req.batch,
    seq: req.seq,
    schedule: req.schedule,
    frozen_dtype: req.frozenDtype,
    quantized: req.quantBlockSize !== null,
    fits: stages.every((s) => s.fits),
    stages,
  };
}

export interface Alternative {
  change: string;
  request: RunRequest;
  report: RunReport;
}

/**
 * Runs that fit when the request does not (or cheaper ones when it does): the fewest devices, smaller
 * micro-batches with the same tokens per step, half-precision or 4-bit frozen weights, and combinations.
 */
export function alternatives(req: RunRequest, canQuantize: boolean): Alternative[] {
  const variants: { change: string; req: RunRequest }[] = [...microBatchVariants(req)];
  if (req.frozenDtype === 'fp32' && req.quantBlockSize === null) variants.push({ change: 'frozen weights in bf16', req: { ...req, frozenDtype: 'bf16' } });
  if (canQuantize && req.quantBlockSize === null) variants.push({ change: '4-bit frozen weights', req: { ...req, quantBlockSize: 32 } });
  if (req.batch > 1) {
    const b = Math.max(1, Math.floor(req.batch / 2));
    variants.push({ change: `micro-batch ${b} × ${req.microBatches * (req.batch / b)} micro-batches (same tokens per step)`, req: { ...req, batch: b, microBatches: Math.round((req.microBatches * req.batch) / b) } });
  }
  const out: Alternative[] = [];
  for (const base of [{ change: '', req }, ...variants]) {
    const r = planRun(base.req);
    if (r.fits) {
      if (base.change) out.push({ change: base.change, request: base.req, report: r });
      // Fewer devices may fit too: the fewest that do.
      const fewer = base.req.workers > 1 ? fewestWorkers(base.req, 1, base.req.workers - 1) : null;
      if (fewer) out.push({ change: [base.change, `${fewer.request.workers} worker(s)`].filter(Boolean).join(', '), request: fewer.request, report: fewer.report });
      continue;
    }
    const found = fewestWorkers(base.req, base.req.workers + 1, Math.min(base.req.config.numLayers, 64));
    if (found) out.push({ change: [base.change, `${found.request.workers} workers`].filter(Boolean).join(', '), request: found.request, report: found.report });
  }
  return out;
}

/** A pipeline bubble above this share of the step is worth more micro-batches. */
export const LARGE_BUBBLE = 0.25;

/**
 * Micro-batch changes worth planning: with GPipe every micro-batch's input is held until its backward,
 * 1F1B holds at most P − r; and a large bubble shrinks with more micro-batches per step — the fewest of
 * 2×, 4×, 8× that bring it under LARGE_BUBBLE (1F1B's activations in flight stay bounded by the ranks, so
 * memory barely moves; the step holds more tokens, so the learning rate or step count may need a look).
 */
function microBatchVariants(req: RunRequest): { change: string; req: RunRequest }[] {
  const out: { change: string; req: RunRequest }[] = [];
  if (req.schedule === 'gpipe' && req.workers > 1) out.push({ change: `--schedule 1f1b (at most ${req.workers} micro-batches in flight instead of ${req.microBatches})`, req: { ...req, schedule: '1f1b' } });
  if (req.workers < 2) return out;
  const bubbleOf = (r: RunReport) => Math.max(...r.stages.map((s) => s.bubble));
  const now = bubbleOf(planRun(req));
  if (now <= LARGE_BUBBLE) return out;
  let pick: { m: number; req: RunRequest; bubble: number } | null = null;
  for (const k of [2, 4, 8]) {
    const more = { ...req, microBatches: req.microBatches * k };
    pick = { m: more.microBatches, req: more, bubble: bubbleOf(planRun(more)) };
    if (pick.bubble <= LARGE_BUBBLE) break;
  }
  if (pick && pick.bubble < now) out.push({ change: `${pick.m} micro-batches per step (bubble ${pct(now)} → ${pct(pick.bubble)}; ${pick.m / req.microBatches}× the tokens per step)`, req: pick.req });
  return out;
}
const pct = (x: number) => `${Math.round(x * 100)} %`;

/** The fewest workers in [lo, hi] that fit, by bisection (more workers never need more memory per rank). */
function fewestWorkers(req: RunRequest, lo: number, hi: number): { request: RunRequest; report: RunReport } | null {
  const at = (w: number) => planRun({ ...req, workers: w });
  let best: { request: RunRequest; report: RunReport } | null = null;
  const top = at(hi);
  if (!top.fits) return null;
  best = { request: { ...req, workers: hi }, report: top };
  while (lo < hi) {
    const mid = Math.floor((lo + hi) / 2);
    const r = at(mid);
    if (r.fits) {
      hi = mid;
      best = { request: { ...req, workers: mid }, report: r };
    } else lo = mid + 1;
  }
  return best;
}
