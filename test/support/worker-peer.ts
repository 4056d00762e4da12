// A real `propipe worker` waiting for a coordinator that is not there: its peer service (either data
// plane) is up meanwhile, so tests can send it frames.
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import readline from 'node:readline';

const BIN = path.resolve(import.meta.dirname, '../../bin/propipe.mjs');

/** A real `propipe worker` (its peer service is up while it waits for a coordinator) and its peer address. */
export async function workerPeer(env: Record<string, string>): Promise<{ address: string; child: ChildProcess }> {
  const child = spawn(process.execPath, [BIN, 'worker', '--coordinator', '127.0.0.1:1', '--worker-id', 'size-test'], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, PROPIPE_LOG_JSON: '1', PROPIPE_LOG_LEVEL: 'info', ...env } });
  const address = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('the worker did not log its peer address within 20 s')), 20_000);
    readline.createInterface({ input: child.stderr! }).on('line', (l) => {
      const peer = l.includes('"msg":"registering"') ? (JSON.parse(l) as { peer?: string }).peer : undefined;
      if (peer) {
        clearTimeout(timer);
        resolve(peer);
      }
    });
    child.once('exit', (code) => reject(new Error(`the worker exited (${code}) before serving`)));
  });
  return { address, child };
}
