// Access to a job: TLS on every gRPC channel (server certificates, optionally mutual) and a per-job
// bearer token checked on every call. A call without the right token gets UNAUTHENTICATED and changes
// nothing.
import crypto from 'node:crypto';
import fs from 'node:fs';
import * as grpc from '@grpc/grpc-js';

export interface Security {
  token?: string;
  tls?: { cert: Buffer; key: Buffer; ca: Buffer; mutual: boolean };
}

export interface SecurityFiles {
  tlsCert?: string;
  tlsKey?: string;
  tlsCa?: string;
  mutual?: boolean;
  tokenFile?: string;
}

function read(file: string, what: string): Buffer {
  try {
    return fs.readFileSync(file);
  } catch (err) {
    throw new Error(`cannot read the ${what} ${file}: ${(err as Error).message}`);
  }
}

export function loadSecurity(f: SecurityFiles): Security {
  const sec: Security = {};
  const token = f.tokenFile ? read(f.tokenFile, 'token file').toString('utf8').trim() : process.env.PROPIPE_TOKEN;
  if (token) sec.token = token;
  const given = [f.tlsCert, f.tlsKey, f.tlsCa].filter(Boolean).length;
  if (given > 0 && given < 3) throw new Error('TLS needs --tls-cert, --tls-key and --tls-ca together');
  if (given === 3) sec.tls = { cert: read(f.tlsCert!, 'TLS certificate'), key: read(f.tlsKey!, 'TLS key'), ca: read(f.tlsCa!, 'TLS CA certificate'), mutual: !!f.mutual };
  return sec;
}

export function serverCredentials(sec: Security): grpc.ServerCredentials {
  if (!sec.tls) return grpc.ServerCredentials.createInsecure();
  return grpc.ServerCredentials.createSsl(sec.tls.ca, [{ private_key: sec.tls.key, cert_chain: sec.tls.cert }], sec.tls.mutual);
}

export function channelCredentials(sec: Security): grpc.ChannelCredentials {
  if (!sec.tls) return grpc.credentials.createInsecure();
  return sec.tls.mutual ? grpc.credentials.createSsl(sec.tls.ca, sec.tls.key, sec.tls.cert) : grpc.credentials.createSsl(sec.tls.ca);
}

export function callMetadata(sec: Security): grpc.Metadata {
  const md = new grpc.Metadata();
  if (sec.token) md.set('authorization', `Bearer ${sec.token}`);
  return md;
}

/**
 * null when `authorization` ("Bearer <token>", as gRPC metadata or the data plane's hello carries it)
 * holds the job's token, or the job has none; 'wrong' or 'missing' otherwise. Compared in constant time.
 */
export function tokenRefusal(sec: Security, authorization: string): 'wrong' | 'missing' | null {
  if (!sec.token) return null;
  const got = Buffer.from(authorization);
  const want = Buffer.from(`Bearer ${sec.token}`);
  if (got.length === want.length && crypto.timingSafeEqual(got, want)) return null;
  return authorization ? 'wrong' : 'missing';
}

/** null when the call may proceed; an UNAUTHENTICATED error otherwise. */
export function checkToken(sec: Security, md: grpc.Metadata): grpc.ServiceError | null {
  const refused = tokenRefusal(sec, String(md.get('authorization')[0] ?? ''));
  if (!refused) return null;
  return { code: grpc.status.UNAUTHENTICATED, details: refused === 'wrong' ? 'wrong bearer token' : 'missing bearer token (authorization metadata)' } as grpc.ServiceError;
}
