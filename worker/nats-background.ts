// A worker's NATS connection, made in the background. A worker (re)started while nats-server is down
// must still register and train: every signal NATS carries also reaches it over gRPC (the stage
// fallback at the step barrier, the assignment watch), so NATS only makes them faster. Waiting for
// NATS before registering would turn a NATS outage into a crash loop of every restarted pod.
import type { NatsConnection } from 'nats';
import type { childLog } from '../common/log.ts';
import { closeNats, connectNats } from '../proto/signals.ts';
import type { Security } from '../proto/security.ts';

const RETRY_MS = 1000;

export class BackgroundNats {
  private nc: NatsConnection | null = null;
  private closed = false;
  private timer: NodeJS.Timeout | undefined;
  private attempt: Promise<void> | null = null;

  /** Starts connecting to `url`; `onConnected` runs once, with the first connection made. */
  constructor(private readonly url: string, private readonly name: string, private readonly sec: Security, private readonly log: ReturnType<typeof childLog>, private readonly onConnected: (nc: NatsConnection) => void) {
    this.attempt = this.tryConnect(1);
  }

  private async tryConnect(n: number): Promise<void> {
    try {
      const nc = await connectNats(this.url, this.name, this.sec);
      if (this.closed) return void (await closeNats(nc));
      this.nc = nc;
      if (n > 1) this.log.info({ attempts: n }, 'connected to NATS');
      this.onConnected(nc);
    } catch (err) {
      if (this.closed) return;
      // Once per outage at warn level: the run goes on over gRPC meanwhile.
      if (n === 1) this.log.warn({ nats: this.url, err: (err as Error).message }, 'NATS is unreachable; stage and control signals come over gRPC until it is back (retrying every second)');
      this.timer = setTimeout(() => (this.attempt = this.tryConnect(n + 1)), RETRY_MS);
      this.timer.unref();
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.timer);
    await this.attempt;
    if (this.nc) await closeNats(this.nc);
  }
}
