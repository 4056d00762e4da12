// The ONNX graphs of a block range: the forward, and a backward that recomputes the forward from the
// range input (or, stashing a frozen prefix, from the hidden state the forward left at its first
// trainable block) and yields only the gradients that are needed.
import { backward } from '../autodiff/backward.ts';
import { hoistWeightChains, recomputeWeightChains } from '../autodiff/recompute.ts';
import { splitForward } from '../autodiff/split.ts';
import type { Graph } from '../graph/graph.ts';
import { layerOf, paramSpecs } from './param-specs.ts';
import { loaderSource, type FrozenSource } from './frozen.ts';
import { ParamBinder } from './params.ts';
import { buildRangeGraph, IO, teacherWeightOf } from './range-graph.ts';
import type { ProgramOptions } from './program.ts';

export const GRAD_PREFIX = 'grad.';
export const HIDDEN_GRAD = 'grad.hidden_in';
export const OUT_GRAD = 'grad.hidden_out';
export const LOSS_SCALE = 'loss_scale';
/** Graph inputs of the running gradient sums (a backward adds its micro-batch's gradients to them). */
export const ACC_PREFIX = 'grad_sum.';

export interface ProgramGraphs {
  forward: Graph;
  backward: Graph | null;
  trainable: string[];
  shapes: ReadonlyMap<string, number[]>;
  frozen: FrozenSource;
  frozenNames: string[];
  /**
   * stashPrefix: the block the backward graph starts at, fed the hidden state the forward graph
   * outputs there (IO.prefixHidden); null when the backward recomputes from the range input.
   */
  stashFrom: number | null;
  /**
   * keepActivations: the backward split at its seed (autodiff/split.ts splitForward): `forward` runs the
   * forward once and outputs the saved activations (`stash`), `gradients` starts from them; with
   * stashPrefix, `prefix` is the forward-only graph of the blocks below (its output feeds `forward`).
   */
  kept: { prefix: Graph | null; forward: Graph; gradients: Graph; stash: string[] } | null;
}

/** The forward and backward graphs of a range, as RangeProgram compiles them (also listed by the op-coverage test). */
export function programGraphs(o: ProgramOptions): ProgramGraphs {
  const k = stashFrom(o);
  if (k === null) return keep(o, rangeGraphs(o, {}), null);
  const whole = rangeGraphs(o, { outputAt: k, backward: false });
  const tail = rangeGraphs({ ...o, range: { start: k, end: o.range.end, embed: false, head: false }, inputGrad: false }, {});
  if (tail.trainable.join() !== whole.trainable.join()) throw new Error(`blocks ${o.range.start}..${k - 1} hold trainable tensors but were taken for a frozen prefix`);
  const tailNames = new Set(tail.frozenNames);
  const prefix = keeps(o) ? rangeGraphs({ ...o, range: { ...o.range, end: k, head: false }, inputGrad: false, trainable: new Set() }, { backward: false }).forward : null;
  return keep(o, {
    ...whole,
    backward: tail.backward,
    // Recomputed upcasts of the tail's backward graph are aliases only its source resolves.
    frozen: { tensor: (n) => (tailNames.has(n) ? tail.frozen : whole.frozen).tensor(n) },
    frozenNames: [...new Set([...whole.frozenNames, ...tail.frozenNames])],
    stashFrom: k,
  }, prefix);
}

const keeps = (o: ProgramOptions) => !!o.keepActivations && !o.range.head && !o.splitBackward;

/** keepActivations on a range below the head: the backward cut into a forward that keeps its activations and the gradients. */
function keep(o: ProgramOptions, p: ProgramGraphs, prefix: Graph | null): ProgramGraphs {
  if (!keeps(o) || !p.backward) return p;
  const activations = [IO.hiddenIn, IO.inputIds, IO.cos, IO.sin, IO.mask];
  const parts = splitForward(p.backward, [OUT_GRAD], activations, [IO.hiddenOut]);
  return { ...p, kept: { prefix, forward: parts.f, gradients: parts.b, stash: parts.stash } };
}

/**
 * The block a stashing program's backward graph starts at: the first block a gradient passes through,
 * when blocks below it in the range only run forward (the rank below needs no input gradient) and the
 * range runs a forward of its own before the backward (not the head, which folds its forward in).
 */
function stashFrom(o: ProgramOptions): number | null {
  if (!o.stashPrefix || o.range.head) return null;
  const k = noGradBelow(o);
  return k > o.range.start && k < o.range.end ? k : null;
}

function rangeGraphs(o: ProgramOptions, opts: { outputAt?: number; backward?: boolean }): ProgramGraphs {
  const specs = new Map(paramSpecs(o.config).map((p) => [p.name, p.shape]));
  const source = o.frozen ?? loaderSource(o.load, (n) => specs.get(n) ?? []);
  const original = o.teacherFrozen ?? source;
  // Recomputed upcasts read the same buffer under a second input name.
  const aliasOf = new Map<string, string>();
  const read = (n: string) => {
    const t = teacherWeightOf(n);
    return t ? original.tensor(t) : source.tensor(n);
  };
  const frozen: FrozenSource = { tensor: (n) => read(aliasOf.get(n) ?? n) };
  const binder = new ParamBinder({ trainable: o.trainable, load: o.load, frozen, lora: o.lora, quantized: o.quantized });
  // ONNX Runtime's CUDA GroupQueryAttention takes half precision only: float32 graphs on CUDA keep
  // the standard ops in every block.
  const forwardOnlyBelow = o.device === 'cuda' ? o.range.start : noGradBelow(o);
  const { graph, seed, hiddenIn } = buildRangeGraph(o.config, o.range, binder, { logits: o.logits, rowLoss: o.rowLoss, distill: o.distill, packed: o.packed, skipLayers: o.skipLayers, noGradBelow: forwardOnlyBelow, outputAt: opts.outputAt });
  const trainable = binder.used.filter((n) => o.trainable.has(n));
  const wrt = [...trainable, ...(o.inputGrad && hiddenIn ? [hiddenIn] : [])];

  let gb: Graph | null = null;
  const frozenNames = [...binder.frozenInputs];
  if (wrt.length > 0 && opts.backward !== false) {
    gb = graph.clone(`${graph.name}_backward`);
    const gradStart = gb.nodes.length;
    gb.outputs.splice(0, gb.outputs.length);
    const seedGrad = o.range.head ? gb.input(LOSS_SCALE, 'float32', []) : gb.input(OUT_GRAD, 'float32', ['batch', 'seq', o.config.hiddenSize]);
    const grads = backward(gb, [{ value: seed, grad: seedGrad }], wrt);
    for (const [alias, root] of recomputeWeightChains(gb, gradStart, binder.halfInputs)) {
      frozenNames.push(alias);
      aliasOf.set(alias, root);
    }
    hoistWeightChains(gb, new Set([...binder.halfInputs, ...aliasOf.keys()]));
    for (const w of wrt) {
      const d = grads.get(w);
      if (!d) throw new Error(`parameter ${w} does not influence the output of blocks ${o.range.start}..${o.range.end}`);
      if (w === hiddenIn) {
        gb.output(gb.rename(d, HIDDEN_GRAD));
        continue;
      }
      // The step's running sum of this gradient comes in and leaves with this micro-batch's added, in the
      // same run (on the device, not in a host pass); the first micro-batch feeds a [1, …] zero that broadcasts.
      const rank = binder.shapes.get(w)!.length;
      const acc = gb.input(ACC_PREFIX + w, 'float32', Array.from({ length: rank }, (_, i) => `${ACC_PREFIX}${w}:${i}`));
      gb.output(gb.rename(gb.op('Add', [acc, d]), GRAD_PREFIX + w));
    }
    // The last rank gets its loss from the same run, so forward and backward are not run twice.
    if (o.range.head) {
      gb.output(IO.lossSum);
      gb.output(IO.tokenCount);
      if (o.distill) gb.output(IO.klSum);
    }
  }
  // Forward runs serve evaluation and pipeline activations: they never need the teacher.
  const forwardOutputs = graph.outputs.filter((n) => n !== IO.klSum && n !== IO.objective);
  graph.outputs.splice(0, graph.outputs.length, ...forwardOutputs);
  hoistWeightChains(graph, binder.halfInputs);
  // 4-bit codes, scales and zero points are fed like frozen tensors, from the process's one copy.
  const quantized = binder.quantizedInputs;
  const feeds: FrozenSource = { tensor: (n) => (quantized.has(n) ? o.quantized!.tensor(n) : frozen.tensor(n)) };
  return { forward: graph, backward: gb, trainable, shapes: binder.shapes, frozen: feeds, frozenNames: [...frozenNames, ...quantized], stashFrom: null, kept: null };
}

/**
 * The first block a gradient passes through: the range start when the rank below needs an input
 * gradient, else the lowest block with a trainable tensor (the range end when none has one). The
 * forward and backward graphs agree on it, so a rank's activations are those its backward recomputes.
 */
function noGradBelow(o: ProgramOptions): number {
  const { range } = o;
  if (o.inputGrad && !range.embed) return range.start;
  let lowest = range.end;
  for (const n of o.trainable) {
    const l = layerOf(n);
    if (l === 'embed' && range.embed) lowest = range.start;
    else if (typeof l === 'number' && l >= range.start && l < range.end) lowest = Math.min(lowest, l);
  }
  return lowest;
}

