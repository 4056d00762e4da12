// Frames that arrived before the executor asked for them wait here, keyed by (kind, step, micro-batch)
// within the rank's assignment epoch: a frame of an earlier assignment is dropped, one of a later
// assignment (a neighbour that got there first) waits until this rank starts that assignment.
import type { FrameKind } from '../proto/messages.ts';
import type { InFrame } from '../proto/frames.ts';

type Waiter = { resolve: (f: InFrame) => void; reject: (e: Error) => void };

export class Mailbox {
  private readonly frames = new Map<string, InFrame>();
  private readonly waiters = new Map<string, Waiter>();
  private failure: Error | null = null;
  private readonly failListeners = new Set<(e: Error) => void>();
  /** The assignment epoch this rank runs; frames are taken from it only. */
  private epoch = 0;

  private static key(kind: FrameKind, step: number, mb: number, epoch: number): string {
    return `${kind}:${step}:${mb}@${epoch}`;
  }

  deliver(f: InFrame): void {
    if (f.epoch < this.epoch) return;
    const k = Mailbox.key(f.kind, f.step, f.microBatch, f.epoch);
    const w = this.waiters.get(k);
    if (w) {
      this.waiters.delete(k);
      w.resolve(f);
    } else this.frames.set(k, f);
  }

  take(kind: FrameKind, step: number, mb: number): Promise<InFrame> {
    const k = Mailbox.key(kind, step, mb, this.epoch);
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
    this.failListeners.forEach((l) => l(err));
  }

  /**
   * `p`, unless the mailbox fails first: a rank's other waits (for the stream of the rank below, for a
   * neighbour to drain) end with the step too, instead of outliving a re-assignment.
   */
  until<T>(p: Promise<T>): Promise<T> {
    if (this.failure) return Promise.reject(this.failure);
    return new Promise<T>((resolve, reject) => {
      this.failListeners.add(reject);
      p.then(resolve, reject).finally(() => this.failListeners.delete(reject));
    });
  }

  /** Starts assignment `epoch`: forgets the failure and the frames of earlier assignments, keeps the rest. */
  reset(epoch = this.epoch): void {
    this.failure = null;
    this.epoch = epoch;
    for (const [k, f] of this.frames) if (f.epoch < epoch) this.frames.delete(k);
  }
}
