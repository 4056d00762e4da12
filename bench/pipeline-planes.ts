// The two data planes in a real job: the large model of bench/pipeline-overlap.ts (hidden 512, 16 + 4
// LLaMA Pro blocks), 1F1B at P = 2, M = 8, launched as `propipe launch` runs it (mutual TLS, token),
// once with the socket data plane and once with the gRPC peer stream, alternately so drifting load on
// the shared machine hits both alike. Reports each rank's time blocked in sends as a share of the
// step, the frame latency, the bubble and tokens/s.
//
//   npm run bench:pipeline-planes -- [--steps 5] [--repeats 1] [--batch 1]
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Flags, isMain } from './common.ts';
import { largeJob, LARGE_MODEL, summary } from './pipeline-overlap.ts';
import { runJob } from './pipeline.ts';

const PLANES = ['socket', 'grpc'] as const;

async function main(): Promise<void> {
  const f = new Flags(process.argv.slice(2));
  const steps = f.int('steps', 5);
  const repeats = f.int('repeats', 1);
  const batch = f.int('batch', 1);
  const M = 8;
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'propipe-bench-planes-'));
  const loadBefore = os.loadavg();
  try {
    const { model, dataset } = await largeJob(root, M, steps, batch);
    const runs: Record<string, ReturnType<typeof summary>[]> = { socket: [], grpc: [] };
    for (let i = 0; i < repeats; i++) {
      for (const plane of PLANES) {
        const r = await runJob({ root, model, dataset, name: `planes-${plane}-${i}`, workers: 2, microBatches: M, steps, skip: 2, batch, threads: 1, newBlocks: 4, groups: 4, ignoreMask: false, env: { PROPIPE_DATA_PLANE: plane } });
        const s = summary(r);
        runs[plane].push(s);
        process.stderr.write(`P=2 M=8 over ${plane}: ${s.tokensPerSec} tokens/s, step ${s.stepSeconds} s, bubble ${s.bubble} (schedule ${s.bubbleSchedule}), send blocked ${(100 * s.sendBlockedFrac).toFixed(2)} % of the step, frame latency ${JSON.stringify(s.frameLatencyMs)} ms\n`);
      }
    }
    const host = { cpus: os.cpus().length, loadavgBefore: loadBefore.map((x) => Math.round(x * 100) / 100), loadavgAfter: os.loadavg().map((x) => Math.round(x * 100) / 100) };
    process.stdout.write(JSON.stringify({ bench: 'pipeline-planes', host, model: { ...LARGE_MODEL, newBlocks: 4, microBatchSize: batch, microBatches: M, workers: 2 }, runs }, null, 2) + '\n');
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
}

if (isMain(import.meta.url)) {
  main().catch((err) => {
    process.stderr.write(`${(err as Error).stack ?? err}\n`);
    process.exit(1);
  });
}
