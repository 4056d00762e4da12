// Credentials of a job: a CA, one certificate for every service of the job (for a local run: SAN
// 127.0.0.1, localhost, valid 2 days), a bearer token and NATS user/password, under a private directory.
import crypto from 'node:crypto';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { ensureCommand } from './nats-server.ts';

export interface LocalCredentials {
  dir: string;
  tlsCert: string;
  tlsKey: string;
  tlsCa: string;
  tokenFile: string;
  natsUser: string;
  natsPass: string;
}

function openssl(args: string[], cwd: string): void {
  const r = spawnSync('openssl', args, { cwd, encoding: 'utf8' });
  if (r.error || r.status !== 0) throw new Error(`openssl ${args[0]} failed (${r.error?.message ?? r.stderr.trim()}); install openssl or run with --insecure`);
}

/** Certificate names and lifetime: local runs by default; `propipe k8s secrets` passes the cluster's service names. */
export interface CredentialNames {
  sans: string[];
  days: number;
}

export function makeLocalCredentials(dir: string, names: CredentialNames = { sans: ['IP:127.0.0.1', 'DNS:localhost'], days: 2 }): LocalCredentials {
  ensureCommand('openssl', 'openssl', 'Install openssl (Debian/Ubuntu: sudo apt-get install openssl) or run with --insecure');
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  openssl(['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', String(names.days), '-subj', '/CN=propipe CA', '-keyout', 'ca.key', '-out', 'ca.crt'], dir);
  openssl(['req', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=localhost', '-keyout', 'node.key', '-out', 'node.csr'], dir);
  fs.writeFileSync(path.join(dir, 'san.cnf'), `subjectAltName=${names.sans.join(',')}\nextendedKeyUsage=serverAuth,clientAuth\n`);
  openssl(['x509', '-req', '-in', 'node.csr', '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-days', String(names.days), '-extfile', 'san.cnf', '-out', 'node.crt'], dir);
  const tokenFile = path.join(dir, 'token');
  fs.writeFileSync(tokenFile, crypto.randomBytes(24).toString('hex'), { mode: 0o600 });
  return {
    dir,
    tlsCert: path.join(dir, 'node.crt'),
    tlsKey: path.join(dir, 'node.key'),
    tlsCa: path.join(dir, 'ca.crt'),
    tokenFile,
    natsUser: 'propipe',
    natsPass: crypto.randomBytes(16).toString('hex'),
  };
}
