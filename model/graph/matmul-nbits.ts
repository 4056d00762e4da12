// The 4-bit weight layout of ONNX Runtime's MatMulNBits (com.microsoft) and the graph ops that read it:
// W [out, in] (HF layout) cut into blocks of `blockSize` along `in`, each block uint4 codes q and a
// float32 scale s, dequantized as (q - zp)·s. The codes are kept in MatMulNBits' layout,
// [out, blocks, blockSize/2] bytes with low nibble first and the last block of a row padded;
// DequantizeLinear reads the same bytes as uint4 [out·blocks, blockSize]. How weights get quantized
// is model/quant/quant4.ts.
import type { Graph, Node } from './graph.ts';

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

export function nibble(bytes: Uint8Array, index: number): number {
  const b = bytes[index >> 1];
  return index & 1 ? b >> 4 : b & 15;
}

export function setNibble(bytes: Uint8Array, index: number, v: number): void {
  const at = index >> 1;
  bytes[at] = index & 1 ? (bytes[at] & 0x0f) | (v << 4) : (bytes[at] & 0xf0) | v;
}

/** Zero point of block `b` of row `o`. */
export function zeroPointAt(q: Quantized4, o: number, b: number): number {
  return nibble(q.zeroPoints, o * Math.ceil(q.blocks / 2) * 2 + b);
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

