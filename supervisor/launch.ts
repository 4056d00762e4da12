// `propipe launch`: nats-server, the coordinator and N workers on this machine, each a real process,
// their logs streamed with a rank prefix, all shut down together at the end or on Ctrl-C. At a
// terminal the lines are readable, workers' info lines are folded under a live progress display
// (unless verbose), and the display follows the coordinator's metrics.jsonl.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { MetricsFollower } from '../console/metrics-follower.ts';
import { RunDisplay } from '../console/run-display.ts';
import { childLog, logFormat, printLine } from '../common/log.ts';
import { formatLogLine } from '../common/log-format.ts';
import { PROPIPE_BIN } from '../common/package-root.ts';
import { makeLocalCredentials } from './credentials.ts';
import { freePort, startNatsServer, waitForPort, type NatsServerProcess } from './nats-server.ts';

const log = childLog({ component: 'launch' });
const BIN = PROPIPE_BIN;

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
  /** Extra environment of the coordinator's first life (fault injection). */
  coordinatorEnv?: Record<string, string>;
  /** How often a dying process is started again (default 3). */
  restarts?: number;
  /** Plain gRPC and NATS without credentials (default: throwaway TLS certificates, token, NATS password). */
  insecure?: boolean;
  /** Called once nats-server runs (tests restart it mid-run through this). */
  onNats?: (nats: NatsServerProcess) => void;
  /** Every log line of every process, with its tag (coord, w0, w1, ...). */
  onLine?: (tag: string, line: string) => void;
  /** Show workers' info lines at a terminal too (they are folded by default). */
  verbose?: boolean;
  /** The run's output_dir: at a terminal, a live progress display follows its metrics.jsonl. */
  outputDir?: string;
}

/** How a child's line reaches the terminal: as is with its tag when logs are JSON, else one readable line. */
function show(tag: string, line: string, o: LaunchOptions, folded: { lines: number }): void {
  if (o.quiet) return;
  let record: Record<string, unknown> | null = null;
  if (logFormat() === 'pretty') {
    try {
      record = JSON.parse(line);
    } catch {
      // not a log record (a crash trace): print it as is
    }
  }
  if (!record || typeof record !== 'object') return printLine(`[${tag}] ${line}`);
  if (!o.verbose && tag !== 'coord' && Number(record.level) < 40) {
    folded.lines++;
    return;
  }
  printLine(formatLogLine(record, tag));
}

function prefixed(child: ChildProcess, tag: string, o: LaunchOptions, folded: { lines: number }): void {
  for (const stream of [child.stdout, child.stderr]) {
    if (!stream) continue;
    const rl = readline.createInterface({ input: stream });
    rl.on('line', (line) => {
      o.onLine?.(tag, line);
      show(tag, line, o, folded);
    });
  }
}

export async function launch(o: LaunchOptions): Promise<number> {
  const creds = o.insecure ? null : makeLocalCredentials(fs.mkdtempSync(path.join(os.tmpdir(), 'propipe-creds-')));
  const nats = await startNatsServer(creds ? { user: creds.natsUser, pass: creds.natsPass } : {});
  o.onNats?.(nats);
  const secure = creds ? ['--tls-cert', creds.tlsCert, '--tls-key', creds.tlsKey, '--tls-ca', creds.tlsCa, '--mtls', '--token-file', creds.tokenFile] : [];
  const port = await freePort();
  const jobId = `job${port}`;
  const restarts = o.restarts ?? 3;
  const live = new Set<ChildProcess>();
  const folded = { lines: 0 };
  const display = o.outputDir && !o.quiet ? new RunDisplay({ note: () => (folded.lines ? `${folded.lines} worker log lines folded (--verbose shows them)` : '') }) : null;
  const follower = display?.enabled ? new MetricsFollower(path.join(o.outputDir!, 'metrics.jsonl'), (r) => display.observe(r)) : null;
  let stopping = false;
  const stopAll = () => {
    stopping = true;
    live.forEach((c) => c.exitCode === null && c.kill('SIGTERM'));
  };
  const onSignal = () => {
    log.info('interrupted: stopping every process');
    stopAll();
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);

  const baseEnv = { ...process.env, PROPIPE_LOG_JSON: process.env.PROPIPE_LOG_JSON ?? '1', ...o.env };
  /**
   * Runs a process and, like Kubernetes, starts it again when it dies, up to `restarts` times.
   * Fault-injection variables apply to the first life only. Resolves with the final exit code.
   */
  const supervise = (tag: string, args: (life: number) => string[], env: (life: number) => NodeJS.ProcessEnv): Promise<number> =>
    new Promise((resolve) => {
      const start = (life: number) => {
        const child = spawn(process.execPath, [BIN, ...args(life)], { stdio: ['ignore', 'pipe', 'pipe'], env: env(life) });
        live.add(child);
        prefixed(child, tag, o, folded);
        child.once('exit', (code, signal) => {
          live.delete(child);
          // Exit code 3 means the job itself is over (aborted): restarting would not help.
          const failed = code !== 0 && code !== 3;
          if (failed && !stopping && life < restarts) {
            log.warn({ process: tag, code, signal, restart: life + 1 }, 'process died: restarting it');
            start(life + 1);
          } else resolve(code ?? 1);
        });
      };
      start(0);
    });

  try {
    const coordinatorArgs = (life: number) => ['coordinator', '--port', String(port), '--nats', nats.url, '--workers', String(o.workers), '--job-id', jobId, ...secure, ...o.coordinatorArgs, ...(life > 0 ? ['--resume'] : [])];
    const coordinator = supervise('coord', coordinatorArgs, (life) => ({ ...baseEnv, ...(life === 0 ? o.coordinatorEnv : {}) }));
    await waitForPort(port, '127.0.0.1', 30_000);
    const workers = Array.from({ length: o.workers }, (_, i) =>
      supervise(`w${i}`, () => ['worker', '--coordinator', `127.0.0.1:${port}`, '--worker-id', `w${i}`, ...secure, ...(o.workerArgs ?? [])], (life) => ({ ...baseEnv, ...(life === 0 ? (o.workerEnv?.(i) ?? {}) : {}) })).then((code) => {
        // A worker out of restarts would leave the others waiting at a barrier forever.
        if (code !== 0) stopAll();
        return code;
      }),
    );
    const coordCode = await coordinator;
    if (coordCode !== 0) {
      log.error({ code: coordCode }, 'the coordinator failed');
      stopAll();
    }
    // Workers leave on their own after the job ends; give them a moment before taking them down.
    const timer = setTimeout(stopAll, 15_000);
    const codes = await Promise.all(workers);
    clearTimeout(timer);
    const failed = codes.findIndex((c) => c !== 0);
    if (failed >= 0) log.error({ process: `w${failed}`, code: codes[failed] }, 'a worker failed');
    return coordCode !== 0 || failed >= 0 ? 1 : 0;
  } finally {
    follower?.stop();
    display?.stop();
    stopAll();
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await nats.stop();
    if (creds) fs.rmSync(creds.dir, { recursive: true, force: true });
  }
}
