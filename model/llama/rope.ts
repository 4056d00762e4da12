// Rotary position embeddings, rotate-half convention (HF Llama): the tables are computed on the host
// once per sequence length, the rotation is in the graph.
import type { Graph } from '../graph/graph.ts';
import type { ModelConfig } from '../hf/config.ts';
import { kernelChoices } from '../graph/kernels.ts';

export interface RopeTables {
  cos: Float32Array;
  sin: Float32Array;
}

/** Frequencies per rotated pair, with HF's 'linear' and 'llama3' rope_scaling applied. */
export function inverseFrequencies(config: ModelConfig): Float64Array {
  const half = config.headDim / 2;
  const inv = Float64Array.from({ length: half }, (_, i) => 1 / config.ropeTheta ** ((2 * i) / config.headDim));
  const scaling = config.ropeScaling as { rope_type?: string; type?: string; factor?: number; low_freq_factor?: number; high_freq_factor?: number; original_max_position_embeddings?: number } | null;
  const kind = scaling?.rope_type ?? scaling?.type;
  if (!scaling || !kind || kind === 'default') return inv;
  const factor = scaling.factor ?? 1;
  if (kind === 'linear') return inv.map((f) => f / factor);
  if (kind === 'llama3') {
    const low = scaling.low_freq_factor ?? 1;
    const high = scaling.high_freq_factor ?? 4;
    const original = scaling.original_max_position_embeddings ?? 8192;
    const lowWavelen = original / low;
    const highWavelen = original / high;
    return inv.map((f) => {
      const wavelen = (2 * Math.PI) / f;
      if (wavelen < highWavelen) return f;
      if (wavelen > lowWavelen) return f / factor;
      const smooth = (original / wavelen - low) / (high - low);
      return (1 - smooth) * (f / factor) + smooth * f;
    });
  }
  throw new Error(`rope_scaling type '${kind}' is not supported (supported: default, linear, llama3)`);
}

export function ropeTables(config: ModelConfig, seq: number, offset = 0): RopeTables {
  const d = config.headDim;
  const inv = inverseFrequencies(config);
  const cos = new Float32Array(seq * d);
  const sin = new Float32Array(seq * d);
  for (let t = 0; t < seq; t++) {
    for (let i = 0; i < d; i++) {
      // HF computes the angle in float32; rounding it first keeps long positions bit-close.
      const angle = Math.fround(Math.fround(t + offset) * Math.fround(inv[i % (d / 2)]));
      cos[t * d + i] = Math.cos(angle);
      sin[t * d + i] = Math.sin(angle);
    }
  }
  return { cos, sin };
}

/** x·cos + rotate_half(x)·sin for x of shape [..., seq, headDim]; cos/sin are [seq, headDim]. */
export function applyRope(g: Graph, x: string, cos: string, sin: string, headDim: number): string {
  // One fused kernel (rows of the tables are positions 0..t-1 of x's sequence axis); per-token tables
  // of packed rows ([b, 1, t, d]) take the element-wise form.
  if (kernelChoices().fusedRope && g.info(cos).shape.length === 2 && g.info(x).shape.length === 4 && g.info(x).dtype === 'float32') {
    const t = halfTables(g, cos, sin, headDim);
    return g.op('RotaryEmbedding', [x, t.offset, t.cos, t.sin], { interleaved: 0 }, 'com.microsoft');
  }
  const [lo, hi] = g.opN('Split', [x, g.i64([headDim / 2, headDim / 2])], 2, { axis: -1 });
  const rotated = g.op('Concat', [g.op('Neg', [hi]), lo], { axis: -1 });
  return g.op('Add', [g.op('Mul', [x, cos]), g.op('Mul', [rotated, sin])]);
}

const halves = new WeakMap<Graph, Map<string, { offset: string; cos: string; sin: string }>>();

/** RotaryEmbedding's caches: the first half of each [t, d] table (its halves are equal), once per graph. */
export function halfTables(g: Graph, cos: string, sin: string, headDim: number): { offset: string; cos: string; sin: string } {
  let byTable = halves.get(g);
  if (!byTable) halves.set(g, (byTable = new Map()));
  let t = byTable.get(cos);
  if (!t) {
    const half = (v: string) => g.op('Slice', [v, g.i64([0]), g.i64([headDim / 2]), g.i64([1])]);
    // Position ids given as one offset: row p of the caches rotates position p.
    t = { offset: g.i64([0]), cos: half(cos), sin: half(sin) };
    byTable.set(cos, t);
  }
  return t;
}
