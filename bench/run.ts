// `npm run bench`: the machine's MatMul peak, then one block range's forward and forward+backward
// throughput as a fraction of it, as one JSON document on stdout (progress on stderr).
// Takes the flags of bench/block-throughput.ts.
import os from 'node:os';
import { Flags, hostInfo, info, printJson, round } from './common.ts';
import { optionsFromFlags, runBlockThroughput, shapePeakCase } from './block-throughput.ts';
import { RUN_FLAGS, SHAPE_FLAGS } from './block-shape.ts';
import { DEFAULT_CASES, measureMatmulPeak } from './matmul-peak.ts';

async function main(): Promise<void> {
  const started = performance.now();
  const loadAtStart = os.loadavg().map((x) => round(x, 2));
  const flags = new Flags(process.argv.slice(2));
  flags.check([...SHAPE_FLAGS, ...RUN_FLAGS]);
  const o = optionsFromFlags(flags);
  info(`matmul peak with ${o.threads} threads`);
  const peak = await measureMatmulPeak({ threads: o.threads, cases: [...DEFAULT_CASES, shapePeakCase(o.shape)] });
  info(`matmul peak ${peak.gflops} GFLOP/s (${peak.best_case})`);
  const blocks = await runBlockThroughput(o, peak.gflops);
  const warnings: string[] = [];
  const cpus = os.availableParallelism();
  const loadAtEnd = os.loadavg()[0];
  // This process itself adds ~threads to the load while it runs; more than that is someone else.
  if (loadAtStart[0] > 0.5 || loadAtEnd > o.threads + 0.5) {
    warnings.push(`load average ${loadAtStart[0]} at start, ${round(loadAtEnd, 2)} at end on ${cpus} CPUs: other processes competed for the cores, so peak, step times and fractions may be unreliable`);
  }
  for (const w of warnings) info(`warning: ${w}`);
  printJson({
    bench: 'propipe',
    warnings,
    host: { ...hostInfo(o.threads), load_average_at_start: loadAtStart },
    shape: blocks.shape,
    matmul_peak: peak,
    block_throughput: { flops_per_block: blocks.flops_per_block, timing: blocks.timing, modes: blocks.modes },
    wall_s: Math.round((performance.now() - started) / 100) / 10,
  });
}

main().catch((err: unknown) => {
  process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
