// Host-side inputs of a cached step: rotary tables at each row's own positions, and the additive mask
// over [padding | cached tokens | this step's tokens] with causality and the sliding window.
import type { ModelConfig } from '../model/hf/config.ts';
import { ropeTables, type RopeTables } from '../model/llama/rope.ts';

/** What causalMask in model/llama/program.ts uses, so cached and uncached logits agree. */
const MASKED = -1e9;

export class RopeCache {
  private readonly tables: RopeTables;

  constructor(private readonly config: ModelConfig, readonly maxLen: number) {
    this.tables = ropeTables(config, maxLen);
  }

  /** cos/sin [rows, 1, t, head_dim] for rows whose first new token is at position starts[r]. */
  at(starts: readonly number[], t: number): RopeTables {
    const d = this.config.headDim;
    const cos = new Float32Array(starts.length * t * d);
    const sin = new Float32Array(starts.length * t * d);
    starts.forEach((s, r) => {
      if (s + t > this.maxLen) throw new Error(`position ${s + t - 1} is beyond the served context of ${this.maxLen} tokens`);
      cos.set(this.tables.cos.subarray(s * d, (s + t) * d), r * t * d);
      sin.set(this.tables.sin.subarray(s * d, (s + t) * d), r * t * d);
    });
    return { cos, sin };
  }
}

/**
 * Mask [rows, 1, 1, t, slots + t]: row r holds lens[r] cached tokens right-aligned in `slots` slots
 * and adds t tokens at positions lens[r] ... lens[r] + t - 1.
 */
export function stepMask(lens: readonly number[], slots: number, t: number, window: number | null): Float32Array {
  const total = slots + t;
  const mask = new Float32Array(lens.length * t * total).fill(MASKED);
  lens.forEach((len, r) => {
    for (let q = 0; q < t; q++) {
      const qp = len + q;
      const base = (r * t + q) * total;
      for (let j = slots - len; j < total; j++) {
        const kp = j < slots ? len - (slots - j) : len + (j - slots);
        if (kp <= qp && (window === null || qp - kp < window)) mask[base + j] = 0;
      }
    }
  });
  return mask;
}
