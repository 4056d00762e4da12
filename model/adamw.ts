// AdamW with decoupled weight decay (Loshchilov & Hutter), state kept on the host per tensor. The
// trainable set is small in LLaMA Pro and LoRA runs, so plain loops are not the bottleneck.
export interface AdamWOptions {
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
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

  constructor(readonly o: AdamWOptions) {}

  /** One update of `param` in place; `scale` multiplies the gradient first (global-norm clipping). */
  update(name: string, param: Float32Array, grad: Float32Array, lr: number, scale = 1): void {
    let s = this.state.get(name);
    if (!s) {
      s = { m: new Float32Array(param.length), v: new Float32Array(param.length), t: 0 };
      this.state.set(name, s);
    }
    const { beta1, beta2, eps } = this.o;
    s.t++;
    const c1 = 1 - beta1 ** s.t;
    const c2 = 1 - beta2 ** s.t;
    const decay = decays(name) ? lr * this.o.weightDecay : 0;
    const { m, v } = s;
    for (let i = 0; i < param.length; i++) {
      const g = grad[i] * scale;
      m[i] = beta1 * m[i] + (1 - beta1) * g;
      v[i] = beta2 * v[i] + (1 - beta2) * g * g;
      param[i] -= decay * param[i] + (lr * (m[i] / c1)) / (Math.sqrt(v[i] / c2) + eps);
    }
  }
}

/** Sum of squares of every gradient: ranks add theirs before the square root, so clipping is global. */
export function sumOfSquares(grads: Iterable<Float32Array>): number {
  let s = 0;
  for (const g of grads) for (let i = 0; i < g.length; i++) s += g[i] * g[i];
  return s;
}

/** The factor that brings the global norm down to `maxNorm` (1 when already below, or when off). */
export function clipScale(totalNorm: number, maxNorm: number): number {
  if (maxNorm <= 0 || totalNorm <= maxNorm) return 1;
  return maxNorm / (totalNorm + 1e-6);
}

/** Adds each gradient into `into` (copying on first sight), the sum over micro-batches of a step. */
export function accumulateGrads(into: Map<string, Float32Array>, grads: ReadonlyMap<string, Float32Array>): void {
  for (const [n, g] of grads) {
    const acc = into.get(n);
    if (!acc) into.set(n, Float32Array.from(g));
    else for (let i = 0; i < g.length; i++) acc[i] += g[i];
  }
}
