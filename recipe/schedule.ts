// Pipeline schedules as data (DeepSpeed TrainSchedule / torch.distributed.pipelining style): a list
// of actions per rank, produced by a generator and run by one executor, so a schedule can be
// printed, tested and simulated. A rank below the lowest trainable block has no backward actions.

export type ActionOp = 'recv_act' | 'forward' | 'send_act' | 'recv_grad' | 'backward' | 'send_grad' | 'backward_input' | 'backward_weight';

export interface Action {
  op: ActionOp;
  mb: number;
}

import type { ScheduleKind } from '../recipe/schedule-kind.ts';

export type { ScheduleKind };

export interface RankRole {
  rank: number;
  ranks: number;
  /** This rank runs backward passes (it has trainable tensors or gradients cross it). */
  backward: boolean;
  /** The previous rank runs backward, so this rank sends it input gradients. */
  gradToPrev: boolean;
  /** The next rank runs backward, so this rank receives gradients from it. */
  gradFromNext: boolean;
}

function forwardActions(role: RankRole, mb: number): Action[] {
  const a: Action[] = [];
  if (role.rank > 0) a.push({ op: 'recv_act', mb });
  a.push({ op: 'forward', mb });
  if (role.rank < role.ranks - 1) a.push({ op: 'send_act', mb });
  return a;
}

function backwardActions(role: RankRole, mb: number, op: 'backward' | 'backward_input' = 'backward'): Action[] {
  const a: Action[] = [];
  if (role.gradFromNext) a.push({ op: 'recv_grad', mb });
  a.push({ op, mb });
  if (role.gradToPrev) a.push({ op: 'send_grad', mb });
  return a;
}

/**
 * `slack` (1F1B only): forwards that every rank but the last runs ahead of the textbook warm-up. With
 * none, each steady-state forward and backward waits on the other rank's latest frame, so any op that
 * runs late stalls both; with one, a rank whose gradient is late has a forward to do and the next rank
 * has an activation queued (README "The pipeline's ranks, balanced"). It costs one more input frame in
 * flight per rank (plan/partition.ts inFlight).
 */
export function schedule(kind: ScheduleKind, role: RankRole, microBatches: number, slack = 0): Action[] {
  const mbs = Array.from({ length: microBatches }, (_, i) => i);
  if (!role.backward) return mbs.flatMap((mb) => forwardActions(role, mb));
  if (kind === 'gpipe') return [...mbs.flatMap((mb) => forwardActions(role, mb)), ...mbs.flatMap((mb) => backwardActions(role, mb))];
  if (kind === 'zb1') return zeroBubbleH1(role, microBatches);
  // 1F1B: warm up with as many forwards as there are ranks after this one (and the slack), then
  // alternate one forward and one backward, then drain the remaining backwards.
  const warmup = Math.min(microBatches, role.ranks - 1 - role.rank + (role.rank < role.ranks - 1 ? slack : 0));
  const out: Action[] = [];
  let f = 0;
  let b = 0;
  for (; f < warmup; f++) out.push(...forwardActions(role, f));
  while (f < microBatches) {
    out.push(...forwardActions(role, f++));
    out.push(...backwardActions(role, b++));
  }
  while (b < microBatches) out.push(...backwardActions(role, b++));
  return out;
}

/**
 * ZB-H1 (Qi et al. 2023): 1F1B with the backward split into B (input gradient, on the critical path)
 * and W (weight gradients, which nobody waits for). Rank r defers up to r W passes — its in-flight
 * micro-batches then peak at P like rank 0's in 1F1B, so the memory bound is unchanged — and runs
 * them where 1F1B would wait for the next rank's gradient: the cool-down bubble shrinks from
 * (P-1)(F+B+W) to (P-1)(F+B-W).
 */
function zeroBubbleH1(role: RankRole, microBatches: number): Action[] {
  const warmup = Math.min(microBatches, role.ranks - 1 - role.rank);
  const defer = role.rank;
  const out: Action[] = [];
  let f = 0;
  let b = 0;
  let w = 0;
  const weight = () => out.push({ op: 'backward_weight', mb: w++ });
  for (; f < warmup; f++) out.push(...forwardActions(role, f));
  while (f < microBatches) {
    out.push(...forwardActions(role, f++));
    out.push(...backwardActions(role, b++, 'backward_input'));
    if (b - w > defer) weight();
  }
  while (b < microBatches) {
    out.push(...backwardActions(role, b++, 'backward_input'));
    if (b - w > defer) weight();
  }
  while (w < microBatches) weight();
  return out;
}

/** Roles of every rank given which ranks run backward (a frozen prefix does not). */
export function roles(backward: readonly boolean[]): RankRole[] {
  return backward.map((bw, rank) => ({
    rank,
    ranks: backward.length,
    backward: bw,
    gradToPrev: bw && rank > 0 && backward[rank - 1],
    gradFromNext: bw && rank < backward.length - 1 && backward[rank + 1],
  }));
}

export function formatSchedule(actions: readonly Action[]): string {
  const short: Record<ActionOp, string> = { recv_act: 'ra', forward: 'F', send_act: 'sa', recv_grad: 'rg', backward: 'B', send_grad: 'sg', backward_input: 'B', backward_weight: 'W' };
  return actions
    .filter((a) => COMPUTE.has(a.op))
    .map((a) => `${short[a.op]}${a.mb}`)
    .join(' ');
}

const COMPUTE = new Set<ActionOp>(['forward', 'backward', 'backward_input', 'backward_weight']);

/** Per-rank compute times; a split backward costs `backwardInput` + `backwardWeight` instead of `backward`. */
export interface OpCosts {
  forward: number[];
  backward: number[];
  backwardInput?: number[];
  backwardWeight?: number[];
  /** A factor on one op's cost (its micro-batch ran late or early), to test a schedule against variation. */
  jitter?: (op: ActionOp, rank: number, mb: number) => number;
}

export interface Simulation {
  makespan: number;
  /** Per rank: time spent computing. */
  busy: number[];
  /** 1 - busy / (ranks × makespan). */
  bubble: number;
}

/**
 * Runs the schedules of every rank against each other with fixed op costs and instant transfers:
 * checks that every receive has its send (a deadlock throws) and measures the bubble.
 */
export function simulate(plans: readonly Action[][], cost: OpCosts): Simulation {
  const costOf = (op: ActionOp, r: number): number => {
    if (op === 'forward') return cost.forward[r];
    if (op === 'backward') return cost.backward[r];
    const split = op === 'backward_input' ? cost.backwardInput : cost.backwardWeight;
    if (!split) throw new Error(`simulating ${op} needs cost.backwardInput and cost.backwardWeight`);
    return split[r];
  };
  const ranks = plans.length;
  const clock = new Array<number>(ranks).fill(0);
  const busy = new Array<number>(ranks).fill(0);
  const pc = new Array<number>(ranks).fill(0);
  const sent = new Map<string, number>();
  const key = (kind: string, from: number, mb: number) => `${kind}:${from}:${mb}`;
  let progressed = true;
  while (progressed) {
    progressed = false;
    for (let r = 0; r < ranks; r++) {
      while (pc[r] < plans[r].length) {
        const a = plans[r][pc[r]];
        if (a.op === 'recv_act' || a.op === 'recv_grad') {
          const at = sent.get(a.op === 'recv_act' ? key('act', r - 1, a.mb) : key('grad', r + 1, a.mb));
          if (at === undefined) break;
          clock[r] = Math.max(clock[r], at);
        } else if (a.op === 'send_act') sent.set(key('act', r, a.mb), clock[r]);
        else if (a.op === 'send_grad') sent.set(key('grad', r, a.mb), clock[r]);
        else {
          const c = costOf(a.op, r) * (cost.jitter?.(a.op, r, a.mb) ?? 1);
          clock[r] += c;
          busy[r] += c;
        }
        pc[r]++;
        progressed = true;
      }
    }
  }
  const stuck = pc.findIndex((p, r) => p < plans[r].length);
  if (stuck >= 0) throw new Error(`schedule deadlocks: rank ${stuck} waits at ${JSON.stringify(plans[stuck][pc[stuck]])}`);
  const makespan = Math.max(...clock);
  const bubble = 1 - busy.reduce((a, b) => a + b, 0) / (ranks * makespan);
  return { makespan, busy, bubble };
}
