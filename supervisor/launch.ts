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
import { EXIT_ABORTED, FINAL_EXIT_CODES } from '../common/errors.ts';
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
  /** Called when a dead process is started again (tests check an aborted job is not). */
  onRestart?: (tag: string, code: number | null, signal: NodeJS.Signals | null) => void;
  /** Called whenever a process starts (chaos tests kill or pause it). */
  onSpawn?: (tag: string, child: ChildProcess) => void;
  /** Called whenever a process exits. */
  onExit?: (tag: string, code: number | null, signal: NodeJS.Signals | null) => void;
}

export interface LaunchResult {
  /** 0, or the exit code of the process that ended the job (3 aborted, 4 cannot run as configured, else 1). */
  code: number;
  /** That process's error line, when it printed one. */
  message: string | null;
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

/**
 * Streams a child's lines with its tag. Its last words (`propipe <command>: why`, the line the CLI
 * prints before a failing exit) are held back: `lastWords()` returns them, and the caller shows them
 * only when launch will not repeat them as its own (on a final exit it does, so they print once).
 */
function prefixed(child: ChildProcess, tag: string, o: LaunchOptions, folded: { lines: number }): () => string | null {
  let last: string | null = null;
  for (const stream of [child.stdout, child.stderr]) {
    if (!stream) continue;
    const rl = readline.createInterface({ input: stream });
    rl.on('line', (line) => {
      o.onLine?.(tag, line);
      if (stream === child.stderr && line.startsWith('propipe ')) last = line;
      else show(tag, line, o, folded);
    });
  }
  return () => last;
}

export async function launch(o: LaunchOptions): Promise<number> {
  return (await launchJob(o)).code;
}

export async function launchJob(o: LaunchOptions): Promise<LaunchResult> {
  const creds = o.insecure ? null : makeLocalCredentials(fs.mkdtempSync(path.join(os.tmpdir(), 'propipe-creds-')));
  const nats = await startNatsServer(creds ? { user: creds.natsUser, pass: creds.natsPass, tls: { cert: creds.tlsCert, key: creds.tlsKey } } : {});
  o.onNats?.(nats);
  const secure = creds ? ['--tls-cert', creds.tlsCert, '--tls-key', creds.tlsKey, '--tls-ca', creds.tlsCa, '--mtls', '--token-file', creds.tokenFile] : [];
  const port = await freePort();
  const jobId = `job${port}`;
  const restarts = o.restarts ?? 3;
  const live = new Set<ChildProcess>();
  const folded = { lines: 0 };
  const display = o.outputDir && !o.quiet ? new RunDisplay({ note: () => (folded.lines ? `${folded.lines} worker log lines folded (--verbose shows them)` : '') }) : null;
  const follower = display?.enabled ? new MetricsFollower(path.join(o.outputDir!, 'metrics.jsonl'), (r) => display.observe(r)) : null;
  const errors = new Map<string, string>();
  /** The first process that ended the job for good, and its exit code. */
  let final: { tag: string; code: number } | null = null;
  let stopping = false;
  let grace: NodeJS.Timeout | undefined;
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
        o.onSpawn?.(tag, child);
        const lastWords = prefixed(child, tag, o, folded);
        child.once('close', (code, signal) => {
          live.delete(child);
          o.onExit?.(tag, code, signal);
          const words = lastWords();
          if (words) errors.set(tag, words.replace(/^propipe [\w-]+: /, ''));
          // A usage error, an aborted job (3) or one that cannot run as configured (4): restarting
          // would fail the same way, so every process stops instead, and launch says why, once.
          const isFinal = code !== null && FINAL_EXIT_CODES.includes(code);
          if (words && !(isFinal && code !== 0)) show(tag, words, o, folded);
          if (isFinal && code !== 0 && !final) {
            // The others learn it too (at the same barrier, or from the coordinator's answer) and
            // exit with their own words; whatever is still up after a grace period is stopped.
            final = { tag, code };
            stopping = true;
            grace = setTimeout(stopAll, code === EXIT_ABORTED ? 15_000 : 3_000);
          }
          if (!isFinal && !stopping && life < restarts) {
            log.warn({ process: tag, code, signal, restart: life + 1 }, 'process died: restarting it');
            o.onRestart?.(tag, code, signal);
            start(life + 1);
          } else resolve(code ?? 1);
        });
      };
      start(0);
    });

  try {
    const coordinatorArgs = (life: number) => ['coordinator', '--port', String(port), '--nats', nats.url, '--workers', String(o.workers), '--job-id', jobId, ...secure, ...o.coordinatorArgs, ...(life > 0 ? ['--resume'] : [])];
    const coordinator = supervise('coord', coordinatorArgs, (life) => ({ ...baseEnv, ...(life === 0 ? o.coordinatorEnv : {}) }));
    // A coordinator that exits before it listens (bad config) ends the launch at once.
    const exited = new AbortController();
    void coordinator.then(() => exited.abort());
    const early = await Promise.race([waitForPort(port, '127.0.0.1', 30_000, exited.signal).then(() => null), coordinator]);
    if (early !== null) return { code: early, message: errors.get('coord') ?? null };
    const workers = Array.from({ length: o.workers }, (_, i) =>
      supervise(`w${i}`, () => ['worker', '--coordinator', `127.0.0.1:${port}`, '--worker-id', `w${i}`, ...secure, ...(o.workerArgs ?? [])], (life) => ({ ...baseEnv, ...(life === 0 ? (o.workerEnv?.(i) ?? {}) : {}) })).then((code) => {
        // A worker out of restarts would leave the others waiting at a barrier forever.
        if (code !== 0 && !stopping) stopAll();
        return code;
      }),
    );
    const coordCode = await coordinator;
    if (coordCode !== 0 && !final) {
      log.error({ code: coordCode }, 'the coordinator failed');
      stopAll();
    }
    // Workers leave on their own after the job ends; give them a moment before taking them down.
    const timer = setTimeout(stopAll, 15_000);
    const codes = await Promise.all(workers);
    clearTimeout(timer);
    const ended = final as { tag: string; code: number } | null;
    // The coordinator's words when it ended the same way (they name the job's reason first-hand).
    if (ended) return { code: ended.code, message: errors.get(coordCode === ended.code ? 'coord' : ended.tag) ?? null };
    const failed = codes.findIndex((c) => c !== 0);
    if (failed >= 0) log.error({ process: `w${failed}`, code: codes[failed] }, 'a worker failed');
    return { code: coordCode !== 0 || failed >= 0 ? 1 : 0, message: coordCode !== 0 ? (errors.get('coord') ?? null) : failed >= 0 ? (errors.get(`w${failed}`) ?? null) : null };
  } finally {
    follower?.stop();
    display?.stop();
    clearTimeout(grace);
    stopAll();
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await nats.stop();
    if (creds) fs.rmSync(creds.dir, { recursive: true, force: true });
  }
}
