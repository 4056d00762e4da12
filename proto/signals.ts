// Control signals on NATS (part of the wire contract), per job: stage transitions, early stop, stop/abort. Workers also learn the
// stage at the step barrier, so a late NATS message delays a rank instead of letting it run stale.
import { isIP } from 'node:net';
import { connect, JSONCodec, type NatsConnection } from 'nats';
import type { FreezeMask } from '../recipe/freeze-mask.ts';
import type { Security } from './security.ts';

export interface StageSignal {
  stage: number;
  effectiveStep: number;
  trainable: string[];
  mask: FreezeMask;
}

export interface EarlyStopSignal {
  stage: number;
  step: number;
  best: number | null;
}

export interface ControlSignal {
  /** reassign: every rank drops its step and registers again (a rank failed). */
  command: 'stop' | 'abort' | 'reassign';
  reason: string;
  /** The assignment epoch the command leads to. */
  epoch?: number;
  /** The coordinator process that sent it; a restarted coordinator has a new one. */
  incarnation?: string;
}

export function subjects(jobId: string) {
  return { stage: `propipe.${jobId}.stage`, earlyStop: `propipe.${jobId}.early_stop`, control: `propipe.${jobId}.control` };
}

export const codec = JSONCodec<unknown>();

/** Flushes and closes, but never waits long for a NATS server that is gone. */
export async function closeNats(nc: NatsConnection, timeoutMs = 2000): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<void>((r) => (timer = setTimeout(r, timeoutMs)));
  await Promise.race([nc.drain().catch(() => undefined), timeout]);
  clearTimeout(timer);
  if (!nc.isClosed()) await nc.close().catch(() => undefined);
}

/**
 * Connects to NATS; `nats://user:pass@host:port` or `nats://token@host:port` carry the credentials, and
 * `tls://` requires TLS, verified against the job's CA (and presenting this process's certificate
 * under mutual TLS) when it has one, else the system's CAs.
 */
export async function connectNats(url: string, name: string, sec: Security = {}): Promise<NatsConnection> {
  const u = new URL(url);
  const auth = u.password ? { user: decodeURIComponent(u.username), pass: decodeURIComponent(u.password) } : u.username ? { token: decodeURIComponent(u.username) } : {};
  // An IP is checked against the certificate's IP names without SNI (Node refuses an IP as server name).
  const sni = isIP(u.hostname.replace(/^\[|\]$/g, '')) ? { servername: '' } : {};
  const tls = u.protocol === 'tls:' ? { tls: { ...sni, ...(sec.tls ? { ca: sec.tls.ca.toString(), ...(sec.tls.mutual ? { cert: sec.tls.cert.toString(), key: sec.tls.key.toString() } : {}) } : {}) } } : {};
  const servers = u.protocol === 'tls:' ? u.host : `${u.protocol}//${u.host}`;
  return connect({ servers, name, maxReconnectAttempts: -1, reconnectTimeWait: 250, ...auth, ...tls });
}

export class SignalPublisher {
  private readonly s: ReturnType<typeof subjects>;

  constructor(private readonly nc: NatsConnection, jobId: string) {
    this.s = subjects(jobId);
  }

  stage(sig: StageSignal): void {
    this.nc.publish(this.s.stage, codec.encode(sig));
  }

  earlyStop(sig: EarlyStopSignal): void {
    this.nc.publish(this.s.earlyStop, codec.encode(sig));
  }

  control(sig: ControlSignal): void {
    this.nc.publish(this.s.control, codec.encode(sig));
  }

  async close(): Promise<void> {
    await closeNats(this.nc);
  }
}
