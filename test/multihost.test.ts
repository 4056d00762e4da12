// Multi-host for real: the coordinator with NATS, and each worker, in a network namespace of its own
// (veth pairs on a bridge, addresses of the test's own). One worker's link is cut mid-run: the job
// notices within the step timeout, fails over, and when the link returns finishes with the weights of
// an uninterrupted run. Needs root and iproute2 (skipped, with the reason, otherwise).
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import YAML from 'yaml';
import { openCheckpoint } from '../model/hf/checkpoint.ts';
import { Trainer } from '../local/trainer.ts';
import { maxRelError } from './support/compare.ts';
import { exited, inNs, ip, NetnsLab } from './support/netns.ts';
import { makeTiny } from './support/tiny.ts';

const BIN = path.resolve(import.meta.dirname, '../bin/propipe.mjs');
const lab = new NetnsLab(['c', 'w0', 'w1'], '10.231.0');

test('coordinator, NATS and workers on separate hosts; a worker link cut mid-run is detected and recovered', async (t) => {
  const skip = lab.setUp();
  if (skip) return t.skip(skip);
  const children: ChildProcess[] = [];
  try {
    const tiny = await makeTiny();
    const run = { model: tiny.model, dataset: tiny.train, train_type: 'llamapro' as const, llamapro_new_blocks: 2, stage_order: 'none', steps_per_stage: 40, save_steps: 5, learning_rate: 1e-2, per_device_train_batch_size: 4, logging_steps: 1, seed: 4 };
    const reference = await new Trainer({ ...run, output_dir: path.join(tiny.root, 'reference') }).train();
    const out = path.join(tiny.root, 'multihost');
    const cfg = `${out}.yaml`;
    fs.writeFileSync(cfg, YAML.stringify({ ...run, output_dir: out }));
    const lines: string[] = [];
    const [c, w0, w1] = lab.hosts;
    children.push(inNs(c.ns, ['nats-server', '-a', c.ip, '-p', '4222'], lines, 'nats'));
    await new Promise((r) => setTimeout(r, 500));
    const coordinator = inNs(c.ns, [process.execPath, BIN, 'coordinator', '--host', c.ip, '--port', '7070', '--nats', `nats://${c.ip}:4222`, '--workers', '2', '--config', cfg, '--step-timeout-ms', '2500', '--static-partition', '--insecure'], lines, 'coord');
    children.push(coordinator);
    for (const [i, h] of [w0, w1].entries()) children.push(inNs(h.ns, [process.execPath, BIN, 'worker', '--coordinator', `${c.ip}:7070`, '--host', h.ip, '--worker-id', `w${i}`, '--stage-timeout-ms', '1000', '--insecure'], lines, `w${i}`));

    // Cut w1's link once training is under way, restore it 4 s later.
    const hostSide = lab.hostSide(2);
    let cutAt = 0;
    const cut = new Promise<void>((resolve) => {
      const poll = setInterval(() => {
        if (!lines.some((l) => l.startsWith('coord ') && l.includes('"msg":"train"') && l.includes('"step":8,'))) return;
        clearInterval(poll);
        ip('link', 'set', hostSide, 'down');
        cutAt = Date.now();
        setTimeout(() => {
          ip('link', 'set', hostSide, 'up');
          resolve();
        }, 4000);
      }, 20);
    });
    let guard: NodeJS.Timeout | undefined;
    const code = await Promise.race([exited(coordinator), new Promise<number>((r) => (guard = setTimeout(() => r(-1), 180_000)))]);
    clearTimeout(guard);
    await cut;
    assert.equal(code, 0, lines.filter((l) => !l.includes('"msg":"train"')).slice(-25).join('\n'));
    // The first fail-over after the cut (a loaded machine may have failed over once before it).
    const timeOf = (l: string) => (JSON.parse(l.slice(l.indexOf('{'))) as { time: number }).time;
    const failover = lines.find((l) => l.includes('a rank failed: re-assigning') && timeOf(l) >= cutAt);
    assert.ok(failover, 'the coordinator detected the cut link');
    const detectedAt = timeOf(failover);
    assert.ok(detectedAt - cutAt < 2500 + 1500, `detected ${detectedAt - cutAt} ms after the cut (timeout 2500 ms)`);
    t.diagnostic(`link cut detected after ${detectedAt - cutAt} ms`);
    const ca = openCheckpoint(reference.finalDir);
    const cb = openCheckpoint(path.join(out, 'final'));
    for (const n of ca.names()) assert.ok(maxRelError(cb.readF32(n), ca.readF32(n)) <= 1e-5, n);
  } finally {
    children.forEach((ch) => ch.exitCode === null && ch.kill('SIGKILL'));
    lab.tearDown();
  }
});
