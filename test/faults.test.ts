// Faults survived with real processes: kill -9 of a worker mid-step and during a checkpoint write,
// kill -9 of the coordinator, and a stalled worker. Each run must end with the weights of an
// uninterrupted run (deterministic data order and seeds, restart from the last committed checkpoint).
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import YAML from 'yaml';
import { launch } from '../supervisor/launch.ts';
import { startNatsServer, type NatsServerProcess } from '../supervisor/nats-server.ts';
import { openCheckpoint } from '../model/hf/checkpoint.ts';
import { Trainer } from '../local/trainer.ts';
import { maxRelError } from './support/compare.ts';
import { assertContinuation, readMetrics, stepRecords } from './support/continuation.ts';
import { makeTiny } from './support/tiny.ts';

const records = (dir: string) => readMetrics(dir) as Record<string, any>[];

function findFiles(dir: string, re: RegExp): string[] {
  return fs.readdirSync(dir, { recursive: true, encoding: 'utf8' }).filter((f) => re.test(f)).map((f) => path.join(dir, f));
}

function sameWeights(a: string, b: string): void {
  const ca = openCheckpoint(a);
  const cb = openCheckpoint(b);
  for (const n of ca.names()) assert.ok(maxRelError(cb.readF32(n), ca.readF32(n)) <= 1e-5, n);
}

const FAULTS = [
  { name: 'kill -9 of a worker mid-step', workerEnv: { 1: { PROPIPE_TEST_CRASH_AT_STEP: '5' } } },
  { name: 'kill -9 of a worker while it writes its checkpoint shard', workerEnv: { 0: { PROPIPE_TEST_CRASH_IN_SAVE: '4' } } },
  { name: 'kill -9 of the coordinator', coordinatorEnv: { PROPIPE_TEST_COORD_CRASH_AT_STEP: '3' } },
  { name: 'a worker stalled past the step timeout', workerEnv: { 1: { PROPIPE_TEST_STALL_AT_STEP: '5', PROPIPE_TEST_STALL_MS: '6000' } } },
  // The fail-over's `reassign` signal is lost: rank 1, waiting for activations that rank 0 died before
  // sending (its stream from below just ends), learns it over gRPC.
  { name: 'kill -9 of rank 0 while nats-server is down', natsDownAfterStep: 3, killRank0AfterStep: 5 },
  // The restarted rank registers and trains with NATS still down: signals reach it over gRPC alone.
  { name: 'rank 0 restarted while nats-server stays down', natsDownAfterStep: 3, killRank0AfterStep: 5, natsStaysDown: true },
] as const;

test('faults are survived and the run ends with the uninterrupted weights', async (t) => {
  const tiny = await makeTiny();
  const run = { model: tiny.model, dataset: tiny.train, train_type: 'llamapro' as const, llamapro_new_blocks: 2, steps_per_stage: 4, save_steps: 2, learning_rate: 1e-2, per_device_train_batch_size: 4, gradient_accumulation_steps: 2, seed: 5, logging_steps: 1 };
  const reference = await new Trainer({ ...run, output_dir: path.join(tiny.root, 'reference') }).train();

  const only = process.env.PROPIPE_TEST_FAULT;
  for (const fault of FAULTS.filter((f) => !only || f.name.includes(only))) {
    await t.test(fault.name, async () => {
      const out = path.join(tiny.root, fault.name.replace(/\W+/g, '-'));
      const file = `${out}.yaml`;
      fs.writeFileSync(file, YAML.stringify({ ...run, output_dir: out }));
      const lines: string[] = [];
      const t0 = Date.now();
      let nats: NatsServerProcess | null = null;
      let natsDown = false;
      const rankOf = new Map<string, number>();
      const children = new Map<string, ChildProcess>();
      let killed = false;
      let natsBack: Promise<NatsServerProcess> | null = null;
      const code = await launch({
        workers: 2,
        coordinatorArgs: ['--config', file, '--step-timeout-ms', '2500', '--static-partition'],
        coordinatorEnv: 'coordinatorEnv' in fault ? fault.coordinatorEnv : undefined,
        workerEnv: (i) => ('workerEnv' in fault ? ((fault.workerEnv as Record<number, Record<string, string>>)[i] ?? {}) : {}),
        quiet: true,
        env: { PROPIPE_LOG_LEVEL: 'info' },
        onNats: (n) => (nats = n),
        onSpawn: (tag, child) => children.set(tag, child),
        onLine: (tag, line) => {
          lines.push(`${tag} ${line}`);
          if (line.includes('"msg":"assigned"')) rankOf.set(tag, JSON.parse(line).rank);
          if (!('natsDownAfterStep' in fault)) return;
          // NATS comes back (for the restarted rank 0 to connect) only once the other rank found out
          // over gRPC: no signal buffered meanwhile can tell it first.
          if (killed && !natsBack && !('natsStaysDown' in fault) && line.includes('the assignment no longer stands')) {
            const old = nats!;
            natsBack = startNatsServer({ ...old.options, port: old.port });
          }
          if (tag !== 'coord' || !line.includes('"msg":"train"')) return;
          const step = JSON.parse(line).step;
          if (!natsDown && step === fault.natsDownAfterStep) {
            natsDown = true;
            void nats!.stop();
          }
          if (!killed && step === fault.killRank0AfterStep) {
            killed = true;
            children.get([...rankOf].find(([, r]) => r === 0)![0])!.kill('SIGKILL');
          }
        },
      });
      await (natsBack as Promise<NatsServerProcess> | null)?.then((n) => n.stop());
      assert.equal(code, 0, lines.slice(-30).join('\n'));
      if ('natsDownAfterStep' in fault) assert.ok(natsDown && killed, 'nats-server was stopped and rank 0 killed');
      if (natsDown) assert.ok(lines.some((l) => l.includes('the assignment no longer stands')), 'a rank learned of the fail-over over gRPC');
      if ('natsStaysDown' in fault) assert.ok(!natsBack && lines.some((l) => l.includes('NATS is unreachable')), 'the restarted rank trained without NATS');
      sameWeights(reference.finalDir, path.join(out, 'final'));
      const log = records(out);
      const steps = log.filter((r) => typeof r.loss === 'number');
      // Recovered from the last checkpoint (step c + 1 next), not from the start: only steps after c redone.
      const { restarts, redone } = assertContinuation(log, 8, 2);
      const resumedCoordinator = lines.some((l) => l.includes('resuming the job from a committed checkpoint') && l.includes('"step":2'));
      assert.ok(restarts.length > 0 || resumedCoordinator, 'the job went back to a committed checkpoint');
      if ('coordinatorEnv' in fault) assert.ok(resumedCoordinator, 'the restarted coordinator resumed from checkpoint-2');
      else assert.ok(log.some((r) => r.event === 'recover'), 'the coordinator failed the job over');
      if (fault.name.includes('shard')) {
        // The worker died inside the real shard write: its torn temp file holds some bytes, not all.
        const torn = findFiles(out, /shard-\d{5}\.safetensors\.tmp-\d+$/);
        const size = (f: string) => fs.statSync(f).size;
        const whole = (f: string) => size(path.join(out, 'checkpoint-4', path.basename(f).replace(/\.tmp-\d+$/, '')));
        assert.ok(torn.length === 1 && size(torn[0]) > 0 && size(torn[0]) < whole(torn[0]), `torn shard temp files: ${torn.map((f) => `${f} ${size(f)} of ${whole(f)} bytes`).join(', ')}`);
      }
      // Recovery time: the longest pause between two consecutive step records (failure → resumed training).
      const times = steps.map((r) => Date.parse(r.time));
      const gap = Math.max(...times.slice(1).map((x, i) => x - times[i]));
      t.diagnostic(`${fault.name}: recovered, ${redone} step(s) redone, longest pause between steps ${(gap / 1000).toFixed(1)} s, ${((Date.now() - t0) / 1000).toFixed(1)} s end to end`);
    });
  }
});

test('NaN/Inf never reaches the weights: a bad step is skipped on every rank', async (t) => {
  const tiny = await makeTiny();
  const run = { model: tiny.model, dataset: tiny.train, train_type: 'llamapro' as const, llamapro_new_blocks: 2, stage_order: 'none', steps_per_stage: 5, learning_rate: 1e-2, per_device_train_batch_size: 4, seed: 5 };
  // A run that keeps diverging is aborted with exit 3: test/exit-codes.test.ts.
  for (const [name, env, expectCode] of [['one poisoned step', { PROPIPE_TEST_NAN_AT_STEP: '2' }, 0]] as const) {
    await t.test(name, async () => {
      const out = path.join(tiny.root, name.replace(/\W+/g, '-'));
      fs.writeFileSync(`${out}.yaml`, YAML.stringify({ ...run, output_dir: out }));
      const lines: string[] = [];
      // Every worker gets the hook; only the rank that sends activations (rank 0) uses it.
      const code = await launch({ workers: 2, insecure: true, coordinatorArgs: ['--config', `${out}.yaml`], quiet: true, env: { PROPIPE_LOG_LEVEL: 'info', ...env }, onLine: (tag, l) => lines.push(`${tag} ${l}`) });
      assert.equal(code, expectCode, lines.slice(-10).join('\n'));
      assert.ok(lines.some((l) => l.includes('the update of this step is skipped on every rank')));
      const final = openCheckpoint(path.join(out, 'final'));
      for (const n of final.names()) assert.ok(final.readF32(n).every(Number.isFinite), `${n} has NaN`);
      // Exactly the poisoned step was non-finite, and the run went on.
      const losses = stepRecords(readMetrics(out)).map((r) => r.loss);
      assert.equal(losses.length, 5);
      assert.deepEqual(losses.map((l) => l === null), [false, false, true, false, false], `losses ${losses}`);
    });
  }
});

test('nats-server restarted mid-run: clients reconnect, every stage transition is applied once', async () => {
  const tiny = await makeTiny();
  const run = { model: tiny.model, dataset: tiny.train, train_type: 'llamapro' as const, llamapro_new_blocks: 2, steps_per_stage: 6, learning_rate: 1e-2, per_device_train_batch_size: 4, seed: 5, logging_steps: 1 };
  const reference = await new Trainer({ ...run, output_dir: path.join(tiny.root, 'reference') }).train();
  const out = path.join(tiny.root, 'nats-restart');
  fs.writeFileSync(`${out}.yaml`, YAML.stringify({ ...run, output_dir: out }));
  let nats: Awaited<ReturnType<typeof startNatsServer>> | null = null;
  let bounce: Promise<Awaited<ReturnType<typeof startNatsServer>>> | null = null;
  let stopped = false;
  let downAt = Infinity;
  let upAt = Infinity;
  const lines: string[] = [];
  const code = await launch({
    workers: 2,
    insecure: true,
    coordinatorArgs: ['--config', `${out}.yaml`, '--static-partition'],
    workerArgs: ['--stage-timeout-ms', '1000'],
    quiet: true,
    // Ranks slow down just before the stage transition, so NATS is down when it is signalled.
    env: { PROPIPE_LOG_LEVEL: 'info', PROPIPE_TEST_STALL_AT_STEP: '5', PROPIPE_TEST_STALL_MS: '1000' },
    onNats: (n) => (nats = n),
    onLine: (tag, l) => {
      lines.push(`${tag} ${l}`);
      if (!stopped && tag === 'coord' && l.includes('"msg":"train"') && l.includes('"step":5,')) {
        stopped = true;
        bounce = (async () => {
          await nats!.stop();
          downAt = Date.now();
          await new Promise((r) => setTimeout(r, 3000));
          upAt = Date.now();
          return startNatsServer({ port: nats!.port });
        })();
      }
    },
  });
  // The restarted server may come up after the run ended; it must not outlive the test.
  const pending = bounce as Promise<{ stop(): Promise<void> }> | null;
  if (pending) await (await pending).stop();
  assert.equal(code, 0, lines.slice(-20).join('\n'));
  sameWeights(reference.finalDir, path.join(out, 'final'));
  assert.ok(stopped, 'NATS was stopped mid-run');
  // The transition was signalled while NATS was down, so every rank took it from the gRPC fallback.
  const transition = lines.find((l) => l.startsWith('coord ') && l.includes('"why":"previous stage ended"'));
  assert.ok(transition, 'the coordinator signalled the transition');
  const at = JSON.parse(transition.slice(6)).time as number;
  assert.ok(downAt < at && at < upAt, `transition at ${at}, NATS down from ${downAt} to ${upAt}`);
  for (const w of ['w0', 'w1']) {
    const entered = lines.filter((l) => l.startsWith(`${w} `) && l.includes('entering stage'));
    assert.equal(entered.length, 1, `${w} applied the stage transition exactly once`);
    assert.equal(JSON.parse(entered[0].slice(w.length + 1)).via, 'grpc', `${w} took the transition from the gRPC fallback`);
  }
});

test('resume with a different number of workers: the trainable tensors are re-sharded by name', async () => {
  const tiny = await makeTiny();
  const run = { model: tiny.model, dataset: tiny.train, train_type: 'llamapro' as const, llamapro_new_blocks: 2, lora_rank: 2, steps_per_stage: 4, save_steps: 2, learning_rate: 1e-2, per_device_train_batch_size: 4, seed: 9 };
  const reference = await new Trainer({ ...run, output_dir: path.join(tiny.root, 'reference') }).train();
  const out = path.join(tiny.root, 'reshard');
  fs.writeFileSync(`${out}.yaml`, YAML.stringify({ ...run, output_dir: out }));
  const lines: string[] = [];
  const opts = { insecure: true, quiet: true, onLine: (tag: string, l: string) => lines.push(`${tag} ${l}`) };
  assert.equal(await launch({ ...opts, workers: 2, coordinatorArgs: ['--config', `${out}.yaml`, '--max-steps', '5'] }), 0, lines.slice(-10).join('\n'));
  assert.ok(fs.existsSync(path.join(out, 'checkpoint-5', 'manifest.json')));
  assert.equal(await launch({ ...opts, workers: 3, coordinatorArgs: ['--config', `${out}.yaml`, '--resume'] }), 0, lines.slice(-10).join('\n'));
  sameWeights(reference.finalDir, path.join(out, 'final'));
  // The 3-worker run continued at step 6: each step once, and each with the uninterrupted run's loss
  // (same batch from the same data position, same weights) and learning rate.
  const steps = stepRecords(readMetrics(out));
  assert.deepEqual(steps.map((r) => r.step), [1, 2, 3, 4, 5, 6, 7, 8]);
  const ref = stepRecords(readMetrics(path.join(tiny.root, 'reference')));
  steps.forEach((r, i) => {
    assert.ok(Math.abs((r.loss as number) - (ref[i].loss as number)) <= 1e-5 * Math.abs(ref[i].loss as number), `loss of step ${i + 1}: ${r.loss} vs ${ref[i].loss}`);
    assert.equal(r.lr, ref[i].lr, `learning rate of step ${i + 1} (the schedule continues)`);
  });
});
