// LoRA factors of every adapter on one base segment, stacked along the rank: A [R, in] and B [out, R]
// with each adapter in its own slice (its alpha/rank folded into B). The segment session holds them
// once, as weights; a [batch, 1, R] mask keeps each row's slice, so rows of the base and of any
// LoRA adapter run in one batch (the idea of S-LoRA/Punica, without a gather kernel: the extra cost
// is R instead of one adapter's rank per token).
import type { ModelConfig } from '../model/hf/config.ts';
import { loraNames, type LoraSpec } from '../model/llama/params.ts';
import type { ServedAdapter } from './adapter.ts';

export interface StackedLora {
  /** Summed rank; 0 when no adapter has LoRA in the segment. */
  rank: number;
  spec: LoraSpec | null;
  /** The stacked A and B of each linear, under the LoRA parameter names. */
  factors: Map<string, Float32Array>;
  /** Each adapter's slice of the rank. */
  slices: Map<string, { offset: number; rank: number }>;
}

function linearShape(config: ModelConfig, linear: string): { out: number; inp: number } {
  const q = config.numHeads * config.headDim;
  const kv = config.numKvHeads * config.headDim;
  const h = config.hiddenSize;
  const m = config.intermediateSize;
  const shapes: Record<string, { out: number; inp: number }> = {
    q_proj: { out: q, inp: h }, k_proj: { out: kv, inp: h }, v_proj: { out: kv, inp: h }, o_proj: { out: h, inp: q },
    gate_proj: { out: m, inp: h }, up_proj: { out: m, inp: h }, down_proj: { out: h, inp: m },
  };
  const s = shapes[linear.slice(linear.lastIndexOf('.') + 1)];
  if (!s) throw new Error(`LoRA on '${linear}': not a linear layer of a Llama block`);
  return s;
}

const layerOf = (linear: string) => Number(/^model\.layers\.(\d+)\./.exec(linear)![1]);

/** The LoRA of all `adapters` on base layers [start, end). */
export function stackLora(config: ModelConfig, adapters: readonly ServedAdapter[], start: number, end: number): StackedLora {
  const inSegment = (linear: string) => layerOf(linear) >= start && layerOf(linear) < end;
  const slices = new Map<string, { offset: number; rank: number }>();
  const linears = new Set<string>();
  let rank = 0;
  for (const a of adapters) {
    const mine = [...a.baseLora.entries()].filter(([linear]) => inSegment(linear));
    if (mine.length === 0) continue;
    const r = mine[0][1].rank;
    slices.set(a.name, { offset: rank, rank: r });
    rank += r;
    for (const [linear] of mine) linears.add(linear);
  }
  const factors = new Map<string, Float32Array>();
  for (const linear of linears) {
    const { out, inp } = linearShape(config, linear);
    const a = new Float32Array(rank * inp);
    const b = new Float32Array(out * rank);
    for (const ad of adapters) {
      const f = ad.baseLora.get(linear);
      const slice = slices.get(ad.name);
      if (!f || !slice) continue;
      a.set(f.a, slice.offset * inp);
      for (let o = 0; o < out; o++) b.set(f.b.subarray(o * f.rank, (o + 1) * f.rank), o * rank + slice.offset);
    }
    const names = loraNames(linear);
    factors.set(names.a, a);
    factors.set(names.b, b);
  }
  const spec = rank > 0 ? { rank, alpha: rank, linears, rowMask: true } : null;
  return { rank, spec, factors, slices };
}

/** The [rank] mask row of a model on this segment: ones on its slice (none for the base). */
export function maskRow(stacked: StackedLora, model: string): Float32Array | null {
  if (stacked.rank === 0) return null;
  const row = new Float32Array(stacked.rank);
  const slice = stacked.slices.get(model);
  if (slice) row.fill(1, slice.offset, slice.offset + slice.rank);
  return row;
}
