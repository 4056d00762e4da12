// Tokens/s of a full training step (forward, backward, global clipping, AdamW) of a whole Llama model,
// run with the same machinery as the trainer (local/trainer.ts): RangeProgram.backward with
// lossScale 1/targets, the gradient copy the trainer's accumulation makes, sumOfSquares + clipScale,
// then AdamW.update for every trainable tensor. Modes:
//   full            every parameter trainable, one whole-model program
//   llamapro_whole  the L-block stack is a LLaMA Pro expansion of L-P original blocks (P new blocks
//                   interleaved by planExpansion); only the new blocks' tensors train. One whole-model
//                   program: its backward graph also runs the frozen prefix's forward (the trainer runs
//                   no separate forward: the backward graph returns the loss), but no backward for it
//   llamapro_split  the same model as two programs chained by activations: the frozen prefix
//                   [0, lowest new) as a forward-only range (no backward graph), and [lowest new, L)
//                   with the head, backward for the new blocks' weights only. The same MatMul work as
//                   llamapro_whole in one process; what differs is one more session run and hand-off
// Per mode: median ms/step and tokens/s (tokens = batch·seq), and a breakdown of the step (prefix
// forward, the backward run, gradient copy, clipping, AdamW). With --profile (default on) the main
// backward graph is also run in a raw ORT session under the profiler, which separates ORT's own run
// time (kernels) from what crossing the Node binding costs (wrapping feeds, copying fetches to JS).
//
//   npx tsx bench/train-step.ts [--layers 8 --hidden 256 --heads 8 --kv-heads 4 --intermediate 688
//     --vocab 4096 --seq 128 --batch 8 --new-blocks 2 --threads 2 --warmup 2 --reps 5 --seed 1
//     --modes full,llamapro_whole,llamapro_split --no-profile]
import { parseConfig, type ModelConfig } from '../model/hf/config.ts';
import { expandConfig, expandedLoader, newLayerIndices, planExpansion } from '../model/expand/expand.ts';
import { randomWeights } from '../model/hf/init.ts';
import { ParamBinder } from '../model/llama/params.ts';
import { type Batch } from '../model/llama/program.ts';
import { buildRangeGraph, type BlockRange } from '../model/llama/range-graph.ts';
import { layerParamSpecs, paramSpecs } from '../model/llama/param-specs.ts';
import { realStep } from './real-step.ts';
import { defaultThreads, Flags, hostInfo, info, isMain, median, printJson, Rng, round } from './common.ts';
import { type BackwardProfile, backwardGraph, graphMatmulFlops, profileBackward } from './train-step-profile.ts';

export interface TrainShape {
  layers: number;
  hidden: number;
  heads: number;
  kvHeads: number;
  intermediate: number;
  vocab: number;
  seq: number;
  batch: number;
}

export const DEFAULT_TRAIN_SHAPE: TrainShape = { layers: 8, hidden: 256, heads: 8, kvHeads: 4, intermediate: 688, vocab: 4096, seq: 128, batch: 8 };
export const TRAIN_MODES = ['full', 'llamapro_whole', 'llamapro_split'] as const;
export type TrainMode = (typeof TRAIN_MODES)[number];

export const TRAIN_SHAPE_FLAGS = ['layers', 'hidden', 'heads', 'kv-heads', 'intermediate', 'vocab', 'seq', 'batch', 'new-blocks'] as const;
export const TRAIN_RUN_FLAGS = ['threads', 'warmup', 'reps', 'seed', 'profile'] as const;

export interface TrainStepOptions {
  shape: TrainShape;
  /** New blocks of the LLaMA Pro modes; the stack has shape.layers − newBlocks original blocks. */
  newBlocks: number;
  threads: number;
  warmup: number;
  reps: number;
  seed: number;
  modes: readonly TrainMode[];
  profile: boolean;
}

/**
 * Removes a string-valued `--name value` / `--name=value` from argv (Flags in common.ts reads numbers
 * and booleans only) and returns its value and the remaining arguments.
 */
export function takeStringFlag(argv: readonly string[], name: string): { value: string | undefined; rest: string[] } {
  const rest: string[] = [];
  let value: string | undefined;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === `--${name}`) {
      value = argv[++i];
      if (value === undefined) throw new Error(`--${name} needs a value`);
    } else if (a.startsWith(`--${name}=`)) value = a.slice(name.length + 3);
    else rest.push(a);
  }
  return { value, rest };
}

export function trainOptionsFromFlags(f: Flags, modesFlag?: string): TrainStepOptions {
  const d = DEFAULT_TRAIN_SHAPE;
  const modes = modesFlag ? modesFlag.split(',').map((m) => m.trim()) : [...TRAIN_MODES];
  for (const m of modes) if (!(TRAIN_MODES as readonly string[]).includes(m)) throw new Error(`--modes: '${m}' is not one of ${TRAIN_MODES.join(', ')}`);
  return {
    shape: {
      layers: f.int('layers', d.layers),
      hidden: f.int('hidden', d.hidden),
      heads: f.int('heads', d.heads),
      kvHeads: f.int('kv-heads', d.kvHeads),
      intermediate: f.int('intermediate', d.intermediate),
      vocab: f.int('vocab', d.vocab),
      seq: f.int('seq', d.seq),
      batch: f.int('batch', d.batch),
    },
    newBlocks: f.int('new-blocks', 2),
    threads: f.int('threads', Math.min(2, defaultThreads())),
    warmup: f.int('warmup', 2),
    reps: f.int('reps', 5),
    seed: f.int('seed', 1),
    modes: modes as TrainMode[],
    profile: f.bool('profile', true),
  };
}

export function trainConfig(s: TrainShape, layers = s.layers): ModelConfig {
  return parseConfig(
    {
      architectures: ['LlamaForCausalLM'],
      model_type: 'llama',
      hidden_size: s.hidden,
      intermediate_size: s.intermediate,
      num_hidden_layers: layers,
      num_attention_heads: s.heads,
      num_key_value_heads: s.kvHeads,
      vocab_size: s.vocab,
      rms_norm_eps: 1e-5,
      rope_theta: 10000,
      max_position_embeddings: Math.max(2048, s.seq),
      tie_word_embeddings: false,
      hidden_act: 'silu',
      initializer_range: 0.02,
    },
    'bench config',
  ).config;
}

/** A model of the step's shape: its config, a loader for every tensor, and which tensors train. */
export interface BenchModel {
  config: ModelConfig;
  load: (name: string) => Float32Array;
  trainable: Set<string>;
  /** Expanded indices of the new blocks (LLaMA Pro), or null. */
  newLayers: number[] | null;
}

function weightsMap(config: ModelConfig, seed: number): Map<string, Float32Array> {
  return new Map(randomWeights(config, seed, 0.02).map((t) => [t.name, t.data as Float32Array]));
}

export function fullModel(o: TrainStepOptions): BenchModel {
  const config = trainConfig(o.shape);
  const w = weightsMap(config, o.seed);
  return { config, load: (n) => w.get(n)!, trainable: new Set(paramSpecs(config).map((s) => s.name)), newLayers: null };
}

/** The L-block stack as the expansion of L − P random original blocks, read through expandedLoader. */
export function llamaProModel(o: TrainStepOptions): BenchModel {
  const originals = o.shape.layers - o.newBlocks;
  const base = trainConfig(o.shape, originals);
  const plan = planExpansion(originals, o.newBlocks);
  const config = expandConfig(base, plan);
  const w = weightsMap(base, o.seed);
  const load = expandedLoader((n) => w.get(n)!, plan);
  const newLayers = newLayerIndices(plan);
  const trainable = new Set(newLayers.flatMap((l) => layerParamSpecs(config, l).map((s) => s.name)));
  return { config, load, trainable, newLayers };
}

export function randomBatch(config: ModelConfig, s: TrainShape, seed: number): Batch & { targets: number } {
  const rng = new Rng(seed ^ 0x5eed);
  const n = s.batch * s.seq;
  const inputIds = new BigInt64Array(n);
  for (let i = 0; i < n; i++) inputIds[i] = BigInt(Math.floor(rng.next() * config.vocabSize));
  // Every position is a target after the shift (HF convention: labels = input_ids).
  return { batch: s.batch, seq: s.seq, inputIds, labels: inputIds.slice(), targets: s.batch * (s.seq - 1) };
}

// ---- the benchmark ----

export interface TrainModeResult {
  mode: TrainMode;
  description: string;
  trainable_params: number;
  trainable_tensors: number;
  new_layers: number[] | null;
  session_create_ms: number;
  ms_per_step: { median: number; min: number; all: number[] };
  tokens_per_s: number;
  /** CPU time of this process (every thread) per step, median: moves much less with other load than wall time. */
  cpu_ms_per_step: number;
  /**
   * MatMul GFLOP per step counted from the graphs the step runs (the backward graph computes the
   * forward once and returns the loss, so there is no separate forward run), and that over the median
   * step time: the whole step's effective rate, host work included.
   */
  matmul_gflop_per_step: number;
  effective_gflops: number;
  /** Median of each part of the step (ms). */
  breakdown_ms: { prefix_forward: number | null; backward_run: number; clip_and_adamw: number };
  loss_first_last: [number, number];
  profile?: BackwardProfile;
}

export interface TrainStepResult {
  shape: TrainShape & { head_dim: number; tokens_per_step: number; new_blocks: number };
  threads: number;
  timing: string;
  modes: TrainModeResult[];
}

const DESCRIPTIONS: Record<TrainMode, string> = {
  full: 'every parameter trainable; one whole-model RangeProgram whose backward graph computes the forward, the loss and every gradient in one run',
  llamapro_whole: 'LLaMA Pro: only the new blocks train; one whole-model RangeProgram: its backward graph runs the frozen prefix forward (no backward for it) and differentiates from the lowest new block up',
  llamapro_split: 'LLaMA Pro: frozen prefix as a forward-only RangeProgram (no backward graph), chained by activations to a RangeProgram from the lowest new block to the loss',
};

export async function runTrainStep(o: TrainStepOptions): Promise<TrainStepResult> {
  const s = o.shape;
  const results: TrainModeResult[] = [];
  for (const mode of o.modes) {
    const model = mode === 'full' ? fullModel(o) : llamaProModel(o);
    const { config } = model;
    const batch = randomBatch(config, s, o.seed);
    const load = model.load;

    info(`${mode}: building sessions (${config.numLayers} layers, ${model.trainable.size} trainable tensors, ${o.threads} threads)`);
    const t0 = performance.now();
    // The trainer's own step (rank loop, step policy, update) on the same weights as `model`.
    const base = mode === 'full' ? config : trainConfig(s, s.layers - o.newBlocks);
    const real = await realStep({ base, seed: o.seed, trainType: mode === 'full' ? 'full' : 'llamapro', newBlocks: o.newBlocks, threads: o.threads, split: mode === 'llamapro_split' });
    const mainRank = real.ranks[real.ranks.length - 1];
    const mainRange: BlockRange = mainRank.range;
    const values = new Map<string, Float32Array>();
    for (const r of real.ranks) for (const [n, v] of r.values) values.set(n, v);
    const createMs = performance.now() - t0;

    info(`${mode}: ${o.warmup} warm-up + ${o.reps} timed steps`);
    const steps: number[] = [];
    const cpu: number[] = [];
    const parts = { prefix: [] as number[], backward: [] as number[], update: [] as number[] };
    const losses: number[] = [];
    let lastHidden: Float32Array | undefined;
    const spanMs = (spans: { name: string; start: number; end: number }[], prefix: string) => spans.filter((x) => x.name.startsWith(prefix)).reduce((n, x) => n + x.end - x.start, 0);
    for (let i = 0; i < o.warmup + o.reps; i++) {
      const c0 = process.cpuUsage();
      const a = performance.now();
      const r = await real.step(i, batch);
      const f = performance.now();
      const c = process.cpuUsage(c0);
      losses.push(r.loss);
      if (i < o.warmup) continue;
      steps.push(f - a);
      cpu.push((c.user + c.system) / 1e3);
      parts.prefix.push(spanMs(r.spans, 'F'));
      parts.backward.push(spanMs(r.spans, 'B'));
      parts.update.push(r.updateMs);
    }
    const prefix = real.ranks.length > 1;
    if (prefix) lastHidden = (await real.ranks[0].program!.forward(batch, new Map())).hiddenOut;
    const med = median(steps);
    let flops = graphMatmulFlops(backwardGraph(config, mainRange, model.trainable, load).graph, s.batch, s.seq);
    if (prefix) {
      const { graph } = buildRangeGraph(config, { start: 0, end: mainRange.start, embed: true, head: false }, new ParamBinder({ trainable: new Set(), load }));
      flops += graphMatmulFlops(graph, s.batch, s.seq);
    }
    const result: TrainModeResult = {
      mode,
      description: DESCRIPTIONS[mode],
      trainable_params: [...values.values()].reduce((acc, v) => acc + v.length, 0),
      trainable_tensors: values.size,
      new_layers: model.newLayers,
      session_create_ms: round(createMs, 1),
      ms_per_step: { median: round(med), min: round(Math.min(...steps)), all: steps.map((x) => round(x, 1)) },
      tokens_per_s: round((s.batch * s.seq) / (med / 1e3), 1),
      cpu_ms_per_step: round(median(cpu)),
      matmul_gflop_per_step: round(flops / 1e9),
      effective_gflops: round(flops / 1e9 / (med / 1e3), 1),
      breakdown_ms: {
        prefix_forward: prefix ? round(median(parts.prefix)) : null,
        backward_run: round(median(parts.backward)),
        clip_and_adamw: round(median(parts.update)),
      },
      loss_first_last: [round(losses[0], 5), round(losses[losses.length - 1], 5)],
    };
    info(`${mode}: ${result.ms_per_step.median} ms/step, ${result.tokens_per_s} tokens/s`);
    await real.release();
    if (o.profile) {
      info(`${mode}: profiling the backward graph`);
      const fed = prefix ? { ...batch, hidden: lastHidden } : batch;
      result.profile = await profileBackward(config, mainRange, model.trainable, load, values, fed, o.threads);
    }
    results.push(result);
  }
  return {
    shape: { ...s, head_dim: s.hidden / s.heads, tokens_per_step: s.batch * s.seq, new_blocks: o.newBlocks },
    threads: o.threads,
    timing: `median of ${o.reps} steps after ${o.warmup} warm-up steps; a step is the trainer's own: runStep over the schedule on each rank (the prefix rank's forward, the backward run that computes forward, loss and gradients), the step policy's global-norm clip, applyUpdate (AdamW) on every trainable tensor`,
    modes: results,
  };
}

async function main(): Promise<void> {
  const started = performance.now();
  const { value: modes, rest } = takeStringFlag(process.argv.slice(2), 'modes');
  const flags = new Flags(rest);
  flags.check([...TRAIN_SHAPE_FLAGS, ...TRAIN_RUN_FLAGS]);
  const o = trainOptionsFromFlags(flags, modes);
  const r = await runTrainStep(o);
  printJson({ bench: 'propipe-train-step', host: hostInfo(o.threads), ...r, wall_s: round((performance.now() - started) / 1000, 1) });
}

if (isMain(import.meta.url)) {
  main().catch((err: unknown) => {
    process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  });
}
