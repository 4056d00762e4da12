// Each graph lever of the training step measured side by side: the backward graph of the full and the
// LLaMA Pro step (bench/train-step.ts's models) built with every lever of model/llama/kernels.ts on,
// with one lever off at a time, and with all off (the graphs before the levers), compiled into one
// process and run round-robin, so that every variant sees the same load. Reported per variant: median
// and fastest ms of one backward run (it computes the forward, the loss and every gradient), and what
// turning the lever off costs against all on.
//
//   npx tsx bench/train-levers.ts [shape flags of bench/train-step.ts] [--reps 5]
import ort from 'onnxruntime-node';
import { splitBackward } from '../model/autodiff/split.ts';
import type { Graph } from '../model/graph/graph.ts';
import { serialize } from '../model/graph/serialize.ts';
import { ortSessionOptions } from '../model/graph/session.ts';
import { KERNEL_LEVERS, withKernelChoices, type KernelChoices } from '../model/graph/kernels.ts';
import { wholeModel } from '../model/llama/range-graph.ts';
import { Flags, hostInfo, info, isMain, median, printJson, Rng, round } from './common.ts';
import { fullModel, llamaProModel, randomBatch, trainOptionsFromFlags, TRAIN_RUN_FLAGS, TRAIN_SHAPE_FLAGS, type TrainStepOptions } from './train-step.ts';
import { backwardFeeds, backwardGraph } from './train-step-profile.ts';

export interface LeverVariant {
  variant: string;
  median_ms: number;
  min_ms: number;
  /**
   * CPU time of this process (all ORT threads) per run, median: on a shared machine it moves far less
   * with other load than wall time does.
   */
  cpu_median_ms: number;
  /** Median of this variant over median with every lever on: what turning levers off costs. */
  over_all_on: number;
  /** The same from CPU time. */
  cpu_over_all_on: number;
}

function variants(): [string, Partial<KernelChoices>][] {
  const off = Object.fromEntries(KERNEL_LEVERS.map((l) => [l, false])) as Partial<KernelChoices>;
  return [['all_on', {}], ...KERNEL_LEVERS.map((l): [string, Partial<KernelChoices>] => [`${l}_off`, { [l]: false }]), ['all_off', off]];
}

export async function measureLevers(o: TrainStepOptions, mode: 'full' | 'llamapro'): Promise<LeverVariant[]> {
  const model = mode === 'full' ? fullModel(o) : llamaProModel(o);
  const range = wholeModel(model.config);
  const batch = randomBatch(model.config, o.shape, o.seed);
  const params = new Map([...model.trainable].map((n) => [n, model.load(n)]));
  const runs: { name: string; run: () => Promise<unknown>; release: () => Promise<void>; ms: number[]; cpu: number[] }[] = [];
  for (const [name, choices] of variants()) {
    const built = withKernelChoices(choices, () => backwardGraph(model.config, range, model.trainable, model.load));
    const { bytes, externalData } = serialize(built.graph);
    const session = await ort.InferenceSession.create(bytes, { ...ortSessionOptions({ threads: o.threads }), externalData });
    const feeds = backwardFeeds(session.inputNames, model.config, range, built, params, batch);
    runs.push({ name, run: () => session.run(feeds), release: () => session.release(), ms: [], cpu: [] });
  }
  try {
    for (let rep = 0; rep < o.warmup + o.reps; rep++) {
      for (const r of runs) {
        const c0 = process.cpuUsage();
        const t0 = performance.now();
        await r.run();
        if (rep < o.warmup) continue;
        r.ms.push(performance.now() - t0);
        const c = process.cpuUsage(c0);
        r.cpu.push((c.user + c.system) / 1e3);
      }
    }
  } finally {
    for (const r of runs) await r.release();
  }
  const base = median(runs[0].ms);
  const cpuBase = median(runs[0].cpu);
  return runs.map((r) => ({ variant: r.name, median_ms: round(median(r.ms)), min_ms: round(Math.min(...r.ms)), cpu_median_ms: round(median(r.cpu)), over_all_on: round(median(r.ms) / base, 3), cpu_over_all_on: round(median(r.cpu) / cpuBase, 3) }));
}

export interface SplitCost {
  one_graph_ms: number;
  b_ms: number;
  w_ms: number;
  /** (B + W) over the one-graph backward, wall and CPU time (medians). */
  split_over_one: number;
  cpu_split_over_one: number;
  stash_tensors: number;
  stash_mb: number;
}

/**
 * ZB-H1's split (model/autodiff/split.ts) of a last rank's backward graph (full fine-tune): B (loss and
 * input gradient) then W (weight gradients, fed B's stash), against the one graph, round-robin in one
 * process.
 */
export async function measureSplitCost(o: TrainStepOptions): Promise<SplitCost> {
  const model = fullModel(o);
  // The last rank of a two-rank pipeline: the upper half of the blocks and the head, with the input
  // gradient the rank below waits for (rank 0 has none: its B would be the forward alone).
  const L = model.config.numLayers;
  const range = { start: L / 2, end: L, embed: false, head: true };
  const rng = new Rng(o.seed);
  const batch = { ...randomBatch(model.config, o.shape, o.seed), hidden: rng.uniformArray(o.shape.batch * o.shape.seq * model.config.hiddenSize, 1) };
  const params = new Map([...model.trainable].map((n) => [n, model.load(n)]));
  const built = backwardGraph(model.config, range, model.trainable, model.load, true);
  const grads = built.graph.outputs.filter((n) => n.startsWith('grad.') && n !== 'grad.hidden_in');
  const parts = splitBackward(built.graph, built.graph.outputs.filter((n) => !grads.includes(n)), grads);
  const session = async (g: Graph) => {
    const { bytes, externalData } = serialize(g);
    const s = await ort.InferenceSession.create(bytes, { ...ortSessionOptions({ threads: o.threads }), externalData });
    return { s, feeds: backwardFeeds(s.inputNames.filter((n) => !parts.stash.includes(n)), model.config, range, built, params, batch) };
  };
  const one = await session(built.graph);
  const b = await session(parts.b!);
  const w = await session(parts.w!);
  const t = { one: [] as number[], b: [] as number[], w: [] as number[], cpuOne: [] as number[], cpuSplit: [] as number[] };
  let stashBytes = 0;
  try {
    for (let rep = 0; rep < o.warmup + o.reps; rep++) {
      let c0 = process.cpuUsage();
      let t0 = performance.now();
      await one.s.run(one.feeds);
      const oneMs = performance.now() - t0;
      let c = process.cpuUsage(c0);
      const cpuOne = (c.user + c.system) / 1e3;
      c0 = process.cpuUsage();
      t0 = performance.now();
      const out = await b.s.run(b.feeds);
      const t1 = performance.now();
      const stash = Object.fromEntries(parts.stash.map((n) => [n, out[n]]));
      await w.s.run({ ...w.feeds, ...stash });
      const t2 = performance.now();
      c = process.cpuUsage(c0);
      if (rep < o.warmup) continue;
      stashBytes = Object.values(stash).reduce((n, x) => n + (x.data as ArrayBufferView).byteLength, 0);
      t.one.push(oneMs);
      t.b.push(t1 - t0);
      t.w.push(t2 - t1);
      t.cpuOne.push(cpuOne);
      t.cpuSplit.push((c.user + c.system) / 1e3);
    }
  } finally {
    for (const x of [one, b, w]) await x.s.release();
  }
  const m = (xs: number[]) => round(median(xs));
  return {
    one_graph_ms: m(t.one),
    b_ms: m(t.b),
    w_ms: m(t.w),
    split_over_one: round((median(t.b) + median(t.w)) / median(t.one), 3),
    cpu_split_over_one: round(median(t.cpuSplit) / median(t.cpuOne), 3),
    stash_tensors: parts.stash.length,
    stash_mb: round(stashBytes / 2 ** 20, 1),
  };
}

async function main(): Promise<void> {
  const flags = new Flags(process.argv.slice(2));
  flags.check([...TRAIN_SHAPE_FLAGS, ...TRAIN_RUN_FLAGS]);
  const o = trainOptionsFromFlags(flags);
  const out: Record<string, LeverVariant[]> = {};
  for (const mode of ['full', 'llamapro'] as const) {
    info(`levers: ${mode}`);
    out[mode] = await measureLevers(o, mode);
  }
  info('levers: ZB-H1 split cost');
  const split = await measureSplitCost(o);
  printJson({ bench: 'propipe-train-levers', host: hostInfo(o.threads), shape: o.shape, levers: out, zb1_split: split });
}

if (isMain(import.meta.url)) {
  main().catch((err: unknown) => {
    process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  });
}
