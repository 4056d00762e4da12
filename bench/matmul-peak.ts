// The machine's float32 MatMul throughput as onnxruntime-node delivers it: the yardstick the block
// benchmark divides by. Each case is one graph holding a chain of `depth` GEMMs
// X[m,k]·W0[k,n]·W1[n,k]·W2[k,n]…, so one run does depth·2·m·n·k FLOPs and the host copy of X and of
// the result is amortized over several GEMMs. Weights are initializers (ORT prepacks them, as it does
// frozen block weights) or graph inputs (as trainable block weights are).
//
//   npx tsx bench/matmul-peak.ts [--threads N] [--reps N] [--warmup N]
import { Graph } from '../model/graph/graph.ts';
import { CompiledGraph } from '../model/graph/session.ts';
import { type HostTensor } from '../model/graph/dtype.ts';
import { defaultThreads, Flags, hostInfo, info, isMain, median, printJson, Rng, round, timeRuns } from './common.ts';

export interface MatmulCase {
  name: string;
  m: number;
  k: number;
  n: number;
  /** GEMMs per run, alternating [k,n] and [n,k] weights. */
  depth: number;
  weights: 'initializer' | 'input';
}

export interface MatmulCaseResult extends MatmulCase {
  gflop_per_run: number;
  best_ms: number;
  median_ms: number;
  /** From the best run. */
  gflops: number;
}

export interface MatmulPeak {
  /** Best GFLOP/s over all cases: the denominator of `fraction_of_matmul_peak`. */
  gflops: number;
  best_case: string;
  cases: MatmulCaseResult[];
}

export interface MatmulPeakOptions {
  threads: number;
  warmup?: number;
  reps?: number;
  cases?: readonly MatmulCase[];
}

export const DEFAULT_CASES: readonly MatmulCase[] = [
  { name: 'square_512', m: 512, k: 512, n: 512, depth: 8, weights: 'initializer' },
  { name: 'square_1024', m: 1024, k: 1024, n: 1024, depth: 4, weights: 'initializer' },
  { name: 'square_2048', m: 2048, k: 2048, n: 2048, depth: 1, weights: 'initializer' },
  { name: 'llama_mlp_4096x512x1376', m: 4096, k: 512, n: 1376, depth: 4, weights: 'initializer' },
  { name: 'llama_mlp_4096x512x1376_weights_as_inputs', m: 4096, k: 512, n: 1376, depth: 4, weights: 'input' },
];

export function gemmFlops(m: number, k: number, n: number): number {
  return 2 * m * k * n;
}

async function measureCase(c: MatmulCase, threads: number, warmup: number, reps: number, rng: Rng): Promise<MatmulCaseResult> {
  const g = new Graph(`matmul_${c.name}`);
  let x = g.input('x', 'float32', [c.m, c.k]);
  const feeds: Record<string, HostTensor> = { x: { dtype: 'float32', shape: [c.m, c.k], data: rng.uniformArray(c.m * c.k, 1) } };
  for (let i = 0; i < c.depth; i++) {
    const [rows, cols] = i % 2 === 0 ? [c.k, c.n] : [c.n, c.k];
    // std 1/√rows keeps activations O(1) down the chain: no overflow, no denormals.
    const data = rng.uniformArray(rows * cols, 1 / Math.sqrt(rows));
    const name = `w${i}`;
    let w: string;
    if (c.weights === 'initializer') w = g.initializer(name, 'float32', [rows, cols], data);
    else {
      w = g.input(name, 'float32', [rows, cols]);
      feeds[name] = { dtype: 'float32', shape: [rows, cols], data };
    }
    x = g.op('MatMul', [x, w]);
  }
  g.output(g.rename(x, 'y'));
  const compiled = await CompiledGraph.create(g, { threads });
  try {
    const times = await timeRuns(() => compiled.run(feeds), warmup, reps);
    const gflop = (c.depth * gemmFlops(c.m, c.k, c.n)) / 1e9;
    const best = Math.min(...times);
    return { ...c, gflop_per_run: round(gflop), best_ms: round(best), median_ms: round(median(times)), gflops: round(gflop / (best / 1e3), 1) };
  } finally {
    await compiled.release();
  }
}

/** Every case, and the best GFLOP/s among them. */
export async function measureMatmulPeak(o: MatmulPeakOptions): Promise<MatmulPeak> {
  const rng = new Rng(1234);
  const results: MatmulCaseResult[] = [];
  for (const c of o.cases ?? DEFAULT_CASES) {
    const r = await measureCase(c, o.threads, o.warmup ?? 3, o.reps ?? 10, rng);
    info(`matmul ${c.name} (${c.m}x${c.k}x${c.n} x${c.depth}, weights as ${c.weights}): ${r.gflops} GFLOP/s, best ${r.best_ms} ms`);
    results.push(r);
  }
  const best = results.reduce((a, b) => (b.gflops > a.gflops ? b : a));
  return { gflops: best.gflops, best_case: best.name, cases: results };
}

/** The machine's measured float32 MatMul throughput through onnxruntime-node, in GFLOP/s. */
export async function matmulPeakGflops(o: MatmulPeakOptions): Promise<number> {
  return (await measureMatmulPeak(o)).gflops;
}

async function main(): Promise<void> {
  const flags = new Flags(process.argv.slice(2));
  flags.check(['threads', 'reps', 'warmup']);
  const threads = flags.int('threads', defaultThreads());
  const peak = await measureMatmulPeak({ threads, reps: flags.int('reps', 10), warmup: flags.int('warmup', 3) });
  printJson({ bench: 'matmul-peak', host: hostInfo(threads), matmul_peak: peak });
}

if (isMain(import.meta.url)) {
  main().catch((err: unknown) => {
    process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  });
}
