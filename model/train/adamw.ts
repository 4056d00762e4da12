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
    // Bias corrections folded into two constants so the loop does one division per element.
    const stepSize = lr / (1 - beta1 ** s.t);
    const invRootC2 = 1 / Math.sqrt(1 - beta2 ** s.t);
    const keep = 1 - (decays(name) ? lr * this.o.weightDecay : 0);
    const g1 = 1 - beta1;
    const g2 = 1 - beta2;
    const { m, v } = s;
    for (let i = 0; i < param.length; i++) {
      const g = grad[i] * scale;
      const mi = (m[i] = beta1 * m[i] + g1 * g);
      const vi = (v[i] = beta2 * v[i] + g2 * g * g);
      param[i] = keep * param[i] - (stepSize * mi) / (Math.sqrt(vi) * invRootC2 + eps);
    }
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
