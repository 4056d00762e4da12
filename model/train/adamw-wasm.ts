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

export class AdamWKernel {
  private top = RESERVED;

  private constructor(
    private readonly memory: WebAssembly.Memory,
    private readonly k: Exports,
  ) {}

  /** The kernel, or null where this runtime has no WebAssembly SIMD. */
  static create(): AdamWKernel | null {
    if (typeof WebAssembly === 'undefined' || !WebAssembly.validate(ADAMW_WASM)) return null;
    const memory = new WebAssembly.Memory({ initial: 1 });
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
    const m = align16(this.top);
    const v = align16(m + length * 4);
    const end = v + length * 4;
    if (!this.reserve(end)) return null;
    this.top = end;
    // The space may have been an earlier update's scratch.
    new Uint8Array(this.memory.buffer, m, end - m).fill(0);
    return new KernelMoments(this, m, v, length, t);
  }

  /** One update; false (nothing changed) when the scratch space does not fit. */
  update(s: KernelMoments, param: Float32Array, grad: Float32Array, c: AdamWStep): boolean {
    const n4 = param.length & ~3;
    const p = align16(this.top);
    const g = align16(p + n4 * 4);
    if (!this.reserve(g + n4 * 4)) return false;
    this.f32(p, n4).set(param.subarray(0, n4));
    this.f32(g, n4).set(grad.subarray(0, n4));
    this.k.adamw(p, g, s.mOffset, s.vOffset, n4 * 4, c.scale, c.beta1, c.g1, c.beta2, c.g2, c.keep, c.stepSize, c.invRootC2, c.eps);
    param.set(this.f32(p, n4));
    return true;
  }

  /** sumOfSquares of adamw.ts through the kernel (same order of additions), grads copied in turn. */
  sumOfSquares(grads: Iterable<Float32Array>): number | null {
    new Float64Array(this.memory.buffer, 0, 4).fill(0);
    for (const gr of grads) {
      const n4 = gr.length & ~3;
      const g = align16(this.top);
      if (!this.reserve(g + n4 * 4)) return null;
      this.f32(g, n4).set(gr.subarray(0, n4));
      this.k.sumsq(g, n4 * 4, 0);
      // The few floats past the last multiple of 4 go into the first sum, as in adamw.ts.
      const acc = new Float64Array(this.memory.buffer, 0, 4);
      for (let i = n4; i < gr.length; i++) acc[0] += gr[i] * gr[i];
    }
    const [a, b, c, d] = new Float64Array(this.memory.buffer, 0, 4);
    return a + b + c + d;
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
