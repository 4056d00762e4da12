// The partition planner: contiguous block ranges per worker, balanced by a cost model that knows the
// freeze mask, under each worker's memory limit. Costs are matmul FLOPs per token, per rank, as the
// rank's graphs execute them (F = one block's forward; B and W its input- and weight-gradient, each ≈ F):
//   every block of the range                 F      (the forward run; the last rank folds it into backward)
//   a rank that runs backward, every block   + F    (the backward graph recomputes its range's forward)
//   blocks that gradients cross              + B    (from the range's lowest trainable block, or all of
//                                                    them when a lower rank needs the input gradient)
//   trainable blocks                         + W
//   a rank below every trainable block       F only (a forward-only prefix)
// So the F+B+W / F+B / F per block holds for a range's top, and the recompute is counted.
// Embedding and head count as layers of their own (on the first and last rank).
import type { ModelConfig } from '../model/hf/config.ts';
import { layerTrains, type FreezeMask } from '../recipe/freeze-mask.ts';

export interface WorkerCapacity {
  memoryBytes: number;
}

export interface RankPlan {
  start: number;
  end: number;
  embed: boolean;
  head: boolean;
  cost: number;
  memoryBytes: number;
}

export interface PartitionInput {
  config: ModelConfig;
  /** The current stage's freeze mask, as the stage plan made it. */
  mask: FreezeMask;
  /** Trainable parameters per layer (new blocks, LoRA), for optimizer-state memory. */
  trainableParams: readonly number[];
  workers: readonly WorkerCapacity[];
  /** Tokens per micro-batch and micro-batches in flight, for activation memory. */
  microBatchTokens: number;
  inFlight: number;
  /** Ignore the mask (every block costs the same): the baseline the freeze-aware plan is compared to. */
  ignoreMask?: boolean;
}

const F32 = 4;

export function blockFlopsPerToken(c: ModelConfig): number {
  const qo = 2 * c.hiddenSize * c.numHeads * c.headDim;
  const kv = 2 * c.hiddenSize * c.numKvHeads * c.headDim;
  const mlp = 3 * c.hiddenSize * c.intermediateSize;
  return 2 * (qo + kv + mlp);
}

export function blockParams(c: ModelConfig): number {
  return blockFlopsPerToken(c) / 2 + 2 * c.hiddenSize;
}

/** Per-block cost if the block were alone on a rank (for reports and tests): F, F+B, or F+B+W plus recompute. */
export function layerCosts(p: PartitionInput): number[] {
  return p.mask.layers.map((_, i) => rangeCost(p, i, i + 1, false));
}

/** Cost of blocks [s, e) on one rank, as its forward and backward graphs run them. */
export function rangeCost(p: PartitionInput, s: number, e: number, last: boolean): number {
  const f = blockFlopsPerToken(p.config);
  const trains = (i: number) => p.ignoreMask || layerTrains(p.mask, i);
  const lowest = p.ignoreMask ? 0 : p.mask.layers.findIndex((_, i) => layerTrains(p.mask, i));
  const headTrains = p.ignoreMask || p.mask.head;
  const forward = (e - s) * f;
  const backward = (lowest >= 0 && lowest < e) || (last && headTrains);
  if (!backward) return forward + (last ? headCost(p, false) : 0);
  const gradientBelow = lowest >= 0 && lowest < s;
  const from = gradientBelow ? s : lowest >= 0 && lowest < e ? Math.max(s, lowest) : e;
  let cost = last ? 0 : forward; // the last rank's backward graph also yields the loss
  cost += forward; // recompute
  cost += (e - from) * f; // input gradients
  for (let i = s; i < e; i++) if (trains(i)) cost += f; // weight gradients
  return cost + (last ? headCost(p, true) : 0);
}

function headCost(p: PartitionInput, backward: boolean): number {
  const f = 2 * p.config.hiddenSize * p.config.vocabSize;
  if (!backward) return f;
  return f + f + (p.ignoreMask || p.mask.head ? f : 0);
}

function layerMemory(p: PartitionInput, i: number): number {
  const weights = blockParams(p.config) * F32;
  const optimizer = p.trainableParams[i] * F32 * 3; // gradient + two AdamW moments
  return weights + optimizer;
}

function activationMemory(p: PartitionInput): number {
  const c = p.config;
  const stored = p.inFlight * p.microBatchTokens * c.hiddenSize * F32;
  // One block recomputed in backward: its intermediates plus the attention matrix of a micro-batch.
  const seq = Math.max(1, Math.round(Math.sqrt(p.microBatchTokens)));
  const recompute = p.microBatchTokens * (6 * c.hiddenSize + 3 * c.intermediateSize) * F32 + p.microBatchTokens * c.numHeads * seq * F32;
  return stored + recompute;
}

function endsMemory(p: PartitionInput, embed: boolean, head: boolean): number {
  const table = p.config.vocabSize * p.config.hiddenSize * F32;
  let m = 0;
  if (embed) m += table * (p.mask.embed ? 4 : 1);
  if (head) m += (p.config.tieWordEmbeddings && embed ? 0 : table * (p.mask.head ? 4 : 1)) + p.microBatchTokens * p.config.vocabSize * F32 * 2;
  return m;
}

/**
 * Splits the blocks into one contiguous range per worker (every worker gets at least one block),
 * minimising the largest per-rank cost among the splits that fit each worker's memory.
 */
export function planPartition(p: PartitionInput): RankPlan[] {
  const L = p.config.numLayers;
  const P = p.workers.length;
  if (P < 1) throw new Error('no workers to plan for');
  if (P > L) throw new Error(`${P} workers for ${L} blocks: every worker needs at least one block; use at most ${L} workers`);
  const prefixMem = [0];
  for (let i = 0; i < L; i++) prefixMem.push(prefixMem[i] + layerMemory(p, i));
  const act = activationMemory(p);
  const cost = (s: number, e: number, r: number) => rangeCost(p, s, e, r === P - 1);
  const rangeMem = (s: number, e: number, r: number) => prefixMem[e] - prefixMem[s] + act + endsMemory(p, r === 0, r === P - 1);
  const fits = (s: number, e: number, r: number) => rangeMem(s, e, r) <= p.workers[r].memoryBytes;

  // best[r][e]: the smallest max-cost of ranks 0..r covering blocks [0, e).
  const best: number[][] = Array.from({ length: P }, () => new Array<number>(L + 1).fill(Infinity));
  const cut: number[][] = Array.from({ length: P }, () => new Array<number>(L + 1).fill(-1));
  for (let e = 1; e <= L; e++) if (fits(0, e, 0)) best[0][e] = cost(0, e, 0);
  for (let r = 1; r < P; r++) {
    for (let e = r + 1; e <= L; e++) {
      for (let s = r; s < e; s++) {
        if (best[r - 1][s] === Infinity || !fits(s, e, r)) continue;
        const v = Math.max(best[r - 1][s], cost(s, e, r));
        if (v < best[r][e]) {
          best[r][e] = v;
          cut[r][e] = s;
        }
      }
    }
  }
  if (best[P - 1][L] === Infinity) {
    const need = rangeMem(0, L, 0);
    throw new Error(`no split of ${L} blocks fits the workers' memory (the whole model needs about ${(need / 2 ** 30).toFixed(2)} GiB; workers offer ${p.workers.map((w) => (w.memoryBytes / 2 ** 30).toFixed(2)).join(', ')} GiB): add workers or quantize frozen weights`);
  }
  const plans: RankPlan[] = [];
  let e = L;
  for (let r = P - 1; r >= 0; r--) {
    const s = r === 0 ? 0 : cut[r][e];
    plans.unshift({ start: s, end: e, embed: r === 0, head: r === P - 1, cost: cost(s, e, r), memoryBytes: rangeMem(s, e, r) });
    e = s;
  }
  return plans;
}

/** The slowest rank bounds the step: the planned cost of a partition. */
export function planCost(plans: readonly RankPlan[]): number {
  return Math.max(...plans.map((r) => r.cost));
}
