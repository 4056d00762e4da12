// A block range compiled into ONNX Runtime sessions: a forward graph, and a backward graph (or, for
// zero-bubble schedules, two) built by program-graphs.ts.
import { splitBackward } from '../autodiff/split.ts';
import type { ModelConfig } from '../hf/config.ts';
import { CompiledGraph, type Device } from '../graph/session.ts';
import { type HostTensor } from '../graph/dtype.ts';
import type { FrozenSource } from './frozen.ts';
import type { LoraSpec, QuantizedMatMul, WeightLoader } from './params.ts';
import { IO, wholeModel, type BlockRange } from './range-graph.ts';
import { ACC_PREFIX, GRAD_PREFIX, HIDDEN_GRAD, LOSS_SCALE, OUT_GRAD, programGraphs } from './program-graphs.ts';
import { ropeTables } from './rope.ts';
import { packedTables } from './packed-tables.ts';

export interface ProgramOptions {
  config: ModelConfig;
  range: BlockRange;
  /** HF names of the parameters that receive gradients; every other parameter is frozen. */
  trainable: ReadonlySet<string>;
  load: WeightLoader;
  /**
   * Frozen tensors, fed as graph inputs from buffers the caller shares between programs (and with a
   * teacher); by default each program reads them once through `load`.
   */
  frozen?: FrozenSource | null;
  /** Build d(loss)/d(hidden_in) for the previous rank. */
  inputGrad: boolean;
  device?: Device;
  threads?: number;
  /** Also output logits from the forward graph (evaluation, serving). */
  logits?: boolean;
  /** Also output the summed loss of each row (multiple-choice scoring). */
  rowLoss?: boolean;
  lora?: LoraSpec | null;
  quantized?: QuantizedMatMul | null;
  distill?: { weight: number; temperature: number } | null;
  /** Where the distillation head reads the original norm and LM head (default: `frozen`). */
  teacherFrozen?: FrozenSource | null;
  /**
   * Zero-bubble schedules: build the backward as two graphs, input gradient (`backwardInput`) and
   * weight gradients (`backwardWeight`), instead of one (`backward`).
   */
  splitBackward?: boolean;
  /** Rows may hold several examples (`Batch.positionIds`): see packed-tables.ts. */
  packed?: boolean;
  /** Layers of the range left out of the graphs (see RangeGraphOptions.skipLayers). */
  skipLayers?: ReadonlySet<number>;
  /**
   * A range below the head whose lowest blocks only run forward (the rank below needs no input
   * gradient): its forward keeps the hidden state entering the first trainable block, per Batch,
   * and the backward starts there instead of recomputing the frozen prefix. Backward then needs a
   * forward on the same Batch object first (pipeline ranks do that).
   */
  stashPrefix?: boolean;
  /**
   * A range below the head keeps the activations its backward reads from its forward run (per Batch,
   * until the backward) instead of recomputing its blocks in the backward graph: no recompute, more
   * memory per micro-batch in flight (run config `gradient_checkpointing: false`).
   */
  keepActivations?: boolean;
}

/** What a backward starts from: the loss scale (head) or the output's gradient, and the step's gradient sums so far. */
export interface BackwardSeed {
  lossScale?: number;
  outGrad?: Float32Array;
  /** The step's running sum per trainable tensor (absent on the first micro-batch): the backward returns it plus this micro-batch's gradient. */
  gradSums?: ReadonlyMap<string, Float32Array>;
}

/** keepActivations: the forward graph keeps `stash` for the gradient graph (fwd / bwd), after `prefix` if any. */
interface KeptGraphs {
  prefix: CompiledGraph | null;
  stash: readonly string[];
}

export interface Batch {
  batch: number;
  seq: number;
  /** [batch, seq] token ids: fed to a range that owns the embedding. */
  inputIds?: BigInt64Array;
  /** [batch, seq, hidden] activations: fed to any other range. */
  hidden?: Float32Array;
  /** [batch, seq] labels, unshifted, -100 ignored: fed to the range with the head. */
  labels?: BigInt64Array;
  /** [batch, seq, hidden] final hidden state of the distillation teacher (before its norm and head). */
  teacherHidden?: Float32Array;
  /** [batch, seq] position of each token within its example (packed rows; packed programs only). */
  positionIds?: Int32Array;
}

export interface BackwardResult {
  /** Gradient per trainable parameter name. */
  grads: Map<string, Float32Array>;
  /** d/d(hidden_in), when the program was built with inputGrad. */
  hiddenGrad?: Float32Array;
  lossSum?: number;
  tokenCount?: number;
  klSum?: number;
}

/** What `backwardInput` returns: the input gradient, the loss, and what `backwardWeight` needs. */
export interface InputGradResult extends Omit<BackwardResult, 'grads'> {
  stash: Record<string, HostTensor>;
}

interface SplitGraphs {
  /** Null on a range that yields neither an input gradient nor the loss. */
  b: CompiledGraph | null;
  /** Null on a range without trainable weights that still passes gradients down. */
  w: CompiledGraph | null;
  stash: readonly string[];
}

/** What a forward run returns; reading an output the program was not built to produce says so. */
export class ForwardResult {
  constructor(
    private readonly out: Readonly<Record<string, HostTensor>>,
    private readonly range: BlockRange,
  ) {}

  private get(name: string, why: string): HostTensor {
    const t = this.out[name];
    if (!t) throw new Error(`blocks ${this.range.start}..${this.range.end - 1}: the forward graph has no ${name} output (${why})`);
    return t;
  }

  /** [batch, seq, hidden] activations for the next rank (a range without the head). */
  get hiddenOut(): Float32Array {
    return this.get(IO.hiddenOut, 'only a range without the head passes activations on').data as Float32Array;
  }

  /** Summed token loss of the batch (the range with the head). */
  get lossSum(): number {
    return Number(this.get(IO.lossSum, 'only the range with the head computes the loss').data[0]);
  }

  /** Target tokens the loss counts (padding and prompt excluded). */
  get tokenCount(): number {
    return Number(this.get(IO.tokenCount, 'only the range with the head computes the loss').data[0]);
  }

  /** [batch, seq, vocab] logits, when the program was built with `logits`. */
  get logits(): Float32Array {
    return this.get(IO.logits, 'build the program with logits: true').data as Float32Array;
  }

  /** Summed loss of each row, when the program was built with `rowLoss`. */
  get rowLoss(): Float32Array {
    return this.get(IO.rowLoss, 'build the program with rowLoss: true').data as Float32Array;
  }
}

export { GRAD_PREFIX, programGraphs, type ProgramGraphs } from './program-graphs.ts';

/** A frozen whole model, forward only: evaluation, scoring and distillation teachers. */
export function frozenWholeModel(
  config: ModelConfig,
  load: WeightLoader,
  o: { device?: Device; threads?: number; logits?: boolean; rowLoss?: boolean; frozen?: FrozenSource | null } = {},
): Promise<RangeProgram> {
  return RangeProgram.create({ config, range: wholeModel(config), trainable: new Set(), load, inputGrad: false, ...o });
}

export class RangeProgram {
  private readonly tables = new Map<number, { cos: Float32Array; sin: Float32Array; mask: Float32Array }>();

  private constructor(
    readonly config: ModelConfig,
    readonly range: BlockRange,
    /** Trainable parameters this range actually uses, in a stable order. */
    readonly trainableNames: readonly string[],
    private readonly shapes: ReadonlyMap<string, number[]>,
    private readonly fwd: CompiledGraph,
    private readonly bwd: CompiledGraph | null,
    private readonly frozen: FrozenSource,
    /** Frozen tensors the graphs take as inputs. */
    private readonly frozenNames: readonly string[],
    private readonly split: SplitGraphs | null = null,
    readonly packed = false,
    /** stashPrefix: the block the backward graphs start at (see ProgramGraphs.stashFrom). */
    readonly stashFrom: number | null = null,
    private readonly kept: KeptGraphs | null = null,
  ) {}

  /** keepActivations: the activations each batch's forward kept for its backward. */
  private readonly saved = new WeakMap<Batch, Record<string, HostTensor>>();

  /** stashPrefix: the hidden state at `stashFrom` of each batch run forward and not yet backward. */
  private readonly stashes = new WeakMap<Batch, Float32Array>();

  static async create(o: ProgramOptions): Promise<RangeProgram> {
    const p = programGraphs(o);
    const session = { device: o.device, threads: o.threads };
    let bwd: CompiledGraph | null = null;
    let split: SplitGraphs | null = null;
    if (p.backward && o.splitBackward) {
      const gb = p.backward;
      const outs = gb.outputs.filter((n) => !n.startsWith(GRAD_PREFIX) || n === HIDDEN_GRAD);
      const parts = splitBackward(gb, outs, p.trainable.map((n) => GRAD_PREFIX + n));
      split = { b: parts.b && (await CompiledGraph.create(parts.b, session)), w: parts.w && (await CompiledGraph.create(parts.w, session)), stash: parts.stash };
    } else if (p.kept) {
      const k = p.kept;
      const kept: KeptGraphs = { prefix: k.prefix && (await CompiledGraph.create(k.prefix, session)), stash: k.stash };
      const [fwd, grads] = [await CompiledGraph.create(k.forward, session), await CompiledGraph.create(k.gradients, session)];
      return new RangeProgram(o.config, o.range, p.trainable, p.shapes, fwd, grads, p.frozen, p.frozenNames, null, !!o.packed, p.stashFrom, kept);
    } else if (p.backward) bwd = await CompiledGraph.create(p.backward, session);
    const fwd = await CompiledGraph.create(p.forward, session);
    return new RangeProgram(o.config, o.range, p.trainable, p.shapes, fwd, bwd, p.frozen, p.frozenNames, split, !!o.packed, p.stashFrom);
  }

  get hasBackward(): boolean {
    return this.bwd !== null || this.split !== null;
  }

  /** Values handed from `backwardInput` to `backwardWeight` (zero-bubble programs). */
  get stashNames(): readonly string[] {
    return this.split?.stash ?? [];
  }

  async forward(b: Batch, params: ReadonlyMap<string, Float32Array>): Promise<ForwardResult> {
    if (this.kept) return this.forwardKeeping(b, params, this.kept);
    const out = await this.fwd.run(this.feeds(b, params));
    if (this.stashFrom !== null) this.stashes.set(b, out[IO.prefixHidden].data as Float32Array);
    return new ForwardResult(out, this.range);
  }

  /**
   * Gradients of `lossScale · loss_sum` (head range) or of ⟨outGrad, hidden_out⟩ (other ranges).
   */
  async backward(b: Batch, params: ReadonlyMap<string, Float32Array>, seed: BackwardSeed): Promise<BackwardResult> {
    if (!this.bwd) throw new Error(`blocks ${this.range.start}..${this.range.end} have nothing to differentiate${this.split ? ' in one graph (the program was built with splitBackward: use backwardInput and backwardWeight)' : ''}`);
    const out = await this.bwd.run(this.kept ? { ...this.seededFeeds(b, params, seed), ...this.savedOf(b) } : this.seededFeeds(b, params, seed));
    this.stashes.delete(b);
    this.saved.delete(b);
    return { grads: this.gradsOf(out), ...this.inputSide(out) };
  }

  /** keepActivations: the prefix (if any), then the forward that outputs the activations its gradients read. */
  private async forwardKeeping(b: Batch, params: ReadonlyMap<string, Float32Array>, k: KeptGraphs): Promise<ForwardResult> {
    let from = b;
    if (k.prefix) {
      const hidden = (await k.prefix.run(this.feeds(b, params)))[IO.hiddenOut].data as Float32Array;
      this.stashes.set(b, hidden);
      from = this.stashedBatch(b);
    }
    const out = await this.fwd.run(this.feeds(from, params, k.prefix !== null));
    const saved: Record<string, HostTensor> = {};
    for (const n of k.stash) saved[n] = out[n];
    this.saved.set(b, saved);
    return new ForwardResult(out, this.range);
  }

  private savedOf(b: Batch): Record<string, HostTensor> {
    const s = this.saved.get(b);
    if (!s) throw new Error(`blocks ${this.range.start}..${this.range.end - 1} keep their activations from the forward (keepActivations): run forward on the same Batch object first, or build the program without keepActivations`);
    return s;
  }

  /** The input-gradient half of `backward` (and the loss on the head range), plus the stash for `backwardWeight`. */
  async backwardInput(b: Batch, params: ReadonlyMap<string, Float32Array>, seed: BackwardSeed): Promise<InputGradResult> {
    if (!this.split) throw new Error(`blocks ${this.range.start}..${this.range.end - 1}: backwardInput needs a program built with splitBackward`);
    if (!this.split.b) return { stash: {} };
    const out = await this.split.b.run(this.seededFeeds(b, params, seed));
    const stash: Record<string, HostTensor> = {};
    for (const n of this.split.stash) stash[n] = out[n];
    return { ...this.inputSide(out), stash };
  }

  /** The weight-gradient half of `backward`, from the same batch, seed and the stash of `backwardInput`. */
  async backwardWeight(b: Batch, params: ReadonlyMap<string, Float32Array>, seed: BackwardSeed, stash: Readonly<Record<string, HostTensor>>): Promise<Map<string, Float32Array>> {
    if (!this.split) throw new Error(`blocks ${this.range.start}..${this.range.end - 1}: backwardWeight needs a program built with splitBackward`);
    if (!this.split.w) return new Map();
    const out = await this.split.w.run({ ...this.seededFeeds(b, params, seed), ...stash });
    this.stashes.delete(b);
    return this.gradsOf(out);
  }

  private seededFeeds(b: Batch, params: ReadonlyMap<string, Float32Array>, seed: BackwardSeed): Record<string, HostTensor> {
    const feeds = this.stashFrom === null ? this.feeds(b, params) : this.feeds(this.stashedBatch(b), params, true);
    for (const n of this.trainableNames) {
      const sum = seed.gradSums?.get(n);
      feeds[ACC_PREFIX + n] = sum ? { dtype: 'float32', shape: this.shapes.get(n)!, data: sum } : zeroSum(this.shapes.get(n)!.length);
    }
    if (this.range.head) feeds[LOSS_SCALE] = { dtype: 'float32', shape: [], data: Float32Array.of(seed.lossScale ?? 1) };
    else {
      if (!seed.outGrad) throw new Error('backward of a middle range needs the gradient of its output');
      feeds[OUT_GRAD] = { dtype: 'float32', shape: [b.batch, b.seq, this.config.hiddenSize], data: seed.outGrad };
    }
    return feeds;
  }

  /** The batch a stashing program's backward graphs take: the hidden state its forward kept. */
  private stashedBatch(b: Batch): Batch {
    const hidden = this.stashes.get(b);
    if (!hidden) throw new Error(`blocks ${this.range.start}..${this.range.end - 1} (stashPrefix) run backward from the hidden state their forward kept at block ${this.stashFrom}: run forward on the same Batch object first, or build the program without stashPrefix`);
    return { ...b, inputIds: undefined, hidden };
  }

  private gradsOf(out: Record<string, HostTensor>): Map<string, Float32Array> {
    const grads = new Map<string, Float32Array>();
    for (const n of this.trainableNames) grads.set(n, out[GRAD_PREFIX + n].data as Float32Array);
    return grads;
  }

  private inputSide(out: Record<string, HostTensor>): Omit<BackwardResult, 'grads'> {
    return {
      hiddenGrad: out[HIDDEN_GRAD]?.data as Float32Array | undefined,
      lossSum: out[IO.lossSum] ? Number(out[IO.lossSum].data[0]) : undefined,
      tokenCount: out[IO.tokenCount] ? Number(out[IO.tokenCount].data[0]) : undefined,
      klSum: out[IO.klSum] ? Number(out[IO.klSum].data[0]) : undefined,
    };
  }

  async release(): Promise<void> {
    await this.fwd.release();
    await this.bwd?.release();
    await this.split?.b?.release();
    await this.split?.w?.release();
    await this.kept?.prefix?.release();
  }

  /** `fromHidden`: the graph takes hidden_in even on the embedding's range (a stashing backward). */
  private feeds(b: Batch, params: ReadonlyMap<string, Float32Array>, fromHidden = false): Record<string, HostTensor> {
    if (b.positionIds && !this.packed) throw new Error('this batch has packed rows (position ids) but the program was built without packed: true');
    const t = this.packed ? packedTables(this.config, b.batch, b.seq, b.positionIds) : this.tablesFor(b.seq);
    const table = this.packed ? [b.batch, 1, b.seq, this.config.headDim] : [b.seq, this.config.headDim];
    const feeds: Record<string, HostTensor> = {
      [IO.cos]: { dtype: 'float32', shape: table, data: t.cos },
      [IO.sin]: { dtype: 'float32', shape: table, data: t.sin },
      [IO.mask]: { dtype: 'float32', shape: this.packed ? [b.batch, 1, 1, b.seq, b.seq] : [b.seq, b.seq], data: t.mask },
    };
    if (this.range.embed && !fromHidden) {
      if (!b.inputIds) throw new Error('the first range needs input_ids');
      feeds[IO.inputIds] = { dtype: 'int64', shape: [b.batch, b.seq], data: b.inputIds };
    } else {
      if (!b.hidden) throw new Error(`blocks ${this.range.start}..${this.range.end} need the previous rank's activations`);
      feeds[IO.hiddenIn] = { dtype: 'float32', shape: [b.batch, b.seq, this.config.hiddenSize], data: b.hidden };
    }
    if (this.range.head) {
      if (!b.labels) throw new Error('the last range needs labels');
      feeds[IO.labels] = { dtype: 'int64', shape: [b.batch, b.seq], data: b.labels };
      if (b.teacherHidden) feeds[IO.teacherHidden] = { dtype: 'float32', shape: [b.batch, b.seq, this.config.hiddenSize], data: b.teacherHidden };
    }
    for (const n of this.frozenNames) feeds[n] = this.frozen.tensor(n);
    for (const n of this.trainableNames) {
      const v = params.get(n);
      if (!v) throw new Error(`trainable parameter ${n} was not given`);
      feeds[n] = { dtype: 'float32', shape: this.shapes.get(n)!, data: v };
    }
    return feeds;
  }

  private tablesFor(seq: number) {
    let t = this.tables.get(seq);
    if (!t) {
      const window = this.config.slidingWindow;
      if (window !== null && this.config.arch === 'qwen2' && seq > window) {
        throw new Error(`Qwen2 sliding-window attention (use_sliding_window, window ${window}) applies to some layers only and is not supported; use sequences of at most ${window} tokens`);
      }
      const mask = causalMask(seq, window);
      t = { ...ropeTables(this.config, seq), mask };
      this.tables.set(seq, t);
    }
    return t;
  }
}


/** The first micro-batch's gradient sum: one zero of the tensor's rank, which the graph's Add broadcasts. */
const zeroSums = new Map<number, HostTensor>();
function zeroSum(rank: number): HostTensor {
  let z = zeroSums.get(rank);
  if (!z) zeroSums.set(rank, (z = { dtype: 'float32', shape: new Array<number>(rank).fill(1), data: new Float32Array(1) }));
  return z;
}

/**
 * Additive attention mask [seq, seq]: 0 where query i may attend key j (j ≤ i, and with a sliding
 * window of w, i - j < w, as Mistral), a large negative elsewhere.
 */
export function causalMask(seq: number, window: number | null = null): Float32Array {
  const mask = new Float32Array(seq * seq);
  for (let i = 0; i < seq; i++) {
    for (let j = 0; j < seq; j++) if (j > i || (window !== null && i - j >= window)) mask[i * seq + j] = -1e9;
  }
  return mask;
}
