// `propipe launch`: nats-server, the coordinator and N workers on this machine, each a real process,
// their logs streamed with a rank prefix, all shut down together at the end or on Ctrl-C.
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import readline from 'node:readline';
import { childLog } from '../model/log.ts';
import { freePort, startNatsServer, waitForPort } from './nats-server.ts';

const log = childLog({ component: 'launch' });
const BIN = path.resolve(import.meta.dirname, '../bin/propipe.mjs');

export interface LaunchOptions {
  workers: number;
  /** Flags passed to `propipe coordinator` (run config, schedule, micro-batches...). */
  coordinatorArgs: string[];
  workerArgs?: string[];
  /** Extra environment of every process. */
  env?: Record<string, string>;
  /** Per-worker extra environment (tests: fault injection, delays). */
  workerEnv?: (index: number) => Record<string, string>;
  quiet?: boolean;
  /** Every log line of every process, with its tag (coord, w0, w1, ...). */
  onLine?: (tag: string, line: string) => void;
}

function prefixed(child: ChildProcess, tag: string, o: LaunchOptions): void {
  for (const stream of [child.stdout, child.stderr]) {
    if (!stream) continue;
    const rl = readline.createInterface({ input: stream });
    rl.on('line', (line) => {
      o.onLine?.(tag, line);
      if (!o.quiet) process.stderr.write(`[${tag}] ${line}\n`);
    });
  }
}

export async function launch(o: LaunchOptions): Promise<number> {
  const nats = await startNatsServer();
  const port = await freePort();
  const children: ChildProcess[] = [];
  const stopAll = () => children.forEach((c) => c.exitCode === null && c.kill('SIGTERM'));
  const onSignal = () => {
    log.info('interrupted: stopping every process');
    stopAll();
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    const coordinator = spawn(process.execPath, [BIN, 'coordinator', '--port', String(port), '--nats', nats.url, '--workers', String(o.workers), ...o.coordinatorArgs], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, PROPIPE_LOG_JSON: process.env.PROPIPE_LOG_JSON ?? '1', ...o.env } });
    children.push(coordinator);
    prefixed(coordinator, 'coord', o);
    await waitForPort(port, '127.0.0.1', 30_000);
    for (let i = 0; i < o.workers; i++) {
      const w = spawn(process.execPath, [BIN, 'worker', '--coordinator', `127.0.0.1:${port}`, '--worker-id', `w${i}`, ...(o.workerArgs ?? [])], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, PROPIPE_LOG_JSON: process.env.PROPIPE_LOG_JSON ?? '1', ...o.env, ...(o.workerEnv?.(i) ?? {}) } });
      children.push(w);
      prefixed(w, `w${i}`, o);
    }
    // One failed process would leave the others waiting at a barrier: take them all down.
    const codes = await Promise.all(
      children.map(
        (c) =>
          new Promise<number>((r) => {
            const done = (code: number) => {
              if (code !== 0) stopAll();
              r(code);
            };
            if (c.exitCode !== null) done(c.exitCode);
            else c.once('exit', (code) => done(code ?? 1));
          }),
      ),
    );
    const failed = codes.findIndex((c) => c !== 0);
    if (failed >= 0) log.error({ process: failed === 0 ? 'coordinator' : `w${failed - 1}`, code: codes[failed] }, 'a process failed');
    return failed >= 0 ? 1 : 0;
  } finally {
    stopAll();
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await nats.stop();
  }
}
