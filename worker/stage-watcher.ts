// A worker's view of stage transitions: it learns at the step barrier which stage the next step runs,
// then waits for that stage's NATS signal (the freeze mask) before building anything. A signal that
// is late or lost delays this rank; it never lets it run a step with a stale mask.
import type { NatsConnection, Subscription } from 'nats';
import { codec, subjects, type ControlSignal, type StageSignal } from '../proto/signals.ts';
import { childLog } from '../common/log.ts';

const log = childLog({ component: 'stage-watcher' });

export class StageWatcher {
  private readonly seen = new Map<number, StageSignal>();
  private readonly waiters = new Map<number, ((s: StageSignal) => void)[]>();
  private readonly subs: Subscription[] = [];
  /** Called for every control signal (reassign, stop, abort). */
  onControl: (sig: ControlSignal) => void = () => undefined;

  /**
   * Without a NATS connection the watcher is fed by `deliver` alone (the single-process run, or a
   * worker whose NATS is not up yet: `attach` subscribes once it is).
   * `delayMs` holds every delivery back (a test hook that simulates a slow NATS link to this rank).
   */
  constructor(nc: NatsConnection | null, private readonly jobId: string, private readonly delayMs = 0) {
    if (nc) this.attach(nc);
  }

  attach(nc: NatsConnection): void {
    const sub = nc.subscribe(subjects(this.jobId).stage);
    const control = nc.subscribe(subjects(this.jobId).control);
    this.subs.push(sub, control);
    void (async () => {
      for await (const m of sub) {
        const sig = codec.decode(m.data) as StageSignal;
        if (this.delayMs > 0) await new Promise((r) => setTimeout(r, this.delayMs));
        this.deliver(sig, 'nats');
      }
    })();
    void (async () => {
      for await (const m of control) this.onControl(codec.decode(m.data) as ControlSignal);
    })();
  }

  deliver(sig: StageSignal, via: 'nats' | 'grpc' | 'memory'): void {
    if (this.seen.has(sig.stage)) return;
    this.seen.set(sig.stage, sig);
    log.debug({ stage: sig.stage, effectiveStep: sig.effectiveStep, via }, 'stage signal');
    this.waiters.get(sig.stage)?.forEach((w) => w(sig));
    this.waiters.delete(sig.stage);
  }

  /** The signal of `stage`; after `timeoutMs` without it, asks `fallback` (the coordinator over gRPC). */
  async waitFor(stage: number, timeoutMs: number, fallback: () => Promise<StageSignal>): Promise<{ signal: StageSignal; waitedMs: number; via: string }> {
    const t0 = performance.now();
    const known = this.seen.get(stage);
    if (known) return { signal: known, waitedMs: 0, via: 'nats' };
    const viaNats = new Promise<StageSignal>((resolve) => this.waiters.set(stage, [...(this.waiters.get(stage) ?? []), resolve]));
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<null>((resolve) => (timer = setTimeout(() => resolve(null), timeoutMs)));
    const got = await Promise.race([viaNats, timeout]);
    clearTimeout(timer);
    if (got) return { signal: got, waitedMs: performance.now() - t0, via: 'nats' };
    log.warn({ stage, timeoutMs }, 'stage signal not received over NATS in time; asking the coordinator');
    const sig = await fallback();
    if (sig.stage !== stage) throw new Error(`the coordinator reports stage ${sig.stage}, the step barrier said ${stage}`);
    this.deliver(sig, 'grpc');
    return { signal: sig, waitedMs: performance.now() - t0, via: 'grpc' };
  }

  close(): void {
    this.subs.forEach((s) => s.unsubscribe());
  }
}
