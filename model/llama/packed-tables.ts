// Feeds of a packed range graph: several examples share a row, so each token gets the rotary angle of
// its position within its own example, and attends causally within that example only (a
// block-diagonal causal mask per row). An example starts where its position id is 0.
import type { ModelConfig } from '../hf/config.ts';
import { ropeTables } from './rope.ts';

export interface PackedTables {
  /** [batch, 1, seq, headDim] */
  cos: Float32Array;
  sin: Float32Array;
  /** [batch, 1, 1, seq, seq] additive mask. */
  mask: Float32Array;
}

/** `positions` is [batch, seq]; absent, every row is one example (positions 0..seq-1). */
export function packedTables(config: ModelConfig, batch: number, seq: number, positions?: Int32Array): PackedTables {
  const d = config.headDim;
  if (positions && positions.length !== batch * seq) throw new Error(`position ids have ${positions.length} entries for a [${batch}, ${seq}] batch`);
  const pos = (b: number, t: number) => (positions ? positions[b * seq + t] : t);
  let longest = 0;
  for (let b = 0; b < batch; b++) for (let t = 0; t < seq; t++) longest = Math.max(longest, pos(b, t));
  const base = ropeTables(config, longest + 1);
  const cos = new Float32Array(batch * seq * d);
  const sin = new Float32Array(batch * seq * d);
  const mask = new Float32Array(batch * seq * seq).fill(-1e9);
  const window = config.slidingWindow;
  for (let b = 0; b < batch; b++) {
    let start = 0;
    for (let t = 0; t < seq; t++) {
      const p = pos(b, t);
      if (p < 0) throw new Error(`position id ${p} at row ${b}, token ${t} is negative`);
      if (p === 0) start = t;
      else if (t === 0 || p !== pos(b, t - 1) + 1) throw new Error(`position ids of row ${b} must count up from 0 within each example (token ${t} has ${p})`);
      cos.set(base.cos.subarray(p * d, (p + 1) * d), (b * seq + t) * d);
      sin.set(base.sin.subarray(p * d, (p + 1) * d), (b * seq + t) * d);
      const row = (b * seq + t) * seq;
      for (let j = start; j <= t; j++) if (window === null || t - j < window) mask[row + j] = 0;
    }
  }
  return { cos, sin, mask };
}
