// Does ONNX Runtime's `session.run` leave the event loop free? A 1 ms timer ticks while one forward
// of a 4-layer range runs; the largest gap between ticks is how long the JS thread was held (frames
// are neither received nor sent meanwhile). onnxruntime-node 1.30 runs the session synchronously
// inside a setImmediate, so on the calling thread the gap is the whole run; in the session thread
// (model/graph/session-host.ts, the default) it should be a few milliseconds. Both are measured.
//   node --import tsx bench/ort-event-loop.ts
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createRandomModel } from '../model/hf/init.ts';
import { openPretrained } from '../model/hf/pretrained.ts';
import { RangeProgram } from '../model/llama/program.ts';
import { wholeModel } from '../model/llama/range-graph.ts';
import { hostInfo, printJson, round } from './common.ts';

async function main(): Promise<void> {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'propipe-bench-lag-'));
  await createRandomModel(root, { layers: 4, hidden: 256, heads: 8, kvHeads: 4, intermediate: 688, vocab: 1024, seed: 1 });
  const m = openPretrained(root);
  const B = 4;
  const S = 128;
  const b = { batch: B, seq: S, inputIds: new BigInt64Array(B * S).fill(5n), labels: new BigInt64Array(B * S).fill(7n) };
  const modes: Record<string, unknown[]> = {};
  for (const mode of ['mainThread', 'sessionThread']) {
    process.env.PROPIPE_SESSION_THREAD = mode === 'sessionThread' ? '1' : '0';
    const p = await RangeProgram.create({ config: m.config, range: wholeModel(m.config), trainable: new Set(), load: m.load, inputGrad: false, threads: 1 });
    await p.forward(b, new Map());
    const runs = (modes[mode] = [] as { runMs: number; maxTimerGapMs: number; blockedFraction: number; ticks: number }[]);
    for (let i = 0; i < 3; i++) {
      let last = performance.now();
      let maxGap = 0;
      let ticks = 0;
      const iv = setInterval(() => {
        const now = performance.now();
        maxGap = Math.max(maxGap, now - last);
        last = now;
        ticks++;
      }, 1);
      const t0 = performance.now();
      await p.forward(b, new Map());
      const runMs = performance.now() - t0;
      await new Promise((r) => setTimeout(r, 5));
      clearInterval(iv);
      runs.push({ runMs: round(runMs, 1), maxTimerGapMs: round(maxGap, 1), blockedFraction: round(Math.min(1, maxGap / runMs)), ticks });
    }
    await p.release();
  }
  fs.rmSync(root, { recursive: true, force: true });
  printJson({ bench: 'ort-event-loop', host: hostInfo(1), ...modes });
}

main().catch((err) => {
  process.stderr.write(`${(err as Error).stack ?? err}\n`);
  process.exit(1);
});
