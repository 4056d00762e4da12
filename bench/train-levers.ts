// Each graph lever of the training step measured side by side: the backward graph of the full and the
// LLaMA Pro step (bench/train-step.ts's models) built with every lever of model/llama/kernels.ts on,
// with one lever off at a time, and with all off (the graphs before the levers), compiled into one
// process and run round-robin, so that every variant sees the same load. Reported per variant: median
// and fastest ms of one backward run (it computes the forward, the loss and every gradient), and what
// turning the lever off costs against all on.
//
//   npx tsx bench/train-levers.ts [shape flags of bench/train-step.ts] [--reps 5]
import ort from 'onnxruntime-node';
import { serialize } from '../model/graph/serialize.ts';
import { ortSessionOptions } from '../model/graph/session.ts';
import { KERNEL_LEVERS, withKernelChoices, type KernelChoices } from '../model/graph/kernels.ts';
import { wholeModel } from '../model/llama/range-graph.ts';
import { Flags, hostInfo, info, isMain, median, printJson, round } from './common.ts';
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

async function main(): Promise<void> {
  const flags = new Flags(process.argv.slice(2));
  flags.check([...TRAIN_SHAPE_FLAGS, ...TRAIN_RUN_FLAGS]);
  const o = trainOptionsFromFlags(flags);
  const out: Record<string, LeverVariant[]> = {};
  for (const mode of ['full', 'llamapro'] as const) {
    info(`levers: ${mode}`);
    out[mode] = await measureLevers(o, mode);
  }
  printJson({ bench: 'propipe-train-levers', host: hostInfo(o.threads), shape: o.shape, levers: out });
}

if (isMain(import.meta.url)) {
  main().catch((err: unknown) => {
    process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  });
}
