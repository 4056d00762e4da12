// Op counts of the graphs a rank actually runs, per unit (one decoder block, the embedding, the head),
// built with the project's own graph builder and autodiff (no weights: every parameter is a graph input)
// and split into the phases of a step:
//   forward     the forward graph (pipeline activations)
//   recompute   the forward nodes the backward graph re-runs from the range input (checkpointing)
//   inputGrad   gradient nodes that carry d(loss)/d(input) down through the unit
//   weightGrad  gradient nodes that produce parameter gradients (the rest of the backward graph)
// A block is in one of four states in a stage, from the freeze mask:
//   'forward'       below every trainable tensor: forward only (its recompute, if its rank runs backward)
//   'cross'         frozen, gradients pass through it:           recompute + inputGrad
//   'train'         its tensors (or LoRA adapters) train:       recompute + inputGrad + weightGrad
//   'train-bottom'  trains, and nothing below needs gradients:  recompute + weightGrad
// Blocks of one model have the same shapes, so one graph per (state, adapters) serves every layer.
// A 'forward' block is built as the ranks build it: no gradient passes through it, so on CPU its
// attention is ONNX Runtime's GroupQueryAttention (model/llama/attention.ts, `noGradBelow`), and its
// recompute inside a backward graph is the same fused form; CUDA graphs keep the standard ops.
import { backward } from '../model/autodiff/backward.ts';
import type { ModelConfig } from '../model/hf/config.ts';
import type { Graph, Node } from '../model/graph/graph.ts';
import { liveNodes } from '../model/graph/serialize.ts';
import { ParamBinder, type LoraSpec } from '../model/llama/params.ts';
import { buildRangeGraph, type BlockRange } from '../model/llama/range-graph.ts';
import { layerParamSpecs } from '../model/llama/param-specs.ts';
import { foldedNodes, fusedNodes, largestValueBytes, livePeakBytes, nodesCost, savedBytes, subCost, ZERO, type OpCost } from './graph-cost.ts';

export type BlockState = 'forward' | 'cross' | 'train' | 'train-bottom';

export interface PhaseCosts {
  forward: OpCost;
  recompute: OpCost;
  inputGrad: OpCost;
  weightGrad: OpCost;
  /** Bytes of recomputed activations the gradient nodes read (alive from the recompute to their use). */
  savedBytes: number;
  /** Peak of the backward graph's other live values over the saved ones (transients of the walk down). */
  gradBytes: number;
  /** Largest single value of the forward graph. */
  peakValueBytes: number;
  /**
   * ZB-H1's stash: bytes of the values the weight-gradient nodes read from the recompute and
   * input-gradient nodes (model/autodiff/split.ts hands them from B to W). A rank holds them for each
   * micro-batch whose W it defers; on a GPU they cross host memory twice (B's outputs, W's inputs).
   */
  stashBytes: number;
}

export interface UnitSpec {
  state: BlockState;
  /** The unit's LoRA adapters (module suffixes like self_attn.q_proj), present whether or not they train. */
  lora: readonly string[];
  /** What trains when the state trains: the whole block, or only its adapters. */
  trains: 'block' | 'lora';
}

const NO_GRAD: Omit<PhaseCosts, 'forward' | 'peakValueBytes'> = { recompute: ZERO, inputGrad: ZERO, weightGrad: ZERO, savedBytes: 0, gradBytes: 0, stashBytes: 0 };

interface Built {
  graph: Graph;
  seed: string;
  hiddenIn?: string;
  binder: ParamBinder;
  /** Every parameter the graph binds (each a graph input here; frozen ones are initializers in a real graph). */
  params: Set<string>;
  /** How many nodes the forward graph has. */
  forwardNodes: number;
}

function build(config: ModelConfig, range: BlockRange, layer: number | null, lora: readonly string[], loraRank: number, opts: { logits?: boolean; distill?: boolean; noGradBelow?: number }): Built {
  const names = new Set<string>();
  const binder = new ParamBinder({
    // Every parameter is a graph input: no weights are needed to count ops.
    trainable: { has: (n: string) => (names.add(n), true) } as unknown as ReadonlySet<string>,
    load: () => {
      throw new Error('unreachable: counting graphs binds no weights');
    },
    lora: lora.length && layer !== null ? { rank: loraRank, alpha: loraRank, linears: new Set(lora.map((m) => `model.layers.${layer}.${m}`)) } satisfies LoraSpec : null,
  });
  const { graph, seed, hiddenIn } = buildRangeGraph(config, range, binder, { logits: opts.logits, distill: opts.distill ? { weight: 1, temperature: 1 } : null, noGradBelow: opts.noGradBelow });
  return { graph, seed, hiddenIn, binder, params: names, forwardNodes: graph.nodes.length };
}

const frozenOf = (b: Built, trainable: readonly string[]) => new Set([...b.params].filter((n) => !trainable.includes(n)));

function forwardOnly(b: Built, dims: Record<string, number>, trainable: readonly string[] = []): Pick<PhaseCosts, 'forward' | 'peakValueBytes'> {
  const live = liveNodes(b.graph);
  const folded = foldedNodes(b.graph, live, frozenOf(b, trainable));
  return { forward: nodesCost(b.graph, live, dims, withFused(b.graph, live, folded)), peakValueBytes: largestValueBytes(b.graph, live, dims, folded) };
}

/** Nodes that cost no time: folded at session build, or fused into a MatMul by ONNX Runtime (memory still counts them). */
function withFused(g: Graph, live: readonly Node[], folded: ReadonlySet<Node>): Set<Node> {
  return new Set([...folded, ...fusedNodes(g, live, folded)]);
}

/**
 * Recompute and gradient costs of the backward graph with respect to `wrt`; with `inputs` (the part of
 * `wrt` that B yields, the rest being weights), also the ZB-H1 stash between B and W.
 */
function backwardCost(b: Built, config: ModelConfig, head: boolean, wrt: string[], dims: Record<string, number>, inputs: readonly string[] = []): { recompute: OpCost; grad: OpCost; savedBytes: number; gradBytes: number; stashBytes: number } {
  if (wrt.length === 0) return { recompute: ZERO, grad: ZERO, savedBytes: 0, gradBytes: 0, stashBytes: 0 };
  const g = b.graph.clone('count_backward');
  g.outputs.splice(0);
  const seedGrad = head ? g.input('loss_scale', 'float32', []) : g.input('grad.hidden_out', 'float32', ['batch', 'seq', config.hiddenSize]);
  const grads = backward(g, [{ value: b.seed, grad: seedGrad }], wrt);
  for (const d of grads.values()) if (d) g.output(d);
  const live = liveNodes(g);
  const folded = foldedNodes(g, live, frozenOf(b, wrt));
  // The clone keeps node order: its first nodes are the forward's.
  const forward = new Set(g.nodes.slice(0, b.forwardNodes));
  const fwd = live.filter((n) => forward.has(n));
  const rest = live.filter((n) => !forward.has(n));
  const saved = savedBytes(g, fwd, rest, dims, folded);
  let stash = 0;
  if (inputs.length < wrt.length) {
    // B: the nodes the input gradients (and, on the head, the loss) need; W: the other gradient nodes.
    const bOut = [...(head ? [b.seed] : []), ...inputs.map((i) => grads.get(i)).filter((d): d is string => !!d)];
    const bValues = new Set(liveNodes(onlyOutputs(g, bOut)).flatMap((n) => n.outputs));
    const inB = (n: (typeof live)[number]) => n.outputs.some((o) => bValues.has(o));
    stash = savedBytes(g, live.filter(inB), live.filter((n) => !inB(n)), dims, folded);
  }
  const free = withFused(g, live, folded);
  return { recompute: nodesCost(g, fwd, dims, free), grad: nodesCost(g, rest, dims, free), savedBytes: saved, gradBytes: Math.max(0, livePeakBytes(g, live, dims, folded) - saved), stashBytes: stash };
}

/** A copy of `g` whose outputs are `outputs` (its live nodes are what computing them takes). */
function onlyOutputs(g: Graph, outputs: readonly string[]): Graph {
  const c = g.clone(`${g.name}_b`);
  c.outputs.splice(0, c.outputs.length, ...outputs);
  return c;
}

function blockTrainables(config: ModelConfig, layer: number, spec: UnitSpec, loraRank: number): string[] {
  if (spec.trains === 'block') return layerParamSpecs(config, layer).map((s) => s.name);
  return spec.lora.flatMap((m) => [`model.layers.${layer}.${m}.lora_A.weight`, `model.layers.${layer}.${m}.lora_B.weight`]).filter(() => loraRank > 0);
}

// Graphs depend on shapes only: one count per (config, state, adapters, batch, seq) for the process.
const cache = new Map<string, unknown>();
function cached<T>(key: unknown[], f: () => T): T {
  const k = JSON.stringify(key);
  if (!cache.has(k)) {
    if (cache.size > 512) cache.clear();
    cache.set(k, f());
  }
  return cache.get(k) as T;
}

/**
 * One decoder block in `spec`'s state, for a micro-batch of `batch` × `seq` tokens; `forwardKernels`:
 * a 'forward' block runs the forward-only kernels (CPU), as the ranks build it.
 */
export function blockCosts(config: ModelConfig, spec: UnitSpec, loraRank: number, dims: { batch: number; seq: number }, forwardKernels = false): PhaseCosts {
  const fused = forwardKernels && spec.state === 'forward';
  return cached(['block', config, spec, loraRank, dims, fused], () => countBlock(config, spec, loraRank, dims, fused));
}

function countBlock(config: ModelConfig, spec: UnitSpec, loraRank: number, dims: { batch: number; seq: number }, fused: boolean): PhaseCosts {
  const layer = 0;
  const b = build(config, { start: layer, end: layer + 1, embed: false, head: false }, layer, spec.lora, loraRank, { noGradBelow: fused ? layer + 1 : layer });
  const hidden = b.hiddenIn!;
  const weights = spec.state === 'cross' || spec.state === 'forward' ? [] : blockTrainables(config, layer, spec, loraRank);
  const fwd = forwardOnly(b, dims, weights);
  if (spec.state === 'forward') return { ...fwd, ...NO_GRAD, recompute: fwd.forward, savedBytes: 0 };
  const input = spec.state === 'train-bottom' ? [] : [hidden];
  const all = backwardCost(b, config, false, [...input, ...weights], dims, input);
  const only = spec.state === 'train' ? backwardCost(b, config, false, input, dims) : null;
  const inputGrad = spec.state === 'cross' ? all.grad : only ? only.grad : ZERO;
  return { ...fwd, recompute: all.recompute, inputGrad, weightGrad: subCost(all.grad, inputGrad), savedBytes: all.savedBytes, gradBytes: all.gradBytes, stashBytes: all.stashBytes };
}

/** The final norm, LM head and loss (with the distillation KL when it runs). The last rank always runs its backward. */
export function headCosts(config: ModelConfig, o: { trains: boolean; distill: boolean; inputGrad: boolean }, dims: { batch: number; seq: number }): PhaseCosts {
  return cached(['head', config, o, dims], () => countHead(config, o, dims));
}

function countHead(config: ModelConfig, o: { trains: boolean; distill: boolean; inputGrad: boolean }, dims: { batch: number; seq: number }): PhaseCosts {
  const b = build(config, { start: config.numLayers, end: config.numLayers, embed: false, head: true }, null, [], 0, { distill: o.distill });
  const headNames = ['model.norm.weight', config.tieWordEmbeddings ? 'model.embed_tokens.weight' : 'lm_head.weight'];
  const fwd = forwardOnly(b, dims, o.trains ? headNames : []);
  const input = o.inputGrad ? [b.hiddenIn!] : [];
  const all = backwardCost(b, config, true, [...input, ...(o.trains ? headNames : [])], dims, input);
  const only = o.trains && o.inputGrad ? backwardCost(b, config, true, input, dims) : null;
  const inputGrad = o.trains ? (only?.grad ?? ZERO) : all.grad;
  return { ...fwd, recompute: all.recompute, inputGrad, weightGrad: subCost(all.grad, inputGrad), savedBytes: all.savedBytes, gradBytes: all.gradBytes, stashBytes: all.stashBytes };
}

/** The token embedding: a Gather forward, and a scatter-add of its gradient when it trains. */
export function embedCosts(config: ModelConfig, trains: boolean, dims: { batch: number; seq: number }): PhaseCosts {
  return cached(['embed', config, trains, dims], () => countEmbed(config, trains, dims));
}

function countEmbed(config: ModelConfig, trains: boolean, dims: { batch: number; seq: number }): PhaseCosts {
  const b = build(config, { start: 0, end: 0, embed: true, head: false }, null, [], 0, {});
  const fwd = forwardOnly(b, dims, trains ? ['model.embed_tokens.weight'] : []);
  if (!trains) return { ...fwd, ...NO_GRAD, recompute: fwd.forward };
  const all = backwardCost(b, config, false, ['model.embed_tokens.weight'], dims);
  return { ...fwd, recompute: all.recompute, inputGrad: ZERO, weightGrad: all.grad, savedBytes: all.savedBytes, gradBytes: all.gradBytes, stashBytes: 0 };
}

export interface TeacherUnits {
  embed: OpCost;
  block: OpCost;
  blockPeakBytes: number;
}

/** The frozen forward units of the distillation teacher, which every rank runs over its own original blocks (its head is in headCosts). */
export function teacherUnits(base: ModelConfig, dims: { batch: number; seq: number }, forwardKernels = false): TeacherUnits {
  return cached(['teacher', base, dims, forwardKernels], () => countTeacher(base, dims, forwardKernels));
}

function countTeacher(base: ModelConfig, dims: { batch: number; seq: number }, fused: boolean): TeacherUnits {
  const block = forwardOnly(build(base, { start: 0, end: 1, embed: false, head: false }, 0, [], 0, { noGradBelow: fused ? 1 : 0 }), dims);
  const embed = forwardOnly(build(base, { start: 0, end: 0, embed: true, head: false }, null, [], 0, {}), dims);
  return { embed: embed.forward, block: block.forward, blockPeakBytes: block.peakValueBytes };
}

