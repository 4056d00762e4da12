// The partition planner: one contiguous block range per worker (embedding on the first, head on the
// last), minimising the slowest rank's predicted time per micro-batch among the splits whose predicted
// memory fits every worker. Both numbers come from the stage model (plan/stage-model.ts), so the
// coordinator and `propipe plan` choose the same split and price it the same way.
import type { DeviceProfile } from './devices.ts';
import type { RankEstimate, StageModel } from './stage-model.ts';
import type { ScheduleKind } from '../recipe/schedule-kind.ts';

export interface RankPlan {
  start: number;
  end: number;
  embed: boolean;
  head: boolean;
  /** Predicted seconds per micro-batch (forward + backward runs): what the planner balances. */
  cost: number;
  memoryBytes: number;
}

export interface PartitionRequest {
  model: StageModel;
  /** Prices ranks for balancing when it differs from `model` (the mask-blind baseline); memory always from `model`. */
  costModel?: StageModel;
  /** One device per worker, in rank order (its memoryBytes is the limit). */
  workers: readonly DeviceProfile[];
}

/** Micro-batches whose input a rank holds until their backward: 1F1B keeps P − r (+ slack below the last rank) in flight, GPipe all M. */
export function inFlight(schedule: ScheduleKind, microBatches: number, rank: number, ranks: number, slack = 0): number {
  if (schedule === 'gpipe') return microBatches;
  return Math.min(microBatches, ranks - rank + (schedule === '1f1b' && rank < ranks - 1 ? slack : 0));
}

/** Micro-batches whose weight-gradient pass a rank defers, holding their stash: ZB-H1 defers up to r on rank r. */
export function deferredWeights(schedule: ScheduleKind, microBatches: number, rank: number): number {
  return schedule === 'zb1' ? Math.min(microBatches, rank) : 0;
}

export class PartitionError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'PartitionError';
  }
}

export function estimateRank(model: StageModel, start: number, end: number, rank: number, ranks: number, device: DeviceProfile): RankEstimate {
  const s = model.s;
  return model.rank(start, end, rank === 0, rank === ranks - 1, inFlight(s.schedule, s.microBatches, rank, ranks, s.slack ?? 0), device, deferredWeights(s.schedule, s.microBatches, rank));
}

export function planPartition(req: PartitionRequest): RankPlan[] {
  const { model, workers } = req;
  const costModel = req.costModel ?? model;
  const L = model.s.config.numLayers;
  const P = workers.length;
  if (P < 1) throw new PartitionError('no workers to plan for');
  if (P > L) throw new PartitionError(`${P} workers for ${L} blocks: every worker needs at least one block; use at most ${L} workers`);
  const memo = new Map<string, { cost: number; memory: number }>();
  const price = (s: number, e: number, r: number) => {
    const key = `${s}:${e}:${r}`;
    let v = memo.get(key);
    if (!v) {
      const c = estimateRank(costModel, s, e, r, P, workers[r]);
      const m = costModel === model ? c : estimateRank(model, s, e, r, P, workers[r]);
      v = { cost: c.forwardSeconds + c.backwardSeconds, memory: m.memoryBytes };
      memo.set(key, v);
    }
    return v;
  };
  const fits = (s: number, e: number, r: number) => price(s, e, r).memory <= workers[r].memoryBytes;

  // best[r][e]: the smallest max-cost of ranks 0..r covering blocks [0, e) within memory.
  const best = Array.from({ length: P }, () => new Array<number>(L + 1).fill(Infinity));
  const cut = Array.from({ length: P }, () => new Array<number>(L + 1).fill(-1));
  for (let e = 1; e <= L - (P - 1); e++) if (fits(0, e, 0)) best[0][e] = price(0, e, 0).cost;
  for (let r = 1; r < P; r++) {
    for (let e = r + 1; e <= L - (P - 1 - r); e++) {
      // Longer ranges need more memory: walking s down, the first that does not fit ends the search.
      for (let s = e - 1; s >= r; s--) {
        if (!fits(s, e, r)) break;
        if (best[r - 1][s] === Infinity) continue;
        const v = Math.max(best[r - 1][s], price(s, e, r).cost);
        if (v < best[r][e]) {
          best[r][e] = v;
          cut[r][e] = s;
        }
      }
    }
  }
  if (best[P - 1][L] === Infinity) return [];
  const plans: RankPlan[] = [];
  let e = L;
  for (let r = P - 1; r >= 0; r--) {
    const s = r === 0 ? 0 : cut[r][e];
    const p = price(s, e, r);
    plans.unshift({ start: s, end: e, embed: r === 0, head: r === P - 1, cost: p.cost, memoryBytes: p.memory });
    e = s;
  }
  return plans;
}

/**
 * The time-balanced split without memory limits: what a run would look like with enough memory, used
 * to say which rank and how many bytes do not fit when no split does.
 */
export function unconstrainedPartition(req: PartitionRequest): RankPlan[] {
  return planPartition({ ...req, workers: req.workers.map((w) => ({ ...w, memoryBytes: Infinity })) });
}

/** The slowest rank bounds the step: the planned cost of a partition. */
export function planCost(plans: readonly RankPlan[]): number {
  return Math.max(...plans.map((r) => r.cost));
}
