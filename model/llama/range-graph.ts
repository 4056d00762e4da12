// The forward graph of a contiguous block range, optionally starting at the token embedding and
// ending at the loss. This is the unit a pipeline rank runs; the whole model is one range.
import { IGNORE_INDEX } from '../../common/labels.ts';
import type { ModelConfig } from '../hf/config.ts';
import { Graph } from '../graph/graph.ts';
import { decoderBlock } from './block.ts';
import { rmsNorm } from './layers.ts';
import type { ParamBinder } from './params.ts';
import { kernelChoices } from '../graph/kernels.ts';

export interface BlockRange {
  /** First block (inclusive) and last block (exclusive). */
  start: number;
  end: number;
  /** Starts from token ids (owns the embedding). */
  embed: boolean;
  /** Ends with the final norm, the LM head and the loss. */
  head: boolean;
}

/** Value names of the graph's inputs and outputs: the contract with the code that feeds it. */
export const IO = {
  inputIds: 'input_ids',
  hiddenIn: 'hidden_in',
  cos: 'rope_cos',
  sin: 'rope_sin',
  mask: 'attn_mask',
  labels: 'labels',
  hiddenOut: 'hidden_out',
  lossSum: 'loss_sum',
  tokenCount: 'token_count',
  logits: 'logits',
  rowLoss: 'row_loss',
  teacherHidden: 'teacher_hidden',
  klSum: 'kl_sum',
  objective: 'objective',
  /** The hidden state entering the first trainable block, kept for the backward (stashPrefix). */
  prefixHidden: 'prefix_hidden',
} as const;

/**
 * Distillation: the teacher's final norm and LM head are bound under these names, so they always read
 * the original weights (the student's head may be training); `teacherWeightOf` gives the tensor.
 */
const TEACHER_WEIGHT = 'teacher.';

export function teacherWeightOf(name: string): string | null {
  return name.startsWith(TEACHER_WEIGHT) ? name.slice(TEACHER_WEIGHT.length) : null;
}

export function wholeModel(config: ModelConfig): BlockRange {
  return { start: 0, end: config.numLayers, embed: true, head: true };
}

export interface RangeGraph {
  graph: Graph;
  /** The value gradients flow back into from the next rank (hidden_out) or the loss (loss_sum). */
  seed: string;
  /** The range's activation input, when it has one. */
  hiddenIn?: string;
}

export interface RangeGraphOptions {
  logits?: boolean;
  rowLoss?: boolean;
  /**
   * Adds weight·T²·KL(teacher‖student) over target positions to the objective. The teacher's final
   * hidden state is fed (its blocks ran elsewhere); its norm, head and logits are computed here, in
   * the session that already holds the student's, rather than in a session (and arena) of their own.
   */
  distill?: { weight: number; temperature: number } | null;
  /**
   * Packed rows (several examples per row): rotary tables per token ([batch, 1, seq, headDim]) and
   * a mask per row ([batch, 1, 1, seq, seq]) instead of one for all rows.
   */
  packed?: boolean;
  /**
   * Layers of the range the graph leaves out (the distillation teacher of a LLaMA Pro run is the
   * expanded stack without its new blocks).
   */
  skipLayers?: ReadonlySet<number>;
  /**
   * Blocks below this index get no gradient (a forward-only range: its end; a frozen prefix: the
   * lowest trainable block) and may run forward-only kernels. Default: none.
   */
  noGradBelow?: number;
  /** Also output the hidden state entering this block (IO.prefixHidden). */
  outputAt?: number;
}

export function buildRangeGraph(config: ModelConfig, range: BlockRange, p: ParamBinder, opts: RangeGraphOptions = {}): RangeGraph {
  const g = new Graph(`blocks_${range.start}_${range.end}`);
  const h = config.hiddenSize;
  let x: string;
  let hiddenIn: string | undefined;
  if (range.embed) {
    const ids = g.input(IO.inputIds, 'int64', ['batch', 'seq']);
    x = p.gatherRows(g, 'model.embed_tokens.weight', [config.vocabSize, h], ids);
  } else {
    x = hiddenIn = g.input(IO.hiddenIn, 'float32', ['batch', 'seq', h]);
  }
  const table = opts.packed ? ['batch', 1, 'seq', config.headDim] : ['seq', config.headDim];
  const io = {
    cos: g.input(IO.cos, 'float32', table),
    sin: g.input(IO.sin, 'float32', table),
    mask: g.input(IO.mask, 'float32', opts.packed ? ['batch', 1, 1, 'seq', 'seq'] : ['seq', 'seq']),
  };
  const noGradBelow = opts.noGradBelow ?? range.start;
  for (let layer = range.start; layer < range.end; layer++) {
    if (layer === opts.outputAt) g.output(g.rename(x, IO.prefixHidden));
    if (!opts.skipLayers?.has(layer)) x = decoderBlock(g, p, x, layer, config, io, layer < noGradBelow);
  }

  if (!range.head) {
    g.output(g.rename(x, IO.hiddenOut));
    return { graph: g, seed: IO.hiddenOut, hiddenIn };
  }
  const normed = rmsNorm(g, p, x, 'model.norm', config);
  const headName = config.tieWordEmbeddings ? 'model.embed_tokens.weight' : 'lm_head.weight';
  const headW = p.get(g, headName, [config.vocabSize, h]);
  const logits = g.op('MatMul', [normed, g.op('Transpose', [headW], { perm: [1, 0] })]);
  if (opts.logits) g.output(g.rename(logits, IO.logits));

  // HF shifts inside the model: position t predicts labels[t + 1].
  const labels = g.input(IO.labels, 'int64', ['batch', 'seq']);
  const v = config.vocabSize;
  const shifted = kernelChoices().shiftedLabels;
  const nextLabels = g.op('Slice', [labels, g.i64([1]), g.i64([2 ** 62]), g.i64([1])]);
  // Every position's logits against the next label, the last position ignored: the loss reads the
  // logits in place, and their gradient needs no padding back to [b, t, v] (two logit-sized copies).
  // Unshifted, the logits are sliced to the first t − 1 positions instead.
  const rows = (z: string) => g.op('Reshape', [shifted ? z : g.op('Slice', [z, g.i64([0]), g.i64([-1]), g.i64([1])]), g.i64([-1, v])]);
  const predicted = rows(logits);
  // The ignored last column as Expand + Concat (int64 Pad has no CUDA kernel).
  const ignoredColumn = () => g.op('Expand', [g.constant([IGNORE_INDEX], 'int64', [1, 1]), g.op('Shape', [g.op('Slice', [labels, g.i64([0]), g.i64([1]), g.i64([1])])])]);
  const rowLabels = shifted ? g.op('Concat', [nextLabels, ignoredColumn()], { axis: 1 }) : nextLabels;
  const targets = g.op('Reshape', [rowLabels, g.i64([-1])]);
  // The log-probabilities (second output) are what the gradient rule starts from.
  const lossSum = g.opN('SoftmaxCrossEntropyLoss', [predicted, targets], shifted ? 2 : 1, { reduction: 'sum', ignore_index: IGNORE_INDEX })[0];
  const counted = g.op('Not', [g.op('Equal', [targets, g.i64([IGNORE_INDEX])])]);
  const count = g.op('ReduceSum', [g.op('Cast', [counted], { to: 1 })], { keepdims: 0 });
  if (opts.rowLoss) {
    const perToken = g.op('SoftmaxCrossEntropyLoss', [predicted, targets], { reduction: 'none', ignore_index: IGNORE_INDEX });
    const perRow = g.op('Reshape', [perToken, g.op('Shape', [rowLabels])]);
    g.output(g.rename(g.op('ReduceSum', [perRow, g.i64([1])], { keepdims: 0 }), IO.rowLoss));
  }
  g.output(g.rename(lossSum, IO.lossSum));
  g.output(g.rename(count, IO.tokenCount));
  if (!opts.distill) return { graph: g, seed: IO.lossSum, hiddenIn };

  const { weight, temperature: temp } = opts.distill;
  const teacherHidden = g.input(IO.teacherHidden, 'float32', ['batch', 'seq', h]);
  const teacherW = p.get(g, TEACHER_WEIGHT + headName, [v, h]);
  const teacher = g.op('MatMul', [rmsNorm(g, p, teacherHidden, `${TEACHER_WEIGHT}model.norm`, config), g.op('Transpose', [teacherW], { perm: [1, 0] })]);
  const soft = (z: string) => g.op('Mul', [rows(z), g.constant(1 / temp, 'float32')]);
  const logPt = g.op('LogSoftmax', [soft(teacher)], { axis: -1 });
  const logPs = g.op('LogSoftmax', [soft(logits)], { axis: -1 });
  const klRows = g.op('ReduceSum', [g.op('Mul', [g.op('Exp', [logPt]), g.op('Sub', [logPt, logPs])]), g.i64([-1])], { keepdims: 0 });
  const kl = g.op('ReduceSum', [g.op('Mul', [klRows, g.op('Cast', [counted], { to: 1 })])], { keepdims: 0 });
  g.output(g.rename(kl, IO.klSum));
  const objective = g.op('Add', [lossSum, g.op('Mul', [kl, g.constant(weight * temp * temp, 'float32')])]);
  g.output(g.rename(objective, IO.objective));
  return { graph: g, seed: IO.objective, hiddenIn };
}
