// `npm run chaos`: a seeded pipelined run on 3 workers with a fault every few steps — kill -9 of a
// worker mid-step or inside its checkpoint write, kill -9 of the coordinator, a worker stalled past the
// step timeout (SIGSTOP/SIGCONT), a nats-server restart — whose exported weights must equal the
// uninterrupted single-process run's. Prints one JSON document: the faults injected and survived, the
// longest recovery (fault to the first step beyond the furthest one before it) and the steps redone.
// Flags: --steps N (default 60, even), --every K (steps between faults, default 5), --seed S.
import fs from 'node:fs';
import path from 'node:path';
import type { ChildProcess } from 'node:child_process';
import YAML from 'yaml';
import { launchJob } from '../../supervisor/launch.ts';
import { startNatsServer, type NatsServerProcess } from '../../supervisor/nats-server.ts';
import { Rng } from '../../common/rng.ts';
import { openCheckpoint } from '../../model/hf/checkpoint.ts';
import { Trainer } from '../../local/trainer.ts';
import { maxRelError } from '../support/compare.ts';
import { assertContinuation, readMetrics } from '../support/continuation.ts';
import { makeTiny } from '../support/tiny.ts';

export type FaultKind = 'kill worker mid-step' | 'kill worker mid-save' | 'kill coordinator' | 'stall worker' | 'restart nats';
/** Faults that hold the job up until it recovers; a NATS restart does not (steps go on meanwhile). */
const BLOCKING: FaultKind[] = ['kill worker mid-step', 'kill coordinator', 'stall worker'];

export interface ChaosOptions {
  steps: number;
  every: number;
  seed: number;
  workers?: number;
  log?: (msg: string) => void;
}

export interface ChaosReport {
  seed: number;
  steps: number;
  workers: number;
  faults: { kind: FaultKind; target: string; afterStep: number; recoverySeconds: number | null }[];
  injected: number;
  survived: number;
  longestRecoverySeconds: number;
  stepsRedone: number;
  weightsEqual: boolean;
  maxRelError: number;
  exitCode: number;
  seconds: number;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function runChaos(o: ChaosOptions): Promise<ChaosReport> {
  const t0 = Date.now();
  const workers = o.workers ?? 3;
  const say = o.log ?? (() => undefined);
  const rng = new Rng(o.seed);
  const tiny = await makeTiny();
  const saveSteps = 2;
  const run = { model: tiny.model, dataset: tiny.train, train_type: 'llamapro' as const, llamapro_new_blocks: 2, steps_per_stage: o.steps / 2, save_steps: saveSteps, learning_rate: 1e-2, per_device_train_batch_size: 4, seed: o.seed, logging_steps: 1 };
  say('reference: the uninterrupted single-process run');
  const reference = await new Trainer({ ...run, output_dir: path.join(tiny.root, 'reference') }).train();

  // The first fault is a kill inside a checkpoint write (a hook of the worker's first life); the rest
  // are injected from outside, in a seeded order that cycles through every kind, the NATS restart last
  // in each round (a short run would otherwise end while it is down and miss the rest).
  // Two checkpoints in, so the one it tears is not the first.
  const firstSave = Math.max(2, Math.ceil(o.every / saveSteps)) * saveSteps;
  const saveVictim = `w${rng.nextInt(workers)}`;
  const order = [...BLOCKING];
  for (let i = order.length - 1; i > 0; i--) {
    const j = rng.nextInt(i + 1);
    [order[i], order[j]] = [order[j], order[i]];
  }
  order.push('restart nats');
  const faults: ChaosReport['faults'] = [];
  const children = new Map<string, ChildProcess>();
  let nats: NatsServerProcess | null = null;
  let maxStep = 0;
  let lastStep = 0;
  let pending: { fault: ChaosReport['faults'][number]; at: number; beyond: number } | null = null;
  let nextFaultAt = firstSave + o.every;
  let busy = false;
  let saveKilled = false;
  let done = false;

  const recordStep = (step: number) => {
    lastStep = step;
    if (pending && step > pending.beyond) {
      pending.fault.recoverySeconds = (Date.now() - pending.at) / 1000;
      say(`recovered from '${pending.fault.kind}' in ${pending.fault.recoverySeconds.toFixed(1)} s (step ${step})`);
      nextFaultAt = Math.max(nextFaultAt, step + o.every);
      pending = null;
    }
    maxStep = Math.max(maxStep, step);
  };

  const inject = async (kind: FaultKind, step: number) => {
    busy = true;
    const victim = `w${rng.nextInt(workers)}`;
    const fault = { kind, target: kind === 'kill coordinator' ? 'coord' : kind === 'restart nats' ? 'nats' : victim, afterStep: step, recoverySeconds: null as number | null };
    faults.push(fault);
    // A worker may report the step in flight before the signal lands: then the step after it is the
    // first the fault can hold up.
    const inFlight = kind === 'kill worker mid-step' || kind === 'stall worker' ? 1 : 0;
    pending = { fault, at: Date.now(), beyond: maxStep + inFlight };
    say(`fault ${faults.length}: ${kind} (${fault.target}) after step ${step}`);
    if (kind === 'kill worker mid-step') {
      await sleep(rng.nextInt(30));
      children.get(victim)?.kill('SIGKILL');
    } else if (kind === 'kill coordinator') children.get('coord')?.kill('SIGKILL');
    else if (kind === 'stall worker') {
      const child = children.get(victim)!;
      child.kill('SIGSTOP');
      await sleep(5000);
      child.kill('SIGCONT');
    } else if (kind === 'restart nats') {
      const old = nats!;
      await old.stop();
      // Clients reconnect to the same URL, so the port must be the same; on a busy machine it can be
      // briefly taken (an ephemeral port of another connection): try again rather than end the run.
      for (let attempt = 1; ; attempt++) {
        await sleep(1000);
        try {
          nats = await startNatsServer({ ...old.options, port: old.port });
          break;
        } catch (err) {
          if (attempt === 5) throw err;
          say(`nats-server did not come back on port ${old.port} (${(err as Error).message}); trying again`);
        }
      }
    }
    busy = false;
  };

  const out = path.join(tiny.root, 'chaos');
  fs.writeFileSync(`${out}.yaml`, YAML.stringify({ ...run, output_dir: out }));
  let turn = 0;
  const result = await launchJob({
    workers,
    restarts: 100,
    coordinatorArgs: ['--config', `${out}.yaml`, '--step-timeout-ms', '2500'],
    workerEnv: (i): Record<string, string> => (`w${i}` === saveVictim ? { PROPIPE_TEST_CRASH_IN_SAVE: String(firstSave) } : {}),
    quiet: true,
    env: { PROPIPE_LOG_LEVEL: 'info' },
    onNats: (n) => (nats = n),
    onSpawn: (tag, child) => children.set(tag, child),
    onExit: (tag, _code, signal) => {
      // The hook's kill (its first life, so nobody outside sent it).
      if (tag === saveVictim && signal === 'SIGKILL' && !saveKilled) {
        saveKilled = true;
        say(`confirmed: ${tag} was killed inside its write of checkpoint-${firstSave}`);
      }
    },
    onLine: (tag, line) => {
      if (tag !== 'coord' || !line.includes('"msg":"train"')) return;
      const step = (JSON.parse(line) as { step: number }).step;
      recordStep(step);
      // The barrier of the first save step: the victim now writes its shard and dies in the write.
      if (step === firstSave && !faults.some((f) => f.kind === 'kill worker mid-save')) {
        const fault = { kind: 'kill worker mid-save' as const, target: saveVictim, afterStep: step, recoverySeconds: null };
        faults.push(fault);
        pending = { fault, at: Date.now(), beyond: step };
        say(`fault ${faults.length}: kill worker mid-save (${saveVictim}) writing checkpoint-${firstSave}`);
      }
      if (!busy && !pending && !done && step >= nextFaultAt && step < o.steps - 2) {
        nextFaultAt = step + o.every;
        void inject(order[turn++ % order.length], step);
      }
    },
  });
  done = true;
  while (busy) await sleep(50);
  // The hook did not fire (the victim had no shard to write then): that fault never happened.
  if (!saveKilled) faults.splice(faults.findIndex((f) => f.kind === 'kill worker mid-save'), 1);
  const restarted = nats as NatsServerProcess | null;
  if (restarted) await restarted.stop();

  let maxErr = Infinity;
  let stepsRedone = 0;
  if (result.code === 0) {
    const ref = openCheckpoint(reference.finalDir);
    const got = openCheckpoint(path.join(out, 'final'));
    maxErr = Math.max(...ref.names().map((n) => maxRelError(got.readF32(n), ref.readF32(n))));
    stepsRedone = assertContinuation(readMetrics(out), o.steps, saveSteps, [o.steps / 2]).redone;
  }
  fs.rmSync(tiny.root, { recursive: true, force: true });
  const survived = result.code === 0 ? faults.filter((f) => f.recoverySeconds !== null).length : 0;
  return {
    seed: o.seed,
    steps: o.steps,
    workers,
    faults,
    injected: faults.length,
    survived,
    longestRecoverySeconds: Math.max(0, ...faults.map((f) => f.recoverySeconds ?? 0)),
    stepsRedone,
    weightsEqual: maxErr <= 1e-5,
    maxRelError: maxErr,
    exitCode: result.code,
    seconds: (Date.now() - t0) / 1000,
  };
}

if (process.argv[1] && path.resolve(process.argv[1]) === path.resolve(import.meta.filename)) {
  const arg = (name: string, def: number) => (process.argv.includes(`--${name}`) ? Number(process.argv[process.argv.indexOf(`--${name}`) + 1]) : def);
  const report = await runChaos({ steps: arg('steps', 60), every: arg('every', 5), seed: arg('seed', 1), log: (m) => process.stderr.write(`[chaos] ${m}\n`) });
  console.log(JSON.stringify(report, null, 2));
  process.exitCode = report.weightsEqual && report.survived === report.injected ? 0 : 1;
}
