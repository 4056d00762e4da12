// The job's Secrets: TLS material (one CA, one certificate whose names cover the coordinator Service
// and every worker under the headless Service) and the bearer token with the NATS password. Made
// locally with openssl, applied once with `kubectl apply -f`, never committed.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { makeLocalCredentials } from '../../supervisor/credentials.ts';
import type { K8sObject } from './manifests.ts';
import { NAMES, serviceNames } from './names.ts';

export interface SecretOptions {
  namespace: string;
  /** Certificate lifetime: it must outlast the job (a fine-tune with restarts can take days). */
  days?: number;
}

const b64 = (file: string) => fs.readFileSync(file).toString('base64');
const metadata = (name: string, namespace?: string) => ({ name, ...(namespace ? { namespace } : {}), labels: { 'app.kubernetes.io/name': 'propipe', 'app.kubernetes.io/component': 'credentials' } });

/** The Secrets' names and keys without values: what the wiring checks hold the manifests against. */
export function secretShapes(namespace?: string): K8sObject[] {
  return [
    { apiVersion: 'v1', kind: 'Secret', metadata: metadata(NAMES.tlsSecret, namespace), type: 'Opaque', data: { 'tls.crt': '', 'tls.key': '', 'ca.crt': '' } },
    { apiVersion: 'v1', kind: 'Secret', metadata: metadata(NAMES.authSecret, namespace), type: 'Opaque', data: { token: '', 'nats-password': '' } },
  ];
}

export function makeJobSecrets(o: SecretOptions): K8sObject[] {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'propipe-k8s-secrets-'));
  try {
    const c = makeLocalCredentials(dir, { sans: serviceNames(o.namespace).map((n) => `DNS:${n}`), days: o.days ?? 90 });
    const values: Record<string, string> = { 'tls.crt': b64(c.tlsCert), 'tls.key': b64(c.tlsKey), 'ca.crt': b64(c.tlsCa), token: b64(c.tokenFile), 'nats-password': Buffer.from(c.natsPass).toString('base64') };
    return secretShapes(o.namespace).map((s) => ({ ...s, data: Object.fromEntries(Object.keys(s.data as object).map((k) => [k, values[k]])) }));
  } finally {
    // The CA key goes with the directory: a new job gets new secrets rather than more certificates.
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
