// Batches as the graphs consume them (int64, row-major [batch, seq]) and the seeded, resumable
// order in which a run visits them.
import { IGNORE_INDEX } from '../common/labels.ts';
import type { Example } from './data.ts';
import { Rng } from '../common/rng.ts';

export interface Batch {
  inputIds: BigInt64Array;
  labels: BigInt64Array;
  batch: number;
  seq: number;
  /** Label positions that carry loss after the causal shift (positions 1..seq-1 of each row). */
  targetTokens: number;
  /** [batch, seq] positions within each example, when the rows are packed (padding counts as examples of one token). */
  positionIds?: Int32Array;
}

export interface MakeBatchOptions {
  /** Token written into padding positions (their labels are always -100). Default 0. */
  padId?: number;
  /** Pad to exactly this length instead of the longest example (e.g. for a fixed graph shape). */
  seq?: number;
}

/** Right-pads the examples to a common length. */
export function makeBatch(examples: readonly Example[], options: MakeBatchOptions = {}): Batch {
  if (examples.length === 0) throw new Error('makeBatch needs at least one example');
  const padId = BigInt(options.padId ?? 0);
  const longest = examples.reduce((m, e) => Math.max(m, e.inputIds.length), 0);
  const seq = options.seq ?? longest;
  if (seq < longest) throw new Error(`makeBatch: seq ${seq} is shorter than the longest example (${longest} tokens)`);
  const batch = examples.length;
  const inputIds = new BigInt64Array(batch * seq).fill(padId);
  const labels = new BigInt64Array(batch * seq).fill(BigInt(IGNORE_INDEX));
  let targetTokens = 0;
  const positionIds = examples.some((e) => e.positions) ? new Int32Array(batch * seq) : undefined;
  examples.forEach((e, row) => {
    if (positionIds) positionIds.set(e.positions ?? Int32Array.from(e.inputIds, (_, i) => i), row * seq);
    if (e.labels.length !== e.inputIds.length) throw new Error(`makeBatch: example ${row} has ${e.inputIds.length} ids but ${e.labels.length} labels`);
    const off = row * seq;
    for (let i = 0; i < e.inputIds.length; i++) {
      inputIds[off + i] = BigInt(e.inputIds[i]);
      const l = e.labels[i];
      labels[off + i] = BigInt(l);
      if (i > 0 && l !== IGNORE_INDEX) targetTokens++;
    }
  });
  return positionIds ? { inputIds, labels, batch, seq, targetTokens, positionIds } : { inputIds, labels, batch, seq, targetTokens };
}

/** Where a run stands in its data: batch `index` of `epoch` is the next one to train on. */
export interface BatchPosition {
  epoch: number;
  index: number;
}

export interface PositionedBatch extends Batch {
  epoch: number;
  index: number;
  /** Position to store in a checkpoint taken after this batch. */
  next: BatchPosition;
}

export interface ShuffledBatchesOptions extends MakeBatchOptions {
  batchSize: number;
  seed: number;
  /** Resume point; default { epoch: 0, index: 0 }. */
  start?: BatchPosition;
  /** Stop before this epoch; default: never stop. */
  epochs?: number;
  /** Drop the last, smaller batch of each epoch so every batch has batchSize rows. Default true. */
  dropLast?: boolean;
}

export function batchesPerEpoch(count: number, batchSize: number, dropLast = true): number {
  return dropLast ? Math.floor(count / batchSize) : Math.ceil(count / batchSize);
}

/**
 * The permutation of example indices for one epoch. It depends only on (seed, epoch), so resuming
 * needs no generator state, only the position.
 */
export function epochOrder(count: number, seed: number, epoch: number): Uint32Array {
  const order = new Uint32Array(count);
  for (let i = 0; i < count; i++) order[i] = i;
  return Rng.derive(seed, epoch).shuffle(order);
}

export function* shuffledBatches(examples: readonly Example[], options: ShuffledBatchesOptions): Generator<PositionedBatch> {
  const { batchSize, seed, dropLast = true, epochs = Infinity } = options;
  if (!Number.isInteger(batchSize) || batchSize < 1) throw new Error(`batchSize must be a positive integer, got ${batchSize}`);
  const perEpoch = batchesPerEpoch(examples.length, batchSize, dropLast);
  if (perEpoch === 0) {
    throw new Error(`${examples.length} examples do not fill one batch of ${batchSize}; lower the batch size or add data`);
  }
  let { epoch, index } = options.start ?? { epoch: 0, index: 0 };
  if (!Number.isInteger(epoch) || epoch < 0 || !Number.isInteger(index) || index < 0 || index > perEpoch) {
    throw new Error(`invalid resume position epoch=${epoch} index=${index} (an epoch has ${perEpoch} batches)`);
  }
  if (index === perEpoch) {
    epoch++;
    index = 0;
  }
  const makeOptions: MakeBatchOptions = { padId: options.padId, seq: options.seq };
  while (epoch < epochs) {
    const order = epochOrder(examples.length, seed, epoch);
    for (; index < perEpoch; index++) {
      const rows = order.subarray(index * batchSize, Math.min(order.length, (index + 1) * batchSize));
      const b = makeBatch(Array.from(rows, (i) => examples[i]), makeOptions);
      const next = index + 1 < perEpoch ? { epoch, index: index + 1 } : { epoch: epoch + 1, index: 0 };
      yield { ...b, epoch, index, next };
    }
    epoch++;
    index = 0;
  }
}
