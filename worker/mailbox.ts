// Frames that arrived before the executor asked for them wait here, keyed by (kind, step, micro-batch).
import type { FrameKind } from '../proto/messages.ts';
import type { InFrame } from '../proto/frames.ts';

type Waiter = { resolve: (f: InFrame) => void; reject: (e: Error) => void };

export class Mailbox {
  private readonly frames = new Map<string, InFrame>();
  private readonly waiters = new Map<string, Waiter>();
  private failure: Error | null = null;

  private static key(kind: FrameKind, step: number, mb: number): string {
    return `${kind}:${step}:${mb}`;
  }

  deliver(f: InFrame): void {
    const k = Mailbox.key(f.kind, f.step, f.microBatch);
    const w = this.waiters.get(k);
    if (w) {
      this.waiters.delete(k);
      w.resolve(f);
    } else this.frames.set(k, f);
  }

  take(kind: FrameKind, step: number, mb: number): Promise<InFrame> {
    const k = Mailbox.key(kind, step, mb);
    const f = this.frames.get(k);
    if (f) {
      this.frames.delete(k);
      return Promise.resolve(f);
    }
    if (this.failure) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => this.waiters.set(k, { resolve, reject }));
  }

  /** A broken link fails every pending and future wait until `reset`. */
  fail(err: Error): void {
    this.failure = err;
    for (const w of this.waiters.values()) w.reject(err);
    this.waiters.clear();
  }

  reset(): void {
    this.failure = null;
    this.frames.clear();
  }
}
