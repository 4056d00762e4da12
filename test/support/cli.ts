// Runs the real `propipe` binary in a child process, as a user would.
import { spawnSync } from 'node:child_process';
import path from 'node:path';

const BIN = path.resolve(import.meta.dirname, '../../bin/propipe.mjs');

export interface CliResult {
  status: number;
  stdout: string;
  stderr: string;
}

export function propipe(args: string[], env: Record<string, string> = {}): CliResult {
  const r = spawnSync(process.execPath, [BIN, ...args], {
    encoding: 'utf8',
    env: { ...process.env, PROPIPE_LOG_JSON: '1', ...env },
    timeout: 300_000,
  });
  return { status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}
