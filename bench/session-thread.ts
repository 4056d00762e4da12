// Sessions in the session thread against sessions on the main thread (PROPIPE_SESSION_THREAD=0): the
// same real training step (bench/real-step.ts: LLaMA Pro on the model of bench/pipeline-overlap.ts,
// one rank) in child processes that alternate between the two modes, so drifting load on a shared
// machine hits both alike. Reports median step time and the process's peak RSS in each mode: frozen
// weights stay one copy per process either way (they move into the thread instead of being copied).
// Prints one JSON document to stdout.
//
//   node --import tsx bench/session-thread.ts [--repeats 3] [--steps 4] [--batch 1]
import { execFile } from 'node:child_process';
import os from 'node:os';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { randomModelConfig } from '../model/hf/init.ts';
import { Rng } from '../common/rng.ts';
import { isMain } from './common.ts';
import { LARGE_MODEL } from './pipeline-overlap.ts';
import { realStep } from './real-step.ts';

const SEQ = 128;
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const round = (x: number, d = 1) => Math.round(x * 10 ** d) / 10 ** d;

interface ChildResult {
  thread: boolean;
  stepMs: number[];
  peakRssMB: number;
}

/** One child: a few real steps, after one warm-up step. */
async function child(steps: number, batch: number): Promise<ChildResult> {
  const { config } = randomModelConfig({ ...LARGE_MODEL, seed: 1 });
  const real = await realStep({ base: config, seed: 1, trainType: 'llamapro', newBlocks: 4, threads: 1, split: false });
  const rng = new Rng(5);
  const inputIds = BigInt64Array.from({ length: batch * SEQ }, () => BigInt(3 + rng.nextInt(LARGE_MODEL.vocab - 3)));
  let peak = 0;
  const stepMs: number[] = [];
  for (let i = 0; i <= steps; i++) {
    const t0 = performance.now();
    await real.step(i, { batch, seq: SEQ, inputIds, labels: inputIds.slice() });
    if (i > 0) stepMs.push(round(performance.now() - t0));
    peak = Math.max(peak, process.memoryUsage().rss);
  }
  await real.release();
  return { thread: process.env.PROPIPE_SESSION_THREAD === '1', stepMs, peakRssMB: round(peak / 2 ** 20) };
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  const flag = (name: string, def: string) => {
    const i = argv.indexOf(`--${name}`);
    return i >= 0 && i + 1 < argv.length ? argv[i + 1] : def;
  };
  const repeats = Number(flag('repeats', '3'));
  const steps = flag('steps', '4');
  const batch = flag('batch', '1');
  const runs: ChildResult[] = [];
  for (let r = 0; r < repeats; r++) {
    for (const mode of ['1', '0']) {
      const { stdout } = await promisify(execFile)(process.execPath, [...process.execArgv, fileURLToPath(import.meta.url), '--child', '--steps', steps, '--batch', batch], {
        env: { ...process.env, PROPIPE_SESSION_THREAD: mode, PROPIPE_LOG_LEVEL: 'warn' },
        maxBuffer: 1 << 20,
      });
      const res = JSON.parse(stdout) as ChildResult;
      runs.push(res);
      process.stderr.write(`session thread ${res.thread ? 'on ' : 'off'}: steps ${res.stepMs.join(', ')} ms, peak RSS ${res.peakRssMB} MB\n`);
    }
  }
  const of = (thread: boolean) => {
    const rs = runs.filter((r) => r.thread === thread);
    return { stepMs: median(rs.flatMap((r) => r.stepMs)), peakRssMB: median(rs.map((r) => r.peakRssMB)) };
  };
  const on = of(true);
  const off = of(false);
  const out = {
    bench: 'session-thread',
    host: { cpus: os.cpus().length, loadavg: os.loadavg().map((x) => round(x, 2)), node: process.version },
    setup: { model: LARGE_MODEL, newBlocks: 4, seq: SEQ, batch: Number(batch), stepsPerChild: Number(steps), repeats, ortThreads: 1, note: 'one rank, whole model, the rank loop\'s own step (runStep + applyUpdate); children alternate thread / main thread' },
    sessionThread: on,
    mainThread: off,
    stepRatio: round(on.stepMs / off.stepMs, 3),
    rssDeltaMB: round(on.peakRssMB - off.peakRssMB),
    runs,
  };
  process.stdout.write(JSON.stringify(out, null, 2) + '\n');
}

if (isMain(import.meta.url)) {
  if (process.argv.includes('--child')) {
    const argv = process.argv;
    const get = (n: string) => Number(argv[argv.indexOf(`--${n}`) + 1]);
    child(get('steps'), get('batch')).then((r) => process.stdout.write(JSON.stringify(r) + '\n'), (err) => {
      process.stderr.write(`${(err as Error).stack ?? err}\n`);
      process.exit(1);
    });
  } else {
    main().catch((err) => {
      process.stderr.write(`${(err as Error).stack ?? err}\n`);
      process.exit(1);
    });
  }
}
