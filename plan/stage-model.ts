// The cost and memory model of one stage of a run: what any block range [s, e) costs a rank in time per
// micro-batch and in memory. Inputs are plain data (config, tensor names, sizes), so the CLI, the
// coordinator's partition planner and the benchmarks all price ranks with the same formulas.
//
// Time per micro-batch on rank r (seconds), with T(c) = (flops/peak + bytes/bandwidth + mathBytes/mathBandwidth)/eff + nodes·opSeconds
// (mathBytes: exp/log/sigmoid ops, at their own rate) for each phase's op counts c (plan/unit-costs.ts, counted from the graphs the rank builds):
//   forward   Σ_units T(forward)                              (not on the last rank when it runs backward:
//                                                              its backward graph also yields the loss)
//   backward  Σ_units T(recompute) + T(inputGrad) + T(weightGrad) + the head's teacher forward (distillation)
//             (stashPrefix below the head: none for the frozen prefix [start, lowest trainable) or embedding)
//   teacher   every rank runs the teacher over its range's original blocks (≈ range · base layers / layers),
//             at forward time below the head, at backward time on the head (whose backward graph holds the
//             teacher's norm, LM head and KL: headCosts); its hidden state doubles the frames
//   each run  + runSeconds + bytes crossing PCIe / hostLink   (trainable weights in, gradients out, activations)
//   each send + frame bytes / peerLink                         (activations up, input gradients down)
//   each backward + the micro-batch's gradients added to the step's running sum in the same run: CPU
//                   P_stage · accumulate (calibrated); GPU P_stage · (12 B / bandwidth + 4 B · (M − 1)/M / hostLink)
//   each step + P_stage · optimizer                            (host: AdamW and the norm's sum of squares)
//   ZB-H1 (zb1) runs the backward as two graphs (model/autodiff/split.ts): B = recompute + inputGrad
//   (+ the loss on the last rank), W = weightGrad, each with its own runSeconds; on a GPU the stash B
//   hands to W crosses the host link twice. The schedule simulation places W in the bubbles.
// Memory of rank r (bytes), W = frozen bytes as stored (4-bit codes+scales, fp32/bf16/fp16), P trainable params:
//   frozen weights   W · (forwardSessionCopies + loaderCopies) + backward session: W_recompute-only ·
//                    backwardRecomputeCopies + W_crossed · backwardCrossCopies; the embedding table
//                    embeddingCopies per session                                  (plan/runtime.ts)
//   trainable        4 · P_ever  (every tensor the rank trains in any stage, float32 in JS)
//   gradients        4 · P_stage · (2 when micro-batches > 1: ORT's output + the accumulation buffer)
//   AdamW state      8 · P_moments (two float32 moments of every tensor trained so far)
//   activations      in-flight inputs · batch·seq·hidden·4 + backwardArenaFactor·(saved + gradient transients)
//                    + forwardWorkingValues · largest forward value
//                    + ZB-H1: the stash of each micro-batch whose W is deferred (rank r defers r)
//                    + stashPrefix: a frame per in-flight micro-batch; no prefix weights in the backward session
//                    + keepActivations (below the head): the saved values of the backward's blocks per
//                      in-flight micro-batch, and the backward without their recompute
//   teacher          no weights (it reads the student's frozen buffers): forwardWorkingValues · its largest
//                    value, and on the head the in-flight teacher hidden states (its logits: headCosts)
//   runtime          processBytes + uncollected outputs, min(collectorSlackBytes, M · (4 · P_stage + 2 · frame))
//                    (CPU; on a GPU that is host memory), or deviceRuntimeBytes (GPU)
// On a GPU, AdamW state, the JS copies and in-flight inputs live in host memory (reported apart).
import { layerParamSpecs } from '../model/llama/param-specs.ts';
import { quantized4Bytes } from '../model/quant/quant4.ts';
import type { DeviceProfile, Phase } from './devices.ts';
import type { OpCost } from './graph-cost.ts';
import { BYTES, RUNTIME, type RuntimeFactors } from './runtime.ts';
import { blockCosts, embedCosts, headCosts, teacherUnits, type BlockState, type PhaseCosts, type TeacherUnits } from './unit-costs.ts';

export type { MemoryBreakdown, RankEstimate, RunBasics, RunShape } from './stage-types.ts';
import type { MemoryBreakdown, RankEstimate, RunShape } from './stage-types.ts';

type Trains = 'none' | 'block' | 'lora';

interface Table {
  fwd: Float64Array;
  bwd: Float64Array;
  /** The weight-gradient share of bwd, and the ZB-H1 stash bytes. */
  wgt: Float64Array;
  stash: Float64Array;
  saved: Float64Array;
  /** The recompute share of bwd (keepActivations drops it on ranks below the head). */
  rec: Float64Array;
  gradPeak: Float64Array;
  peakValue: Float64Array;
  recomputeOnly: Float64Array;
  /** Prefix sums of stage, ever-trainable and moment params, frozen and 4-bit bytes. */
  params: Float64Array[];
}

interface Layer {
  trains: Trains;
  lora: string[];
  frozenBytes: number;
  /** Float32 bytes of the quantized tensors' loader copies (transient) vs kept 4-bit codes. */
  quantizedBytes: number;
  stageParams: number;
  everParams: number;
  momentParams: number;
}

const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);

/** T(c) = (flops/peak + (bytes − mathBytes)/bandwidth + mathBytes/mathBandwidth)/eff + nodes·opSeconds. */
export function phaseSeconds(device: DeviceProfile, phase: Phase, c: OpCost): number {
  return atPeakSeconds(device, c) / device.efficiency[phase] + c.nodes * device.opSeconds;
}

/** Seconds of `c` at the device's peaks (no efficiency, no per-op cost). */
export function atPeakSeconds(d: Pick<DeviceProfile, 'matmulFlops' | 'bandwidth' | 'mathBandwidth'>, c: OpCost): number {
  return c.flops / d.matmulFlops + (c.bytes - c.mathBytes) / d.bandwidth + c.mathBytes / d.mathBandwidth;
}
const LORA = /^(.*)\.lora_([AB])\.weight$/;

export class StageModel {
  readonly layers: Layer[];
  readonly lowest: number;
  readonly rt: RuntimeFactors;
  private readonly embed: { frozenBytes: number; stageParams: number; everParams: number; momentParams: number; trains: boolean };
  private readonly head: { frozenBytes: number; stageParams: number; everParams: number; momentParams: number; trains: boolean };
  private readonly blockCache = new Map<string, PhaseCosts>();
  private readonly dims: { batch: number; seq: number };

  constructor(readonly s: RunShape) {
    this.rt = s.runtime ?? { ...RUNTIME };
    this.dims = { batch: s.batch, seq: s.seq };
    const stage = new Set(s.trainable);
    const ever = new Set(s.everTrainable);
    const moments = new Set(s.trainedSoFar);
    const c = s.config;
    const shape = (name: string): number[] => {
      const m = LORA.exec(name);
      if (!m) throw new Error(`no shape for ${name}`);
      const w = layerParamSpecs(c, Number(/layers\.(\d+)\./.exec(name)![1])).find((p) => p.name === `${m[1]}.weight`)!;
      return m[2] === 'A' ? [s.loraRank, w.shape[1]] : [w.shape[0], s.loraRank];
    };
    const lorasOf = new Map<number, string[]>();
    for (const l of s.loraLinears) {
      const m = /^model\.layers\.(\d+)\.(.*)$/.exec(l)!;
      lorasOf.set(Number(m[1]), [...(lorasOf.get(Number(m[1])) ?? []), m[2]]);
    }
    const account = (names: { name: string; shape: number[]; linear: boolean }[]) => {
      const a = { frozenBytes: 0, quantizedBytes: 0, stageParams: 0, everParams: 0, momentParams: 0, trainsAny: false, trainsLora: false, trainsBlock: false };
      for (const t of names) {
        const n = t.shape.reduce((x, y) => x * y, 1);
        const isLora = LORA.test(t.name);
        if (stage.has(t.name)) {
          a.stageParams += n;
          a.trainsAny = true;
          if (isLora) a.trainsLora = true;
          else a.trainsBlock = true;
        } else if (ever.has(t.name) || isLora) a.frozenBytes += 4 * n; // kept float32: it trains some time
        else if (t.linear && s.quantBlockSize) a.quantizedBytes += quantized4Bytes(t.shape[0], t.shape[1], { blockSize: s.quantBlockSize });
        else a.frozenBytes += BYTES[s.frozenDtype] * n;
        if (ever.has(t.name)) a.everParams += n;
        if (moments.has(t.name)) a.momentParams += n;
      }
      return a;
    };
    this.layers = Array.from({ length: c.numLayers }, (_, i) => {
      const lora = lorasOf.get(i) ?? [];
      const tensors = [
        ...layerParamSpecs(c, i).map((p) => ({ name: p.name, shape: p.shape, linear: p.kind === 'linear_weight' })),
        ...lora.flatMap((m) => ['A', 'B'].map((ab) => `model.layers.${i}.${m}.lora_${ab}.weight`)).map((name) => ({ name, shape: shape(name), linear: false })),
      ];
      const a = account(tensors);
      const trains: Trains = a.trainsBlock ? 'block' : a.trainsLora ? 'lora' : 'none';
      return { trains, lora, frozenBytes: a.frozenBytes, quantizedBytes: a.quantizedBytes, stageParams: a.stageParams, everParams: a.everParams, momentParams: a.momentParams };
    });
    const table = [c.vocabSize, c.hiddenSize];
    const e = account([{ name: 'model.embed_tokens.weight', shape: table, linear: false }]);
    this.embed = { ...e, trains: e.trainsAny };
    const h = account([{ name: 'model.norm.weight', shape: [c.hiddenSize], linear: false }, ...(c.tieWordEmbeddings ? [] : [{ name: 'lm_head.weight', shape: table, linear: false }])]);
    this.head = { ...h, trains: h.trainsAny };
    const first = this.layers.findIndex((l) => l.trains !== 'none');
    this.lowest = this.embed.trains ? -1 : first >= 0 ? first : this.head.trains ? c.numLayers : Infinity;
  }

  /** Does a rank whose range ends at `end` (exclusive) run backward? (It or a rank below trains.) */
  runsBackward(end: number, head: boolean): boolean {
    return this.lowest < end || (head && this.lowest !== Infinity);
  }

  blockState(i: number): BlockState {
    if (i < this.lowest) return 'forward';
    const l = this.layers[i];
    if (l.trains === 'none') return 'cross';
    return i === this.lowest ? 'train-bottom' : 'train';
  }

  /** `forwardKernels`: forward-only blocks run ONNX Runtime's fused attention (CPU graphs; plan/unit-costs.ts). */
  block(i: number, backwardRank: boolean, forwardKernels = false): PhaseCosts {
    const state = backwardRank ? this.blockState(i) : 'forward';
    const l = this.layers[i];
    const key = `${state}|${l.trains}|${l.lora.join(',')}|${forwardKernels}`;
    let c = this.blockCache.get(key);
    if (!c) {
      c = blockCosts(this.s.config, { state, lora: l.lora, trains: l.trains === 'lora' ? 'lora' : 'block' }, this.s.loraRank, this.dims, forwardKernels);
      this.blockCache.set(key, c);
    }
    return c;
  }

  private memo = new Map<string, unknown>();
  private once<T>(key: string, f: () => T): T {
    if (!this.memo.has(key)) this.memo.set(key, f());
    return this.memo.get(key) as T;
  }

  headCosts(): PhaseCosts {
    return this.once('head', () => headCosts(this.s.config, { trains: this.head.trains, distill: this.s.distill, inputGrad: this.lowest < this.s.config.numLayers }, this.dims));
  }

  embedCosts(): PhaseCosts {
    return this.once('embed', () => embedCosts(this.s.config, this.embed.trains, this.dims));
  }

  teacher(forwardKernels: boolean): TeacherUnits {
    return this.once(`teacher|${forwardKernels}`, () => teacherUnits(this.s.base, this.dims, forwardKernels));
  }

  private readonly times = new WeakMap<DeviceProfile, Map<PhaseCosts, { forward: number; backward: number; weight: number }>>();

  /** Seconds of a unit's forward run and of its share of the backward run, on `device`. */
  private unitSeconds(device: DeviceProfile, u: PhaseCosts): { forward: number; backward: number; weight: number } {
    let m = this.times.get(device);
    if (!m) this.times.set(device, (m = new Map()));
    let t = m.get(u);
    if (!t) {
      const weight = phaseSeconds(device, 'weightGrad', u.weightGrad);
      t = { forward: phaseSeconds(device, 'forward', u.forward), backward: phaseSeconds(device, 'recompute', u.recompute) + phaseSeconds(device, 'inputGrad', u.inputGrad) + weight, weight };
      m.set(u, t);
    }
    return t;
  }

  /**
   * Per-layer figures as prefix sums, per device and per kind of rank (one that runs backward or not):
   * the planner prices O(workers · layers²) ranges, each in O(range) without allocating.
   */
  private tables = new WeakMap<DeviceProfile, Table[]>();
  private table(device: DeviceProfile, backward: boolean): Table {
    let pair = this.tables.get(device);
    if (!pair) this.tables.set(device, (pair = []));
    const k = backward ? 1 : 0;
    if (pair[k]) return pair[k];
    const L = this.layers.length;
    const t: Table = { fwd: new Float64Array(L + 1), bwd: new Float64Array(L + 1), wgt: new Float64Array(L + 1), stash: new Float64Array(L + 1), saved: new Float64Array(L + 1), rec: new Float64Array(L + 1), gradPeak: new Float64Array(L), peakValue: new Float64Array(L), recomputeOnly: new Float64Array(L + 1), params: [0, 1, 2, 3, 4].map(() => new Float64Array(L + 1)) };
    for (let i = 0; i < L; i++) {
      const u = this.block(i, backward, device.kind === 'cpu');
      const sec = this.unitSeconds(device, u);
      const l = this.layers[i];
      t.fwd[i + 1] = t.fwd[i] + sec.forward;
      t.bwd[i + 1] = t.bwd[i] + sec.backward;
      t.wgt[i + 1] = t.wgt[i] + sec.weight;
      t.stash[i + 1] = t.stash[i] + u.stashBytes;
      t.saved[i + 1] = t.saved[i] + u.savedBytes;
      t.rec[i + 1] = t.rec[i] + phaseSeconds(device, 'recompute', u.recompute);
      t.gradPeak[i] = u.gradBytes;
      t.peakValue[i] = u.peakValueBytes;
      t.recomputeOnly[i + 1] = t.recomputeOnly[i] + (this.blockState(i) === 'forward' ? l.frozenBytes + l.quantizedBytes : 0);
      [l.stageParams, l.everParams, l.momentParams, l.frozenBytes, l.quantizedBytes].forEach((v, j) => (t.params[j][i + 1] = t.params[j][i] + v));
    }
    pair[k] = t;
    return t;
  }

  /** `deferred`: micro-batches whose W waits (ZB-H1), each holding its stash. */
  rank(start: number, end: number, embed: boolean, head: boolean, inFlight: number, device: DeviceProfile, deferred = 0): RankEstimate {
    const rt = this.rt;
    const c = this.s.config;
    const backward = this.runsBackward(end, head);
    const t = this.table(device, backward);
    // No closures or arrays here: the planner calls this O(workers · layers²) times.
    const P = t.params;
    let stageParams = P[0][end] - P[0][start];
    let everParams = P[1][end] - P[1][start];
    let momentParams = P[2][end] - P[2][start];
    let frozenBytes = P[3][end] - P[3][start];
    const quantBytes = P[4][end] - P[4][start];
    let fwd = t.fwd[end] - t.fwd[start];
    let bwd = t.bwd[end] - t.bwd[start];
    let wgt = t.wgt[end] - t.wgt[start];
    let stash = t.stash[end] - t.stash[start];
    let savedSum = t.saved[end] - t.saved[start];
    // A rank whose lowest blocks only run forward backs up from the hidden state its forward kept at the
    // first trainable block: the prefix's recompute (its only backward cost) drops out.
    const prefixStash = this.s.stashPrefix !== false && !head && this.lowest > start && this.lowest < end;
    if (prefixStash) bwd -= t.bwd[this.lowest] - t.bwd[start];
    // keepActivations: a rank below the head keeps what its backward reads from its forward run, per
    // micro-batch in flight, and recomputes nothing (model/autodiff/split.ts splitForward).
    const from = Math.max(start, this.lowest);
    const keeps = this.s.keepActivations === true && backward && !head && from < end;
    const kept = keeps ? t.saved[end] - t.saved[from] : 0;
    if (keeps) bwd -= t.rec[end] - t.rec[from];
    let gradPeak = 0;
    let peakValue = 0;
    for (let i = start; i < end; i++) {
      if (t.gradPeak[i] > gradPeak) gradPeak = t.gradPeak[i];
      if (t.peakValue[i] > peakValue) peakValue = t.peakValue[i];
    }
    for (let k = 0; k < 2; k++) {
      if (!(k === 0 ? embed : head)) continue;
      const part = k === 0 ? this.embed : this.head;
      const u = k === 0 ? this.embedCosts() : this.headCosts();
      stageParams += part.stageParams;
      everParams += part.everParams;
      momentParams += part.momentParams;
      frozenBytes += part.frozenBytes;
      const sec = this.unitSeconds(device, u);
      fwd += sec.forward;
      if (!(k === 0 && prefixStash)) bwd += sec.backward;
      wgt += sec.weight;
      stash += u.stashBytes;
      savedSum += u.savedBytes;
      if (u.gradBytes > gradPeak) gradPeak = u.gradBytes;
      if (u.peakValueBytes > peakValue) peakValue = u.peakValueBytes;
    }
    const frame = this.s.batch * this.s.seq * c.hiddenSize * 4;
    const linkRate = Number.isFinite(device.hostLink) ? 1 / device.hostLink : 0;
    const sendsUp = !head;
    const sendsDown = backward && !embed && this.lowest < start;

    const runsForward = !(head && backward);
    let teacherSeconds = 0;
    if (this.s.distill && (!head || backward)) {
      const tu = this.teacher(device.kind === 'cpu');
      const originals = ((end - start) * this.s.base.numLayers) / c.numLayers;
      teacherSeconds = originals * phaseSeconds(device, 'forward', tu.block) + (embed ? phaseSeconds(device, 'forward', tu.embed) : 0);
      teacherSeconds += device.runSeconds + 2 * frame * linkRate + (sendsUp ? frame / device.peerLink : 0);
    }
    let forwardSeconds = 0;
    if (runsForward) forwardSeconds = fwd + device.runSeconds + (frame * 2 + 4 * stageParams) * linkRate + (sendsUp ? frame / device.peerLink : 0) + (head ? 0 : teacherSeconds);
    let backwardSeconds = 0;
    let backwardInputSeconds = 0;
    let backwardWeightSeconds = 0;
    if (backward) {
      backwardSeconds = bwd + device.runSeconds + (frame * 2 + 8 * stageParams) * linkRate + (sendsDown ? frame / device.peerLink : 0);
      if (head) backwardSeconds += teacherSeconds;
      // ZB-H1: W is a second run that takes the stash and yields the weight gradients.
      backwardWeightSeconds = wgt > 0 ? wgt + device.runSeconds + (2 * stash + 8 * stageParams) * linkRate : 0;
      backwardInputSeconds = backwardSeconds - wgt - 8 * stageParams * linkRate;
      // Every backward (W under ZB-H1) adds its gradients to the step's running sum in the same run
      // (program-graphs.ts ACC_PREFIX): on a GPU an Add at device bandwidth plus the sum's copy to the
      // device (all but the first micro-batch, which adds a broadcast zero); on a CPU the calibrated Add.
      const M = this.s.microBatches;
      const sumSeconds = device.kind === 'gpu' ? stageParams * (12 / device.bandwidth + (4 * linkRate * (M - 1)) / M) : stageParams * device.accumulateSecondsPerParam;
      backwardSeconds += sumSeconds;
      if (backwardWeightSeconds > 0) backwardWeightSeconds += sumSeconds;
      else backwardInputSeconds += sumSeconds;
    }

    // Memory (formulas in the header).
    // Frozen bytes of blocks the backward only recomputes (below every trainable tensor) vs those gradients cross.
    const recomputeOnly = (embed ? this.embed.frozenBytes : 0) + t.recomputeOnly[end] - t.recomputeOnly[start];
    // The embedding table is held once per session; the other frozen weights per the copy factors.
    const table = embed ? this.embed.frozenBytes : 0;
    const frozenAll = frozenBytes + quantBytes - table;
    const sessions = 1 + (backward && !prefixStash ? 1 : 0);
    const recomputed = prefixStash ? 0 : (recomputeOnly - table) * rt.backwardRecomputeCopies;
    const frozenSessions = rt.sharedWeightCopies > 0 ? (frozenAll + table) * rt.sharedWeightCopies : table * rt.embeddingCopies * sessions + frozenAll * rt.forwardSessionCopies + (backward ? recomputed + (frozenAll - recomputeOnly + table) * rt.backwardCrossCopies : 0);
    // 4-bit codes: one host buffer that every session is fed from (model/quant/quant4-store.ts). On a CPU that
    // is the copy counted above; on a GPU it stays in host memory beside the device's (as before, when
    // sessions copied them, the JS copy was kept for later graphs).
    const loaderCopies = frozenBytes * rt.loaderCopies + (device.kind === 'gpu' || rt.sharedWeightCopies === 0 ? quantBytes : 0);
    const gradients = 4 * stageParams * (this.s.microBatches > 1 ? 2 : 1);
    const inputs = (backward ? inFlight : 1) * (frame + 16 * this.s.batch * this.s.seq) + (prefixStash ? inFlight * frame : 0) + inFlight * kept;
    const arena = (backward ? rt.backwardArenaFactor * (savedSum + gradPeak) : 0) + (runsForward ? rt.forwardWorkingValues * peakValue : 0);
    // JS holds the stashes (the Node API keeps no device tensors): host memory on a GPU.
    const stashes = backward && wgt > 0 ? deferred * stash : 0;
    let teacher = 0;
    if (this.s.distill) {
      const tu = this.teacher(device.kind === 'cpu');
      teacher = rt.forwardWorkingValues * tu.blockPeakBytes + (head ? inFlight * frame : 0);
    }
    // Outputs of earlier runs not yet collected: a step's runs return each micro-batch's gradients and frames.
    const uncollected = Math.min(rt.collectorSlackBytes, this.s.microBatches * (4 * stageParams + 2 * frame));
    const gpu = device.kind === 'gpu';
    const memory: MemoryBreakdown = gpu
      ? { frozenWeights: frozenSessions, trainableWeights: 4 * stageParams, gradients: 4 * stageParams, optimizer: 0, activations: arena, teacher, runtime: device.deviceRuntimeBytes }
      : { frozenWeights: frozenSessions + loaderCopies, trainableWeights: 4 * everParams, gradients, optimizer: 8 * momentParams, activations: inputs + arena + stashes, teacher, runtime: rt.processBytes + uncollected };
    const memoryBytes = Math.ceil(sum(Object.values(memory)));
    const hostBytes = gpu ? rt.processBytes + uncollected + loaderCopies + 4 * everParams + gradients + 8 * momentParams + inputs + stashes : memoryBytes;
    // Host work per step: AdamW + sum of squares once (the micro-batches' gradient sums are in the backward).
    const optimizerSeconds = stageParams * device.optimizerSecondsPerParam;
    return { forwardSeconds, backwardSeconds, backwardInputSeconds, backwardWeightSeconds, optimizerSeconds, trainableParams: stageParams, memory, memoryBytes, hostBytes };
  }
}
