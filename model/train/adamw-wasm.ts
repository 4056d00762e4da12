// AdamW's moments kept in a WebAssembly memory and updated by the SIMD kernel of adamw-kernel.ts.
// The moments stay resident (they are only read by checkpoints); a step copies the parameter and
// its gradient into scratch space after them, runs the kernel, and copies the parameter back — three
// memcpy-speed passes instead of the JS loop's two scalar float64 divisions and square root per
// element. Measured in bench/adamw-kernel.ts.
/// <reference path="./wasm-globals.d.ts" />
import { ADAMW_WASM } from './adamw-kernel.ts';

/** The per-update constants of adamw.ts's loop (bias corrections folded in). */
export interface AdamWStep {
  scale: number;
  beta1: number;
  g1: number;
  beta2: number;
  g2: number;
  keep: number;
  stepSize: number;
  invRootC2: number;
  eps: number;
}

interface Exports {
  adamw(p: number, g: number, m: number, v: number, bytes: number, ...c: number[]): void;
  sumsq(g: number, bytes: number, acc: number): void;
}

const PAGE = 65536;
/** The first bytes hold sumsq's four float64 running sums. */
const RESERVED = 64;
const align16 = (n: number) => (n + 15) & ~15;
/** Floats per chunk of an update (a multiple of 4): 128 KiB each for the parameter and the gradient. */
const CHUNK = 32768;

export class AdamWKernel {
  private top = RESERVED;
  /** Set when moments did not fit once: later tensors are not tried again on every update. */
  private full = false;

  private constructor(
    private readonly memory: WebAssembly.Memory,
    private readonly k: Exports,
  ) {}

  /** The kernel, or null where this runtime has no WebAssembly SIMD; `maxBytes` caps its memory (tests). */
  static create(maxBytes?: number): AdamWKernel | null {
    if (typeof WebAssembly === 'undefined' || !WebAssembly.validate(ADAMW_WASM)) return null;
    const memory = new WebAssembly.Memory({ initial: 1, maximum: maxBytes === undefined ? undefined : Math.max(1, Math.floor(maxBytes / PAGE)) });
    const instance = new WebAssembly.Instance(new WebAssembly.Module(ADAMW_WASM), { env: { memory } });
    return new AdamWKernel(memory, instance.exports as unknown as Exports);
  }

  f32(offset: number, length: number): Float32Array {
    return new Float32Array(this.memory.buffer, offset, length);
  }

  /** Makes the memory at least `end` bytes; false when it cannot grow that far (wasm32: 4 GiB). */
  private reserve(end: number): boolean {
    const have = this.memory.buffer.byteLength;
    if (end <= have) return true;
    try {
      this.memory.grow(Math.ceil((end - have) / PAGE));
      return true;
    } catch {
      return false;
    }
  }

  /** Zeroed moments for `length` floats, or null when the memory is full (the caller keeps them in JS). */
  allocMoments(length: number, t: number): KernelMoments | null {
    if (this.full) return null;
    const m = align16(this.top);
    const v = align16(m + length * 4);
    const end = v + length * 4;
    if (!this.reserve(end)) {
      this.full = true;
      return null;
    }
    this.top = end;
    // The space may have been an earlier update's scratch.
    new Uint8Array(this.memory.buffer, m, end - m).fill(0);
    return new KernelMoments(this, m, v, length, t);
  }

  /**
   * One update of the first length & ~3 floats, in chunks: the scratch space stays small (two chunks)
   * and a chunk copied in is still in cache when the kernel reads it. False (nothing changed) when
   * even the scratch space does not fit.
   */
  update(s: KernelMoments, param: Float32Array, grad: Float32Array, c: AdamWStep): boolean {
    const p = align16(this.top);
    const g = p + CHUNK * 4;
    if (!this.reserve(g + CHUNK * 4)) return false;
    const n4 = param.length & ~3;
    const ps = this.f32(p, CHUNK);
    const gs = this.f32(g, CHUNK);
    for (let from = 0; from < n4; from += CHUNK) {
      const n = Math.min(CHUNK, n4 - from);
      ps.set(param.subarray(from, from + n));
      gs.set(grad.subarray(from, from + n));
      this.k.adamw(p, g, s.mOffset + from * 4, s.vOffset + from * 4, n * 4, c.scale, c.beta1, c.g1, c.beta2, c.g2, c.keep, c.stepSize, c.invRootC2, c.eps);
      param.set(n === CHUNK ? ps : ps.subarray(0, n), from);
    }
    return true;
  }

  /** sumOfSquares of adamw.ts through the kernel (the same order of additions), grads copied in by chunks. */
  sumOfSquares(grads: Iterable<Float32Array>): number | null {
    const g = align16(this.top);
    if (!this.reserve(g + CHUNK * 4)) return null;
    const acc = new Float64Array(this.memory.buffer, 0, 4);
    acc.fill(0);
    const gs = this.f32(g, CHUNK);
    for (const gr of grads) {
      const n4 = gr.length & ~3;
      for (let from = 0; from < n4; from += CHUNK) {
        const n = Math.min(CHUNK, n4 - from);
        gs.set(gr.subarray(from, from + n));
        this.k.sumsq(g, n * 4, 0);
      }
      // The few floats past the last multiple of 4 go into the first sum, as in adamw.ts.
      for (let i = n4; i < gr.length; i++) acc[0] += gr[i] * gr[i];
    }
    return acc[0] + acc[1] + acc[2] + acc[3];
  }
}

/** Moments resident in the kernel's memory; views are made on access (growing the memory detaches old ones). */
export class KernelMoments {
  constructor(
    private readonly kernel: AdamWKernel,
    readonly mOffset: number,
    readonly vOffset: number,
    readonly length: number,
    public t: number,
  ) {}

  get m(): Float32Array {
    return this.kernel.f32(this.mOffset, this.length);
  }

  get v(): Float32Array {
    return this.kernel.f32(this.vOffset, this.length);
  }
}
