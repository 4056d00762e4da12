// How a job ends when it cannot go on, through the real CLI: a request that can never succeed (more
// workers than blocks) stops every process at once with the message and exit 4; a run that keeps
// producing non-finite losses is aborted with exit 3 by every entry point (train, coordinator, worker,
// launch), after exactly the skipped steps the limit allows, and nothing is restarted.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import YAML from 'yaml';
import { launchJob } from '../supervisor/launch.ts';
import { makeTiny, poisonTensor } from './support/tiny.ts';
import { jobFor, register } from './support/job.ts';
import { JobAborted, JobFinished, PermanentError } from '../common/errors.ts';
import { finalFromStatus, statusOf } from '../proto/errors.ts';

const BIN = path.resolve(import.meta.dirname, '../bin/propipe.mjs');

/** The real `propipe` binary, asynchronously (the test process keeps serving its timers). */
function propipe(args: string[], env: Record<string, string> = {}): Promise<{ status: number | null; stderr: string; seconds: number }> {
  const t0 = Date.now();
  const child = spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, PROPIPE_LOG_JSON: '1', PROPIPE_LOG_LEVEL: 'warn', ...env } });
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  const kill = setTimeout(() => child.kill('SIGKILL'), 100_000);
  return new Promise((resolve) => child.on('close', (status) => {
    clearTimeout(kill);
    resolve({ status, stderr, seconds: (Date.now() - t0) / 1000 });
  }));
}

const stepRecords = (out: string) => fs.readFileSync(path.join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l)).filter((r) => 'loss' in r);

test('propipe launch --workers 9 on a 6-block model ends at once with the reason and exit 4', async () => {
  const tiny = await makeTiny();
  const out = path.join(tiny.root, 'too-many');
  // 4 original + 2 new blocks.
  const r = await propipe(['launch', '--workers', '9', '--insecure', '--model', tiny.model, '--dataset', tiny.train, '--output-dir', out, '--llamapro-new-blocks', '2', '--steps-per-stage', '2'], { PROPIPE_LOG_LEVEL: 'info' });
  assert.equal(r.status, 4, r.stderr.slice(-3000));
  assert.match(r.stderr, /propipe launch: the job cannot run as configured: 9 workers for 6 blocks: every worker needs at least one block; use at most 6 workers\n/);
  assert.equal(r.stderr.match(/9 workers for 6 blocks/g)?.length, 1, 'the reason is printed once');
  // The coordinator refuses it before any worker starts: nothing registers, nothing retries.
  assert.doesNotMatch(r.stderr, /registering|lost the assignment/);
  assert.ok(r.seconds < 60, `took ${r.seconds} s`);
  fs.rmSync(tiny.root, { recursive: true, force: true });
});

test('a diverging run is aborted with exit 3 by propipe train after 3 skipped steps', async () => {
  const tiny = await makeTiny();
  poisonTensor(tiny.model, 'model.norm.weight');
  const out = path.join(tiny.root, 'train-nan');
  const r = await propipe(['train', '--model', tiny.model, '--dataset', tiny.train, '--output-dir', out, '--llamapro-new-blocks', '2', '--stage-order', 'none', '--steps-per-stage', '8', '--per-device-train-batch-size', '4']);
  assert.equal(r.status, 3, r.stderr.slice(-2000));
  assert.match(r.stderr, /propipe train: .*aborted the job at step 3: repeated non-finite losses or gradients/);
  const steps = stepRecords(out);
  assert.equal(steps.length, 3, 'exactly three steps ran, each skipped');
  assert.ok(steps.every((s) => s.loss === null), 'their losses were non-finite');
});

test('a diverging pipelined run: coordinator and every worker exit 3, nothing restarted, propipe launch exits 3', async () => {
  const tiny = await makeTiny();
  poisonTensor(tiny.model, 'model.norm.weight');
  const run = { model: tiny.model, dataset: tiny.train, train_type: 'llamapro', llamapro_new_blocks: 2, stage_order: 'none', steps_per_stage: 8, per_device_train_batch_size: 4, seed: 5 };
  const out = path.join(tiny.root, 'launch-nan');
  fs.writeFileSync(`${out}.yaml`, YAML.stringify({ ...run, output_dir: out }));
  const exits = new Map<string, number | null>();
  const restarts: string[] = [];
  const lines: string[] = [];
  const r = await launchJob({
    workers: 2,
    insecure: true,
    coordinatorArgs: ['--config', `${out}.yaml`],
    quiet: true,
    env: { PROPIPE_LOG_LEVEL: 'warn' },
    onLine: (tag, l) => lines.push(`${tag} ${l}`),
    onExit: (tag, code) => exits.set(tag, code),
    onRestart: (tag) => restarts.push(tag),
  });
  assert.equal(r.code, 3, lines.slice(-20).join('\n'));
  assert.deepEqual(Object.fromEntries(exits), { coord: 3, w0: 3, w1: 3 });
  assert.deepEqual(restarts, [], 'an aborted job is not restarted');
  assert.match(r.message ?? '', /3 consecutive steps had a non-finite loss or gradient|aborted the job/);
  const steps = stepRecords(out);
  assert.equal(steps.length, 3, 'three skipped steps, then the abort');
  assert.ok(steps.every((s) => s.loss === null));

  // The same job through the command a user runs.
  const cli = await propipe(['launch', '--workers', '2', '--insecure', '--config', `${out}.yaml`]);
  assert.equal(cli.status, 3, cli.stderr.slice(-2000));
  assert.match(cli.stderr, /propipe launch: the job was aborted: /);
});

test('the end of a job, on the wire: a worker that registers after it is told so and what to exit with, instead of retrying', () => {
  const over = (err: Error) => finalFromStatus({ ...statusOf(err), message: err.message });
  // Aborted (3) and cannot run as configured (4) are final; a job being re-assigned is retried.
  assert.ok(over(new JobAborted('nan')) instanceof JobAborted);
  assert.ok(over(new PermanentError('too big')) instanceof PermanentError);
  assert.equal(over(new Error('the job is re-assigning: register again')), null);
  // A finished job answers a late registration with JobFinished (the worker exits 0).
  const job = jobFor('unused', 1);
  job.finishExport();
  return register(job, 'late', 8 * 2 ** 30).then(
    () => assert.fail('a finished job assigned a late worker'),
    (err: Error) => {
      assert.ok(err instanceof JobFinished, String(err));
      const answer = over(err);
      assert.ok(answer instanceof JobFinished && answer.exitCode === 0, String(answer));
    },
  );
});
