// TLS and token flags shared by `propipe coordinator` and `propipe worker`.
import { loadSecurity, type Security } from '../proto/security.ts';
import type { Flags, FlagSpecs } from './args.ts';

export const SECURITY_FLAGS: FlagSpecs = {
  'tls-cert': { type: 'string', description: 'PEM certificate of this process (TLS on every gRPC channel)' },
  'tls-key': { type: 'string', description: 'PEM private key of --tls-cert' },
  'tls-ca': { type: 'string', description: 'PEM CA that signed the peers’ certificates' },
  mtls: { type: 'boolean', description: 'mutual TLS: require and present client certificates' },
  'token-file': { type: 'string', description: 'file with the job’s bearer token, checked on every call (or set PROPIPE_TOKEN)' },
  insecure: { type: 'boolean', description: 'allow a non-loopback --host (or NATS URL) without TLS and a token, on a network you trust' },
};

export function securityOptions(f: Flags): Security {
  return loadSecurity({ tlsCert: f.str('tls-cert'), tlsKey: f.str('tls-key'), tlsCa: f.str('tls-ca'), mutual: f.bool('mtls'), tokenFile: f.str('token-file') });
}
