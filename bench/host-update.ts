// The host side of a training step — the global gradient norm and AdamW over every trainable tensor
// of the full fine-tune — with the JS loops and with the WebAssembly kernel (model/train/adamw-wasm.ts),
// round-robin in one process. CPU time of this process per update (the machine is shared; CPU time
// moves much less with other load than wall time), and that per parameter.
//
//   npx tsx bench/host-update.ts [--reps 8] [shape flags of bench/train-step.ts]
import { paramSpecs } from '../model/llama/param-specs.ts';
import { AdamW } from '../model/train/adamw.ts';
import { Flags, hostInfo, info, isMain, median, printJson, Rng, round } from './common.ts';
import { trainConfig, trainOptionsFromFlags, TRAIN_SHAPE_FLAGS, type TrainShape } from './train-step.ts';

export interface HostUpdateResult {
  params: number;
  tensors: number;
  reps: number;
  /** Median CPU ms per step of each part, and ns per parameter of norm + update. */
  js: { norm_ms: number; adamw_ms: number; ns_per_param: number };
  wasm: { norm_ms: number; adamw_ms: number; ns_per_param: number };
  speedup: number;
}

const cpuMs = () => {
  const c = process.cpuUsage();
  return (c.user + c.system) / 1e3;
};

export function measureHostUpdate(shape: TrainShape, reps: number): HostUpdateResult {
  const specs = paramSpecs(trainConfig(shape));
  const rng = new Rng(7);
  const grads = specs.map((s) => rng.uniformArray(s.shape.reduce((a, b) => a * b, 1), 1e-3));
  const opts = { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01 };
  const sides = (['js', 'wasm'] as const).map((kernel) => ({ kernel, opt: new AdamW({ ...opts, kernel }), params: grads.map((g) => rng.uniformArray(g.length, 0.02)), norm: [] as number[], adamw: [] as number[] }));
  for (let rep = 0; rep < reps + 1; rep++) {
    for (const s of sides) {
      const t0 = cpuMs();
      const scale = Math.min(1, 1 / Math.sqrt(s.opt.gradSumOfSquares(grads)));
      const t1 = cpuMs();
      specs.forEach((spec, i) => s.opt.update(spec.name, s.params[i], grads[i], 1e-4, scale));
      const t2 = cpuMs();
      // The first update allocates the moments: not timed.
      if (rep === 0) continue;
      s.norm.push(t1 - t0);
      s.adamw.push(t2 - t1);
    }
  }
  const params = grads.reduce((a, g) => a + g.length, 0);
  const [js, wasm] = sides.map((s) => ({ norm_ms: round(median(s.norm)), adamw_ms: round(median(s.adamw)), ns_per_param: round(((median(s.norm) + median(s.adamw)) * 1e6) / params, 2) }));
  return { params, tensors: specs.length, reps, js, wasm, speedup: round(js.ns_per_param / wasm.ns_per_param, 2) };
}

async function main(): Promise<void> {
  const flags = new Flags(process.argv.slice(2));
  flags.check([...TRAIN_SHAPE_FLAGS, 'reps']);
  const o = trainOptionsFromFlags(flags);
  info('host update: JS loop against the WebAssembly kernel, round-robin');
  printJson({ bench: 'propipe-host-update', host: hostInfo(1), shape: o.shape, host_update: measureHostUpdate(o.shape, flags.int('reps', 8)) });
}

if (isMain(import.meta.url)) {
  main().catch((err: unknown) => {
    process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  });
}
