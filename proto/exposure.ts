// Secure by default: a service reachable from other machines must not be open to anyone who can reach
// it. A coordinator or worker listening on a non-loopback address needs TLS and a bearer token; a NATS
// URL on a non-loopback host needs credentials (user:pass@ or token@; tls:// adds TLS, which the
// Kubernetes manifests leave to the cluster network). `--insecure` accepts the risk on a network the
// user trusts.
import type { Security } from './security.ts';

export class ExposureError extends Error {
  /** A usage error: the CLI exits 2, and supervisors do not restart it. */
  readonly exitCode = 2;
  constructor(message: string) {
    super(message);
    this.name = 'ExposureError';
  }
}

/** 127.0.0.0/8, ::1 and localhost; anything else (0.0.0.0, ::, a pod IP, a name) may be reached from outside. */
export function isLoopback(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, '').toLowerCase();
  return h === 'localhost' || h === '::1' || /^127(\.\d{1,3}){3}$/.test(h) || h === '::ffff:127.0.0.1';
}

/** Refuses to serve `what` on a non-loopback `host` without TLS and a token, unless `insecure`. */
export function checkListener(what: string, host: string, sec: Security, insecure: boolean): void {
  if (insecure || isLoopback(host)) return;
  const missing = [!sec.tls && 'TLS (--tls-cert, --tls-key, --tls-ca)', !sec.token && 'a bearer token (--token-file or PROPIPE_TOKEN)'].filter(Boolean);
  if (missing.length === 0) return;
  throw new ExposureError(`refusing to serve the ${what} on ${host} without ${missing.join(' and ')}: anyone who reaches that address could join or drive the job. Give them, listen on 127.0.0.1, or pass --insecure on a network you trust`);
}

/** Refuses a NATS URL on a non-loopback host without credentials, unless `insecure`. */
export function checkNatsUrl(url: string, insecure: boolean): void {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new ExposureError(`--nats '${url}' is not a URL (expected nats://[user:pass@]host:port or tls://...)`);
  }
  if (insecure || isLoopback(u.hostname)) return;
  if (u.username) return;
  throw new ExposureError(`refusing NATS at ${u.host} without credentials (user:pass@ or token@ in the URL; tls:// for TLS): anyone on that network could send stage and control signals to the job. Give them, or pass --insecure on a network you trust`);
}
