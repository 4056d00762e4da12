// Runs one rank's schedule for one step: receives, computes and sends per the action list, carries the
// step's gradient sums through the backwards, and records a span per action for the pipeline timeline.
import type { BackwardSeed, Batch } from '../model/llama/program.ts';
import type { HostTensor } from '../model/graph/dtype.ts';
import type { InFrame, OutFrame, WireTensor } from '../proto/frames.ts';
import type { FrameKind } from '../proto/messages.ts';
import type { Mailbox } from './mailbox.ts';
import type { Rank } from './rank.ts';
import { schedule, type ScheduleKind } from '../recipe/schedule.ts';
import { fromWire, toWire } from './wire-dtype.ts';

export interface Span {
  name: string;
  start: number;
  end: number;
}

export interface Links {
  mailbox: Mailbox;
  /** Sends to the rank above (absent on the last rank). */
  up?: (f: OutFrame) => Promise<void>;
  /** Sends to the rank below (absent on the first rank). */
  down?: (f: OutFrame) => Promise<void>;
}

export interface StepResult {
  grads: Map<string, Float32Array>;
  lossSum: number;
  klSum: number;
  tokens: number;
  spans: Span[];
  busySeconds: number;
}

interface Slot {
  batch: Batch;
  stepTokens: number;
  hiddenGrad?: Float32Array;
  /** Distillation: the teacher's hidden state from the rank below (dropped once used). */
  teacherHidden?: Float32Array;
  /** Zero-bubble: what the weight-gradient pass needs, kept from the input-gradient pass. */
  weight?: { seed: Seed; stash: Record<string, HostTensor> };
}

type Seed = Omit<BackwardSeed, 'gradSums'>;

/** The first rank's micro-batches, as token ids and labels. */
export interface MicroBatch {
  inputIds: BigInt64Array;
  labels: BigInt64Array;
  /** Packed rows: each token's position within its example. */
  positionIds?: Int32Array;
  batch: number;
  seq: number;
}

const ids = (t: WireTensor) => t.data as BigInt64Array;

function slotFromFrame(f: InFrame, hidden: number): Slot {
  const [batch, seq] = f.tensor.shape;
  if (f.tensor.dtype === 'int64' || f.tensor.shape.length !== 3 || f.tensor.shape[2] !== hidden) {
    throw new Error(`activation of step ${f.step} micro-batch ${f.microBatch} has shape [${f.tensor.shape}], expected [batch, seq, ${hidden}]`);
  }
  const positionIds = f.positionIds ? Int32Array.from(ids(f.positionIds), Number) : undefined;
  const teacherHidden = f.teacher ? fromWire(f.teacher, `teacher's hidden state of step ${f.step} micro-batch ${f.microBatch}`) : undefined;
  return { batch: { batch, seq, hidden: fromWire(f.tensor, `activation of step ${f.step} micro-batch ${f.microBatch}`), labels: f.labels ? ids(f.labels) : undefined, positionIds }, stepTokens: f.stepTokens, teacherHidden };
}

/** The teacher's hidden state after this rank's blocks, from the ids or the teacher's hidden state of the rank below. */
function runTeacher(rank: Rank, s: Slot, mb: number): Promise<Float32Array> {
  if (!rank.range.embed && !s.teacherHidden) throw new Error(`distillation: the activation of micro-batch ${mb} came without the teacher's hidden state; every worker must run the same propipe version`);
  const input = s.teacherHidden;
  s.teacherHidden = undefined;
  return rank.teacher!.forward(s.batch, input);
}

/**
 * One training step on this rank. `micro` is given on the first rank only; every other rank learns
 * the micro-batches from its activation frames.
 */
export async function runStep(rank: Rank, kind: ScheduleKind, step: number, microBatches: number, links: Links, micro?: readonly MicroBatch[], afterFirstAction: () => void = () => undefined): Promise<StepResult> {
  const program = rank.program!;
  const hidden = rank.model.config.hiddenSize;
  const slots = new Map<number, Slot>();
  const grads = new Map<string, Float32Array>();
  const spans: Span[] = [];
  let lossSum = 0;
  let klSum = 0;
  let tokens = 0;
  let busy = 0;
  const stepTokens = micro ? micro.reduce((s, m) => s + countTargets(m.labels, m.batch, m.seq), 0) : 0;
  const outputs = new Map<number, Float32Array>();
  const teacherOutputs = new Map<number, Float32Array>();
  const timed = async <T>(name: string, compute: boolean, fn: () => Promise<T>): Promise<T> => {
    const start = performance.now();
    const v = await fn();
    const end = performance.now();
    spans.push({ name, start, end });
    if (compute) busy += (end - start) / 1000;
    return v;
  };

  // The step's gradient sums go into each backward (W under ZB-H1) and come back with its micro-batch's
  // gradients added in the same run: no host pass over the gradients between a backward and the frame
  // the other rank waits for (a JS sum there cost 14.5 ms a hop for 4 blocks of hidden 512 on CPU, and
  // ~1 s a micro-batch for two 13B blocks on a GPU rank: README "The pipeline's ranks, balanced").
  // Micro-batches are summed in order (W runs in order too), so every schedule gives the same sums.
  const sums = (): BackwardSeed['gradSums'] => (grads.size ? grads : undefined);
  const keep = (g: ReadonlyMap<string, Float32Array>) => {
    for (const [n, v] of g) grads.set(n, v);
  };

  let first = true;
  for (const a of schedule(kind, rank.role, microBatches, rank.run.pipeline_slack)) {
    if (!first) afterFirstAction();
    first = false;
    switch (a.op) {
      case 'recv_act': {
        const f = await timed(`recv F${a.mb}`, false, () => links.mailbox.take('ACTIVATION', step, a.mb));
        slots.set(a.mb, slotFromFrame(f, hidden));
        break;
      }
      case 'forward': {
        if (micro) slots.set(a.mb, { batch: { ...micro[a.mb] }, stepTokens });
        const s = slots.get(a.mb)!;
        // The last rank's backward graph also yields the loss, so its forward would be done twice.
        if (rank.range.head && rank.role.backward) break;
        const out = await timed(`F${a.mb}`, true, () => program.forward(s.batch, rank.values));
        if (rank.range.head) {
          lossSum += out.lossSum;
          tokens += out.tokenCount;
        } else {
          outputs.set(a.mb, out.hiddenOut);
          if (rank.teacher) teacherOutputs.set(a.mb, await timed(`teacher F${a.mb}`, true, () => runTeacher(rank, s, a.mb)));
        }
        break;
      }
      case 'send_act': {
        const s = slots.get(a.mb)!;
        const out = outputs.get(a.mb)!;
        outputs.delete(a.mb);
        const teacher = teacherOutputs.get(a.mb);
        teacherOutputs.delete(a.mb);
        const shape = [s.batch.batch, s.batch.seq];
        const labels: WireTensor | undefined = s.batch.labels ? { dtype: 'int64', shape, data: s.batch.labels } : undefined;
        const positionIds: WireTensor | undefined = s.batch.positionIds ? { dtype: 'int64', shape, data: BigInt64Array.from(s.batch.positionIds, BigInt) } : undefined;
        const dims = [s.batch.batch, s.batch.seq, hidden];
        await timed(`send F${a.mb}`, false, () => links.up!({ kind: 'ACTIVATION', step, microBatch: a.mb, tensor: toWire(out, dims, rank.run.wire_dtype), labels, positionIds, teacher: teacher && toWire(teacher, dims, rank.run.wire_dtype), stepTokens: s.stepTokens }));
        if (!rank.role.backward) slots.delete(a.mb);
        break;
      }
      case 'recv_grad': {
        const f = await timed(`recv B${a.mb}`, false, () => links.mailbox.take('GRADIENT', step, a.mb));
        slots.get(a.mb)!.hiddenGrad = fromWire(f.tensor, `gradient of step ${step} micro-batch ${a.mb}`);
        break;
      }
      case 'backward':
      case 'backward_input': {
        const s = slots.get(a.mb)!;
        const seed: Seed = rank.range.head ? { lossScale: 1 / s.stepTokens } : { outGrad: s.hiddenGrad };
        // The head's teacher runs here, right before the graph that turns its hidden state into logits.
        if (rank.teacher && rank.range.head) {
          const teacherHidden = await timed(`teacher F${a.mb}`, true, () => runTeacher(rank, s, a.mb));
          s.batch = { ...s.batch, teacherHidden };
        }
        const r =
          a.op === 'backward'
            ? await timed(`B${a.mb}`, true, () => program.backward(s.batch, rank.values, { ...seed, gradSums: sums() }))
            : await timed(`B${a.mb}`, true, () => program.backwardInput(s.batch, rank.values, seed));
        if ('grads' in r) keep(r.grads);
        else s.weight = { seed, stash: r.stash };
        if (rank.range.head) {
          lossSum += r.lossSum!;
          klSum += r.klSum ?? 0;
          tokens += r.tokenCount!;
        }
        s.hiddenGrad = r.hiddenGrad;
        break;
      }
      case 'backward_weight': {
        const s = slots.get(a.mb)!;
        const w = s.weight!;
        keep(await timed(`W${a.mb}`, true, () => program.backwardWeight(s.batch, rank.values, { ...w.seed, gradSums: sums() }, w.stash)));
        slots.delete(a.mb);
        break;
      }
      case 'send_grad': {
        const s = slots.get(a.mb)!;
        await timed(`send B${a.mb}`, false, () => links.down!({ kind: 'GRADIENT', step, microBatch: a.mb, tensor: toWire(s.hiddenGrad!, [s.batch.batch, s.batch.seq, hidden], rank.run.wire_dtype) }));
        if (!s.weight) slots.delete(a.mb);
        break;
      }
    }
  }
  return { grads, lossSum, klSum, tokens, spans, busySeconds: busy };
}

/** A forward-only pass over the validation batches: the last rank returns the summed loss. */
export async function runEval(rank: Rank, step: number, batches: number, links: Links, micro?: readonly MicroBatch[]): Promise<{ lossSum: number; tokens: number }> {
  const program = rank.program!;
  const hidden = rank.model.config.hiddenSize;
  const kind: FrameKind = 'EVAL_ACTIVATION';
  let lossSum = 0;
  let tokens = 0;
  for (let mb = 0; mb < batches; mb++) {
    const slot: Slot = micro ? { batch: { ...micro[mb] }, stepTokens: 0 } : slotFromFrame(await links.mailbox.take(kind, step, mb), hidden);
    const out = await program.forward(slot.batch, rank.values);
    if (rank.range.head) {
      lossSum += out.lossSum;
      tokens += out.tokenCount;
    } else {
      const labels: WireTensor | undefined = slot.batch.labels ? { dtype: 'int64', shape: [slot.batch.batch, slot.batch.seq], data: slot.batch.labels } : undefined;
      await links.up!({ kind, step, microBatch: mb, tensor: toWire(out.hiddenOut, [slot.batch.batch, slot.batch.seq, hidden], rank.run.wire_dtype), labels });
    }
  }
  return { lossSum, tokens };
}

function countTargets(labels: BigInt64Array, batch: number, seq: number): number {
  let n = 0;
  for (let b = 0; b < batch; b++) for (let t = 1; t < seq; t++) if (labels[b * seq + t] !== -100n) n++;
  return n;
}
