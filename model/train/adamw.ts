// AdamW with decoupled weight decay (Loshchilov & Hutter), state kept on the host per tensor. The
// element loop runs as a WebAssembly SIMD kernel (adamw-wasm.ts, bitwise equal to the JS loop here,
// which stays as the fallback and for tensors too small to be worth the copies).
import { AdamWKernel, KernelMoments, type AdamWStep } from './adamw-wasm.ts';

export interface AdamWOptions {
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  /** 'wasm' (the default; PROPIPE_ADAMW=js turns it off) or the plain JS loop. */
  kernel?: 'wasm' | 'js';
}

/** Below this many floats the copies in and out of the kernel's memory cost more than the loop. */
const KERNEL_MIN_LENGTH = 1024;

/** The default kernel of new optimizers: PROPIPE_ADAMW=js keeps the JS loop (e.g. to compare). */
export function defaultAdamWKernel(): 'wasm' | 'js' {
  const v = process.env.PROPIPE_ADAMW;
  if (v === undefined || v === '' || v === 'wasm') return 'wasm';
  if (v === 'js') return 'js';
  throw new Error(`PROPIPE_ADAMW='${v}' is not one of wasm, js: unset it or pick one`);
}

export interface MomentState {
  m: Float32Array;
  v: Float32Array;
  /** Updates applied to this tensor (bias correction counts per tensor: a tensor unfrozen late starts at 0). */
  t: number;
}

/** HF Trainer's convention: no weight decay on biases and norm weights. */
export function decays(name: string): boolean {
  return !name.endsWith('.bias') && !/norm\.weight$/.test(name);
}

export class AdamW {
  readonly state = new Map<string, MomentState>();
  private readonly kernel: AdamWKernel | null;

  /** `kernel` defaults to a new one per optimizer (o.kernel 'wasm'); tests pass one with a small memory. */
  constructor(
    readonly o: AdamWOptions,
    kernel?: AdamWKernel | null,
  ) {
    this.kernel = kernel !== undefined ? kernel : (o.kernel ?? defaultAdamWKernel()) === 'wasm' ? AdamWKernel.create() : null;
  }

  /** sumOfSquares below, through the kernel when there is one (the same double: the same additions). */
  gradSumOfSquares(grads: Iterable<Float32Array>): number {
    const list = [...grads];
    return this.kernel?.sumOfSquares(list) ?? sumOfSquares(list);
  }

  /** Which loop updates: 'wasm' when the kernel is in use. */
  get kernelInUse(): 'wasm' | 'js' {
    return this.kernel ? 'wasm' : 'js';
  }

  /** One update of `param` in place; `scale` multiplies the gradient first (global-norm clipping). */
  update(name: string, param: Float32Array, grad: Float32Array, lr: number, scale = 1): void {
    const s = this.moments(name, param.length);
    const { beta1, beta2, eps } = this.o;
    s.t++;
    // Bias corrections folded into two constants so the loop does one division per element.
    const c: AdamWStep = {
      scale,
      beta1,
      g1: 1 - beta1,
      beta2,
      g2: 1 - beta2,
      keep: 1 - (decays(name) ? lr * this.o.weightDecay : 0),
      stepSize: lr / (1 - beta1 ** s.t),
      invRootC2: 1 / Math.sqrt(1 - beta2 ** s.t),
      eps,
    };
    const done = s instanceof KernelMoments && this.kernel!.update(s, param, grad, c) ? param.length & ~3 : 0;
    // The moments' views are taken after the kernel ran: its scratch space may have grown the memory.
    adamwLoop(param, grad, s.m, s.v, done, c);
  }

  /** A tensor's moments: new ones in the kernel's memory when they fit, restored ones moved there. */
  private moments(name: string, length: number): MomentState {
    const s = this.state.get(name);
    if (s instanceof KernelMoments || !this.kernel || length < KERNEL_MIN_LENGTH) return s ?? this.jsMoments(name, length);
    const k = this.kernel.allocMoments(length, s?.t ?? 0);
    if (!k) return s ?? this.jsMoments(name, length);
    if (s) {
      k.m.set(s.m);
      k.v.set(s.v);
    }
    this.state.set(name, k);
    return k;
  }

  private jsMoments(name: string, length: number): MomentState {
    const s = { m: new Float32Array(length), v: new Float32Array(length), t: 0 };
    this.state.set(name, s);
    return s;
  }
}

/** AdamW's element loop from index `from` on (the kernel does the same arithmetic, SIMD). */
function adamwLoop(param: Float32Array, grad: Float32Array, m: Float32Array, v: Float32Array, from: number, c: AdamWStep): void {
  const { scale, beta1, g1, beta2, g2, keep, stepSize, invRootC2, eps } = c;
  for (let i = from; i < param.length; i++) {
    const g = grad[i] * scale;
    const mi = (m[i] = beta1 * m[i] + g1 * g);
    const vi = (v[i] = beta2 * v[i] + g2 * g * g);
    param[i] = keep * param[i] - (stepSize * mi) / (Math.sqrt(vi) * invRootC2 + eps);
  }
}

/** Sum of squares of every gradient: ranks add theirs before the square root, so clipping is global. */
export function sumOfSquares(grads: Iterable<Float32Array>): number {
  // Four running sums break the add dependency chain (measured 2x in bench/train-step.ts).
  let a = 0;
  let b = 0;
  let c = 0;
  let d = 0;
  for (const g of grads) {
    const n = g.length - (g.length % 4);
    for (let i = 0; i < n; i += 4) {
      a += g[i] * g[i];
      b += g[i + 1] * g[i + 1];
      c += g[i + 2] * g[i + 2];
      d += g[i + 3] * g[i + 3];
    }
    for (let i = n; i < g.length; i++) a += g[i] * g[i];
  }
  return a + b + c + d;
}

/** The factor that brings the global norm down to `maxNorm` (1 when already below, or when off). */
export function clipScale(totalNorm: number, maxNorm: number): number {
  if (maxNorm <= 0 || totalNorm <= maxNorm) return 1;
  return maxNorm / (totalNorm + 1e-6);
}

/**
 * Adds each gradient into `into`, the sum over micro-batches of a step. The first micro-batch's arrays
 * are taken as they are (ONNX Runtime returns fresh outputs on every run), so one micro-batch costs no copy.
 */
export function accumulateGrads(into: Map<string, Float32Array>, grads: ReadonlyMap<string, Float32Array>): void {
  for (const [n, g] of grads) {
    const acc = into.get(n);
    if (!acc) into.set(n, g);
    else for (let i = 0; i < g.length; i++) acc[i] += g[i];
  }
}
