// The process's 4-bit frozen weights: each linear weight quantized once, its codes, scales and zero
// points held in one host buffer each and fed to every session (forward, backward, evaluation, teacher,
// stage after stage) as graph inputs. As initializers every session copied them (README "## Memory").
import type { HostTensor } from '../graph/dtype.ts';
import type { Graph } from '../graph/graph.ts';
import { emitDequantize, emitMatMulNBits, nbitsSupports, quantizedFeeds, type Quant4Layout } from '../graph/matmul-nbits.ts';
import { shareWithSessions, unshareWithSessions } from '../graph/session.ts';
import type { QuantizedMatMul, WeightLoader } from '../llama/params.ts';
import { DEFAULT_BLOCK_SIZE, quantize4 } from './quant4.ts';

/**
 * How the graph multiplies by a 4-bit weight:
 *   - 'matmulnbits' (default): com.microsoft MatMulNBits on the packed codes with fp32 accumulation.
 *     Needs a power-of-two block size >= 16.
 *   - 'dequantize': standard ONNX, DequantizeLinear to a float Wq on every run, then MatMul; any even
 *     block size. For forward-only graphs (eval, serving): in a backward graph each layer's Wq stays
 *     alive from its forward use to its backward use, a float-sized peak.
 */
export type Quant4Kernel = 'matmulnbits' | 'dequantize';

export interface Quant4StoreOptions {
  symmetric?: boolean;
  kernel?: Quant4Kernel;
}

interface Held {
  /** Shape and scheme only: with the session thread the buffers themselves have moved there. */
  layout: Quant4Layout;
  bytes: number;
  feeds: Record<string, HostTensor>;
}

export class Quant4Weights implements QuantizedMatMul {
  private readonly held = new Map<string, Held>();
  /** Graph input name → the weight it belongs to. */
  private readonly owner = new Map<string, string>();
  private readonly useNBits: boolean;

  /** `load` reads a weight in float32 once; the float copy is dropped after quantizing. */
  constructor(
    private readonly load: WeightLoader,
    readonly blockSize = DEFAULT_BLOCK_SIZE,
    private readonly opts: Quant4StoreOptions = {},
  ) {
    this.useNBits = (opts.kernel ?? 'matmulnbits') === 'matmulnbits';
    if (this.useNBits && !nbitsSupports(blockSize)) throw new Error(`MatMulNBits needs a power-of-two block size >= 16, not ${blockSize} (or use kernel 'dequantize')`);
  }

  matmul(g: Graph, x: string, name: string, out: number, inp: number): { y: string; inputs: string[] } {
    const { layout, feeds } = this.get(name, out, inp);
    const inputs = Object.keys(feeds);
    if (this.useNBits) return { y: emitMatMulNBits(g, x, name, layout), inputs };
    return { y: g.op('MatMul', [x, g.op('Transpose', [emitDequantize(g, name, layout)], { perm: [1, 0] })]), inputs };
  }

  tensor(input: string): HostTensor {
    const t = this.held.get(this.owner.get(input) ?? '')?.feeds[input];
    if (!t) throw new Error(`4-bit input '${input}' is not held in this process (dropped by retainOnly, or never quantized): build the program after the range's weights are retained`);
    return t;
  }

  /** Lets go of every weight not named in `names` (a rank's new block range); returns how many were dropped. */
  retainOnly(names: ReadonlySet<string>): number {
    let dropped = 0;
    for (const [name, h] of this.held) {
      if (names.has(name)) continue;
      for (const [input, t] of Object.entries(h.feeds)) {
        unshareWithSessions(t);
        this.owner.delete(input);
      }
      this.held.delete(name);
      dropped++;
    }
    return dropped;
  }

  /** Weights held. */
  get weights(): number {
    return this.held.size;
  }

  /** Bytes held (codes, scales, zero points), once each. */
  get bytes(): number {
    let n = 0;
    for (const h of this.held.values()) n += h.bytes;
    return n;
  }

  private get(name: string, out: number, inp: number): Held {
    let h = this.held.get(name);
    if (!h) {
      const q = quantize4(this.load(name), out, inp, { blockSize: this.blockSize, symmetric: this.opts.symmetric });
      // Counted before the session thread may take the buffers.
      const { codes, scales, zeroPoints, ...layout } = q;
      const bytes = codes.byteLength + scales.byteLength + zeroPoints.byteLength;
      const feeds: Record<string, HostTensor> = {};
      for (const [input, t] of Object.entries(quantizedFeeds(name, q))) {
        feeds[input] = shareWithSessions(t);
        this.owner.set(input, name);
      }
      h = { layout, bytes, feeds };
      this.held.set(name, h);
    }
    if (h.layout.out !== out || h.layout.inp !== inp) throw new Error(`${name}: quantized as [${h.layout.out}, ${h.layout.inp}], used as [${out}, ${inp}]`);
    return h;
  }
}
