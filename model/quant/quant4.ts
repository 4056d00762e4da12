// QLoRA-style 4-bit block quantization of frozen linear weights, done once on the host; the layout
// and the graph ops that multiply by them in ONNX Runtime are model/graph/matmul-nbits.ts.
//
// W [out, in] (HF layout) is cut into blocks of `blockSize` along `in`; each block stores uint4 codes
// q and a float32 scale s, and dequantizes as (q - zp)·s. Two schemes, both native to ORT's kernels
// (MatMulNBits codes are uint4 with an optional uint4 zero point that defaults to 8):
//   - asymmetric (default): zp is a per-block uint4 fitted to [min(w, 0), max(w, 0)], so all 16 codes
//     cover the block's range. Lower error than symmetric for half a byte per block, and MatMulNBits
//     ran no slower with zero points than without them (x [1024, 512] · W [1376, 512]ᵀ, CPU).
//   - symmetric: zp is the constant 8 and s = absmax/7; MatMulNBits then takes no zero-point input.
// The codes are kept in MatMulNBits' layout, [out, blocks, blockSize/2] bytes with low nibble first
// and the last block of a row padded. The process holds them once (quant4-store.ts).

import type { ModelConfig } from '../hf/config.ts';
import { nibble, setNibble, zeroPointAt, type Quantized4 } from '../graph/matmul-nbits.ts';
import { paramSpecs } from '../llama/param-specs.ts';

export interface Quant4Options {
  blockSize?: number;
  symmetric?: boolean;
}

export const DEFAULT_BLOCK_SIZE = 32;
const SYMMETRIC_ZERO = 8;

/** Quantizes W [out, inp] block-wise along `inp`. */
export function quantize4(w: Float32Array, out: number, inp: number, opts: Quant4Options = {}): Quantized4 {
  const blockSize = opts.blockSize ?? DEFAULT_BLOCK_SIZE;
  const symmetric = opts.symmetric ?? false;
  if (w.length !== out * inp) throw new Error(`quantize4: ${w.length} values for [${out}, ${inp}]`);
  // Even sizes keep every block byte-aligned, which both ORT layouts need.
  if (!Number.isInteger(blockSize) || blockSize < 2 || blockSize % 2 !== 0) throw new Error(`quantize4: block size ${blockSize} must be even`);
  const blocks = Math.ceil(inp / blockSize);
  const blob = blockSize / 2;
  const codes = new Uint8Array(out * blocks * blob);
  const scales = new Float32Array(out * blocks);
  const zpPerRow = Math.ceil(blocks / 2);
  const zeroPoints = new Uint8Array(out * zpPerRow);
  for (let o = 0; o < out; o++) {
    for (let b = 0; b < blocks; b++) {
      const start = o * inp + b * blockSize;
      const len = Math.min(blockSize, inp - b * blockSize);
      let lo = 0;
      let hi = 0;
      for (let i = 0; i < len; i++) {
        const v = w[start + i];
        if (v < lo) lo = v;
        if (v > hi) hi = v;
      }
      // The range always contains 0, so zp lands in [0, 15] and zero weights stay exactly zero.
      const s = Math.fround(symmetric ? Math.max(-lo, hi) / 7 : (hi - lo) / 15);
      const zp = symmetric ? SYMMETRIC_ZERO : s === 0 ? 0 : Math.min(15, Math.max(0, Math.round(-lo / s)));
      const k = o * blocks + b;
      scales[k] = s;
      setNibble(zeroPoints, o * zpPerRow * 2 + b, zp);
      const base = k * blockSize;
      for (let i = 0; i < blockSize; i++) {
        const q = i >= len || s === 0 ? zp : Math.min(15, Math.max(0, Math.round(w[start + i] / s) + zp));
        setNibble(codes, base + i, q);
      }
    }
  }
  return { out, inp, blockSize, blocks, symmetric, codes, scales, zeroPoints };
}

/** The host reference Wq [out, inp], computed exactly as ORT does: float32((q - zp) · s). */
export function dequantize4(q: Quantized4): Float32Array {
  const w = new Float32Array(q.out * q.inp);
  for (let o = 0; o < q.out; o++) {
    for (let i = 0; i < q.inp; i++) {
      const b = Math.floor(i / q.blockSize);
      const code = nibble(q.codes, (o * q.blocks + b) * q.blockSize + (i % q.blockSize));
      w[o * q.inp + i] = Math.fround((code - zeroPointAt(q, o, b)) * q.scales[o * q.blocks + b]);
    }
  }
  return w;
}

/** Bytes the quantized weight occupies (codes, scales, and zero points when asymmetric). */
export function quantized4Bytes(out: number, inp: number, opts: Quant4Options = {}): number {
  const blockSize = opts.blockSize ?? DEFAULT_BLOCK_SIZE;
  const blocks = Math.ceil(inp / blockSize);
  const zp = opts.symmetric ? 0 : out * Math.ceil(blocks / 2);
  return out * blocks * (blockSize / 2) + out * blocks * 4 + zp;
}

export interface QuantizedFootprint {
  /** Linear weights counted (the frozen ones). */
  weights: number;
  params: number;
  float32Bytes: number;
  /** Codes + float32 scales (+ zero points when asymmetric). */
  quantizedBytes: number;
}

/**
 * Memory of the frozen linear weights of `config` in float32 vs 4 bits. `frozen` picks which linear
 * weights are quantized (default: all); embeddings, norms and the head stay float either way.
 */
export function quantizedBytes(config: ModelConfig, opts: Quant4Options & { frozen?: (name: string) => boolean } = {}): QuantizedFootprint {
  const fp: QuantizedFootprint = { weights: 0, params: 0, float32Bytes: 0, quantizedBytes: 0 };
  for (const spec of paramSpecs(config)) {
    if (spec.kind !== 'linear_weight' || (opts.frozen && !opts.frozen(spec.name))) continue;
    const [out, inp] = spec.shape;
    fp.weights++;
    fp.params += out * inp;
    fp.float32Bytes += out * inp * 4;
    fp.quantizedBytes += quantized4Bytes(out, inp, opts);
  }
  return fp;
}
