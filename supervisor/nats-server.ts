// A local nats-server for `propipe launch` (and the tools it needs): from the PATH, or installed with
// apt-get when running as root on Debian/Ubuntu; otherwise a clear message saying how to get them.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import net from 'node:net';
import { childLog } from '../common/log.ts';

const log = childLog({ component: 'nats-server' });

function onPath(cmd: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;
}

/** A command from the PATH, installed with apt-get when missing and running as root on Debian/Ubuntu. */
export function ensureCommand(cmd: string, pkg: string, hint: string): string {
  if (onPath(cmd)) return cmd;
  const root = typeof process.getuid === 'function' && process.getuid() === 0;
  if (root && onPath('apt-get')) {
    log.info({ cmd, pkg }, `${cmd} is not installed; installing ${pkg} with apt-get`);
    const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
    spawnSync('apt-get', ['update', '-qq'], { stdio: 'inherit', env });
    const r = spawnSync('apt-get', ['install', '-y', '-qq', pkg], { stdio: 'inherit', env });
    if (r.status === 0 && onPath(cmd)) return cmd;
  }
  throw new Error(`${cmd} was not found on the PATH. ${hint}`);
}

export function ensureNatsServer(): string {
  return ensureCommand('nats-server', 'nats-server', 'Install it (Debian/Ubuntu: sudo apt-get install nats-server; elsewhere: https://docs.nats.io) or point --nats at a running server');
}

export async function freePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, host, () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(port));
    });
  });
}

/** Resolves once something listens on host:port, or as soon as `stop` is aborted (the caller gave up). */
export async function waitForPort(port: number, host = '127.0.0.1', timeoutMs = 10_000, stop?: AbortSignal): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!stop?.aborted) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect(port, host, () => {
        s.end();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > until) throw new Error(`nothing listens on ${host}:${port} after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export interface NatsServerProcess {
  url: string;
  port: number;
  /** What it was started with (a restart on the same port takes the same). */
  options: NatsServerOptions;
  child: ChildProcess;
  stop(): Promise<void>;
}

export interface NatsServerOptions {
  port?: number;
  user?: string;
  pass?: string;
  /** PEM certificate and key files: clients must speak TLS (the URL is tls://). */
  tls?: { cert: string; key: string };
}

export async function startNatsServer(opts: NatsServerOptions = {}): Promise<NatsServerProcess> {
  const bin = ensureNatsServer();
  const port = opts.port ?? (await freePort());
  const args = ['-a', '127.0.0.1', '-p', String(port)];
  if (opts.user && opts.pass) args.push('--user', opts.user, '--pass', opts.pass);
  if (opts.tls) args.push('--tls', '--tlscert', opts.tls.cert, '--tlskey', opts.tls.key);
  const child = spawn(bin, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let said = '';
  child.stderr?.on('data', (d: Buffer) => (said = (said + d.toString()).slice(-2000)));
  // A server that exits at once (the port taken, a bad certificate) says why instead of a 10 s wait.
  const gone = new AbortController();
  const exited = new Promise<never>((_, reject) =>
    child.once('exit', (code) => {
      gone.abort();
      reject(new Error(`nats-server exited with code ${code} before listening on 127.0.0.1:${port}: ${said.trim().split('\n').slice(-3).join(' | ') || 'no output'}`));
    }),
  );
  exited.catch(() => undefined);
  try {
    await Promise.race([waitForPort(port, '127.0.0.1', 10_000, gone.signal), exited]);
  } catch (err) {
    child.kill('SIGKILL');
    throw err;
  }
  if (gone.signal.aborted) await exited;
  return {
    // Credentials ride in the URL, which only travels to workers over the job's TLS channel.
    url: `${opts.tls ? 'tls' : 'nats'}://${opts.user && opts.pass ? `${opts.user}:${opts.pass}@` : ''}127.0.0.1:${port}`,
    port,
    options: opts,
    child,
    stop: async () => {
      if (child.exitCode !== null) return;
      child.kill('SIGTERM');
      await new Promise((r) => child.once('exit', r));
    },
  };
}
