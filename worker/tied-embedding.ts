// A trainable tied embedding split over the first and the last rank, as Megatron's embedding group:
// rank 0 gathers rows of it, the last rank uses it as the LM head. Both hold it; after each step they
// exchange their gradients of it and both sum them in the same order, so the two copies take the same
// AdamW update and stay bit-identical. The sum counts once in the global gradient norm (on rank 0),
// and the export writes the tensor once (export-ranks.ts: rank 0 owns it).
import type { OutFrame } from '../proto/frames.ts';
import type { Mailbox } from './mailbox.ts';
import { fromWire } from './wire-dtype.ts';
import type { RankTransport } from './assignment.ts';

export const EMBEDDING = 'model.embed_tokens.weight';

/** How this rank reaches the other holder of the embedding. */
export interface TiedPeer {
  send(f: OutFrame): Promise<void>;
  close(): void;
}

/**
 * The link to the other holder. With two ranks it is the pipeline's own link (up from rank 0, down
 * from rank 1); with more, the last rank opens a stream to rank 0's Peer service, which rank 0 answers
 * on (it has no rank below, so that stream is its "below").
 */
export function tiedPeer(o: {
  rank: number;
  worldSize: number;
  firstPeer: string;
  up: ((f: OutFrame) => Promise<void>) | undefined;
  transport: Pick<RankTransport, 'sendDown' | 'linkUp'>;
}): () => TiedPeer {
  const none = () => undefined;
  const down = (f: OutFrame) => o.transport.sendDown(f);
  if (o.rank === 0) return () => ({ send: o.worldSize === 2 ? o.up! : down, close: none });
  if (o.worldSize === 2) return () => ({ send: down, close: none });
  if (!o.firstPeer) throw new Error('the last rank holds the tied embedding but its assignment names no first rank to exchange its gradient with; coordinator and worker run different propipe versions: update both');
  return () => {
    const link = o.transport.linkUp(o.firstPeer)!;
    return { send: (f) => link.sendUp(f), close: () => link.close() };
  };
}

export class TiedEmbedding {
  constructor(
    /** True on rank 0, false on the last rank. */
    private readonly first: boolean,
    private readonly shape: number[],
    private readonly mailbox: Mailbox,
    /** Opened on first use: by then the other rank has taken its assignment (its activations or gradients arrived). */
    private readonly connect: () => TiedPeer,
  ) {}

  private peer: TiedPeer | null = null;

  /**
   * Replaces this rank's embedding gradient in `grads` by the sum of both ranks' (first rank's part
   * plus last rank's, on both). Without an embedding gradient (it does not train in this stage, on
   * either rank: both read the same stage plan) there is nothing to exchange.
   */
  async exchange(step: number, grads: Map<string, Float32Array>): Promise<void> {
    const mine = grads.get(EMBEDDING);
    if (!mine) return;
    this.peer ??= this.connect();
    await this.peer.send({ kind: 'EMBED_GRAD', step, microBatch: 0, tensor: { dtype: 'float32', shape: this.shape, data: mine } });
    const frame = await this.mailbox.take('EMBED_GRAD', step, 0);
    const theirs = fromWire(frame.tensor, `the tied embedding gradient of step ${step}`);
    if (theirs.length !== mine.length) throw new Error(`the tied embedding gradient of step ${step} has ${theirs.length} values, expected ${mine.length}: the first and the last rank disagree on the model`);
    const [a, b] = this.first ? [mine, theirs] : [theirs, mine];
    const sum = new Float32Array(mine.length);
    for (let i = 0; i < sum.length; i++) sum[i] = a[i] + b[i];
    grads.set(EMBEDDING, sum);
  }

  /** The gradients this rank adds to the global norm: the shared one counts on rank 0 only. */
  normed(grads: ReadonlyMap<string, Float32Array>): Iterable<Float32Array> {
    return this.first ? grads.values() : [...grads].filter(([n]) => n !== EMBEDDING).map(([, g]) => g);
  }

  close(): void {
    this.peer?.close();
    this.peer = null;
  }
}
