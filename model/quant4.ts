// QLoRA-style 4-bit block quantization of frozen linear weights, done once on the host, and the graph
// ops that multiply by them in ONNX Runtime.
//
// W [out, in] (HF layout) is cut into blocks of `blockSize` along `in`; each block stores uint4 codes
// q and a float32 scale s, and dequantizes as (q - zp)·s. Two schemes, both native to ORT's kernels
// (MatMulNBits codes are uint4 with an optional uint4 zero point that defaults to 8):
//   - asymmetric (default): zp is a per-block uint4 fitted to [min(w, 0), max(w, 0)], so all 16 codes
//     cover the block's range. Lower error than symmetric for half a byte per block, and MatMulNBits
//     ran no slower with zero points than without them (x [1024, 512] · W [1376, 512]ᵀ, CPU).
//   - symmetric: zp is the constant 8 and s = absmax/7; MatMulNBits then takes no zero-point input.
// The codes are kept in MatMulNBits' layout, [out, blocks, blockSize/2] bytes with low nibble first
// and the last block of a row padded; DequantizeLinear reads the same bytes as uint4 [out·blocks, blockSize].

import type { ModelConfig } from './config.ts';
import type { Graph, Node } from './graph/graph.ts';
import type { QuantizedMatMul, WeightLoader } from './llama/params.ts';
import { paramSpecs } from './params.ts';

export interface Quantized4 {
  out: number;
  inp: number;
  blockSize: number;
  /** Blocks per row: ceil(inp / blockSize); the last one may be ragged. */
  blocks: number;
  symmetric: boolean;
  /** uint4 codes, [out, blocks, blockSize/2] bytes, low nibble first, ragged blocks padded with zp. */
  codes: Uint8Array;
  /** [out, blocks] */
  scales: Float32Array;
  /** uint4 zero points [out, blocks], packed per row: [out, ceil(blocks/2)] bytes (all 8 when symmetric). */
  zeroPoints: Uint8Array;
}

export interface Quant4Options {
  blockSize?: number;
  symmetric?: boolean;
}

export const DEFAULT_BLOCK_SIZE = 32;
const SYMMETRIC_ZERO = 8;

function nibble(bytes: Uint8Array, index: number): number {
  const b = bytes[index >> 1];
  return index & 1 ? b >> 4 : b & 15;
}

function setNibble(bytes: Uint8Array, index: number, v: number): void {
  const at = index >> 1;
  bytes[at] = index & 1 ? (bytes[at] & 0x0f) | (v << 4) : (bytes[at] & 0xf0) | v;
}

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

/** Zero point of block `b` of row `o`. */
export function zeroPointAt(q: Quantized4, o: number, b: number): number {
  return nibble(q.zeroPoints, o * Math.ceil(q.blocks / 2) * 2 + b);
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

// ---- Graph side -----------------------------------------------------------------------------------

/**
 * How the graph multiplies by a 4-bit weight:
 *   - 'matmulnbits' (default): com.microsoft MatMulNBits on the packed codes with fp32 accumulation;
 *     as fast as a float MatMul on CPU. Needs a power-of-two block size >= 16.
 *   - 'dequantize': standard ONNX, DequantizeLinear to a float Wq on every run, then MatMul; any even
 *     block size, ~10% slower at 1024 rows (the dequantization does not shrink with fewer rows). For
 *     forward-only graphs (eval, serving): in a backward graph each layer's Wq stays alive from its
 *     forward use to its backward use, a float-sized peak.
 */
export type Quant4Kernel = 'matmulnbits' | 'dequantize';

export interface QuantizedLinearOptions {
  symmetric?: boolean;
  kernel?: Quant4Kernel;
}

export function nbitsSupports(blockSize: number): boolean {
  return blockSize >= 16 && (blockSize & (blockSize - 1)) === 0;
}

/** A graph initializer, created once per graph however many nodes read it. */
function shared(g: Graph, name: string, dtype: 'uint8' | 'uint4' | 'float32', dims: number[], data: Uint8Array | Float32Array): string {
  return g.values.has(name) ? name : g.initializer(name, dtype, dims, data);
}

/**
 * Wq [out, inp] as a float32 graph value named `${prefix}.wq` (no gradient; emitted once per graph).
 * DequantizeLinear reads MatMulNBits' bytes as uint4 [out·blocks, blockSize] with one scale and zero
 * point per row (per-axis, axis 0): the same numbers as blocked DequantizeLinear (block_size) over
 * [out, inp], and 2-3x faster in ORT's CPU kernels; a ragged last block's padding is sliced off.
 */
export function emitDequantize(g: Graph, prefix: string, q: Quantized4): string {
  const name = `${prefix}.wq`;
  if (g.values.has(name)) return name;
  const rows = q.out * q.blocks;
  const codes = shared(g, `${prefix}.rows`, 'uint4', [rows, q.blockSize], q.codes);
  const s = shared(g, `${prefix}_scales`, 'float32', [rows], q.scales);
  // Symmetric weights still pass their constant zero point 8: uint4 without one would mean 0.
  const zp = shared(g, `${prefix}.rows_zero_points`, 'uint4', [rows], rowZeroPoints(q));
  const blocked = g.op('Reshape', [g.op('DequantizeLinear', [codes, s, zp], { axis: 0 }), g.i64([q.out, q.blocks * q.blockSize])]);
  const ragged = q.inp % q.blockSize !== 0;
  const inputs = ragged ? [blocked, g.i64([0]), g.i64([q.inp]), g.i64([1])] : [blocked];
  g.emit({ op: ragged ? 'Slice' : 'Identity', inputs, outputs: [name], attrs: {} });
  return name;
}

/** Zero points as one dense uint4 vector over [out·blocks] (rows pad to whole bytes only when blocks is odd). */
function rowZeroPoints(q: Quantized4): Uint8Array {
  if (q.blocks % 2 === 0) return q.zeroPoints;
  const zp = new Uint8Array(Math.ceil((q.out * q.blocks) / 2));
  for (let o = 0; o < q.out; o++) for (let b = 0; b < q.blocks; b++) setNibble(zp, o * q.blocks + b, zeroPointAt(q, o, b));
  return zp;
}

/**
 * y = x·Wqᵀ with MatMulNBits; its gradient rule (autodiff/rules/matmul-nbits.ts) gives d(x) = dY·Wq.
 * Inputs are named `${name}.q4`, `${name}.q4_scales`, ... and the rule's Wq is emitted here, unused by
 * the forward (whose serialization drops it). ONNX Runtime orders nodes by a reverse DFS that visits
 * the higher-indexed input first: a Wq emitted by the rule itself (after dY) ran before the whole
 * backward with every layer's float Wq alive at once (8 linears holding 344 MiB in float32: the
 * session took +809 MiB, the float one +375 MiB); emitted with the forward, each Wq is computed right
 * before its MatMul and freed after it (+92 MiB).
 */
export function emitMatMulNBits(g: Graph, x: string, name: string, q: Quantized4): string {
  if (!nbitsSupports(q.blockSize)) throw new Error(`MatMulNBits needs a power-of-two block size >= 16, not ${q.blockSize}`);
  emitDequantize(g, `${name}.q4`, q);
  const inputs = [
    x,
    shared(g, `${name}.q4`, 'uint8', [q.out, q.blocks, q.blockSize / 2], q.codes),
    // 1-D scales (MatMulNBits takes [N·blocks] as well as [N, blocks]) so DequantizeLinear shares them.
    shared(g, `${name}.q4_scales`, 'float32', [q.out * q.blocks], q.scales),
  ];
  // Without a zero-point input MatMulNBits uses 8, exactly the symmetric scheme.
  if (!q.symmetric) inputs.push(shared(g, `${name}.q4_zero_points`, 'uint8', [q.out, Math.ceil(q.blocks / 2)], q.zeroPoints));
  // accuracy_level 1 = fp32 compute: level 4 quantizes activations to int8 (6e-3 relative error).
  return g.op('MatMulNBits', inputs, { K: q.inp, N: q.out, bits: 4, block_size: q.blockSize, accuracy_level: 1 }, 'com.microsoft');
}

/** Rebuilds the host structure behind a MatMulNBits node from its initializers (for its gradient). */
export function quantizedOfNode(g: Graph, node: Node): Quantized4 {
  const data = (name: string | undefined) => {
    const init = name ? g.initializers.get(name) : undefined;
    if (!init) throw new Error(`MatMulNBits '${node.outputs[0]}': input '${name}' must be a frozen initializer`);
    return init.data;
  };
  const out = node.attrs.N as number;
  const inp = node.attrs.K as number;
  const blockSize = node.attrs.block_size as number;
  if ((node.attrs.bits ?? 4) !== 4) throw new Error('MatMulNBits: only 4-bit weights are supported');
  const blocks = Math.ceil(inp / blockSize);
  const symmetric = !node.inputs[3];
  const zeroPoints = symmetric ? new Uint8Array(out * Math.ceil(blocks / 2)).fill(0x88) : (data(node.inputs[3]) as Uint8Array);
  return { out, inp, blockSize, blocks, symmetric, codes: data(node.inputs[1]) as Uint8Array, scales: data(node.inputs[2]) as Float32Array, zeroPoints };
}

/**
 * The hook for ParamBinder: each frozen linear weight is read through `load`, quantized once (the
 * result is kept for every graph built later, the float copy is dropped) and multiplied in 4 bits.
 */
export function quantizedLinear(load: WeightLoader, blockSize = DEFAULT_BLOCK_SIZE, opts: QuantizedLinearOptions = {}): (...args: Parameters<QuantizedMatMul>) => string {
  const useNBits = (opts.kernel ?? 'matmulnbits') === 'matmulnbits';
  if (useNBits && !nbitsSupports(blockSize)) throw new Error(`MatMulNBits needs a power-of-two block size >= 16, not ${blockSize} (or use kernel 'dequantize')`);
  const cache = new Map<string, Quantized4>();
  return (g, x, name, out, inp) => {
    let q = cache.get(name);
    if (!q) {
      q = quantize4(load(name), out, inp, { blockSize, symmetric: opts.symmetric });
      cache.set(name, q);
    }
    if (q.out !== out || q.inp !== inp) throw new Error(`${name}: quantized as [${q.out}, ${q.inp}], used as [${out}, ${inp}]`);
    if (useNBits) return emitMatMulNBits(g, x, name, q);
    return g.op('MatMul', [x, g.op('Transpose', [emitDequantize(g, `${name}.q4`, q)], { perm: [1, 0] })]);
  };
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
