// The 4-bit weight layout of ONNX Runtime's MatMulNBits (com.microsoft) and the graph ops that read it:
// W [out, in] (HF layout) cut into blocks of `blockSize` along `in`, each block uint4 codes q and a
// float32 scale s, dequantized as (q - zp)·s. The codes are kept in MatMulNBits' layout,
// [out, blocks, blockSize/2] bytes with low nibble first and the last block of a row padded. Codes,
// scales and zero points are graph inputs fed from the process's one copy (model/quant/quant4-store.ts),
// never initializers, which every session would copy. How weights get quantized is model/quant/quant4.ts.
import type { HostTensor } from './dtype.ts';
import type { Graph, Node } from './graph.ts';

/** The shape and scheme of a 4-bit weight: all a graph needs to read it. */
export interface Quant4Layout {
  out: number;
  inp: number;
  blockSize: number;
  /** Blocks per row: ceil(inp / blockSize); the last one may be ragged. */
  blocks: number;
  symmetric: boolean;
}

export interface Quantized4 extends Quant4Layout {
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
  return nibble(q.zeroPoints, o * zeroPointBytesPerRow(q.blocks) * 2 + b);
}

export function nbitsSupports(blockSize: number): boolean {
  return blockSize >= 16 && (blockSize & (blockSize - 1)) === 0;
}

/** Bytes of zero points per row of W: one nibble per block, rows padded to whole bytes. */
export function zeroPointBytesPerRow(blocks: number): number {
  return Math.ceil(blocks / 2);
}

type InputSpec = { name: string; dtype: 'uint8' | 'float32'; shape: number[] };

/** The graph inputs of the 4-bit weight `name`, named `${name}.q4`, `${name}.q4_scales`, `${name}.q4_zero_points`. */
export function quantizedInputs(name: string, l: Quant4Layout): { codes: InputSpec; scales: InputSpec; zeroPoints: InputSpec } {
  return {
    codes: { name: `${name}.q4`, dtype: 'uint8', shape: [l.out, l.blocks, l.blockSize / 2] },
    // 1-D scales (MatMulNBits takes [N·blocks] as well as [N, blocks]) so DequantizeLinear shares them.
    scales: { name: `${name}.q4_scales`, dtype: 'float32', shape: [l.out * l.blocks] },
    // Symmetric weights hold 8 in every nibble: MatMulNBits does not read them, DequantizeLinear does.
    zeroPoints: { name: `${name}.q4_zero_points`, dtype: 'uint8', shape: [l.out, zeroPointBytesPerRow(l.blocks)] },
  };
}

/**
 * The host tensors behind a 4-bit weight's graph inputs: `q`'s own buffers, so every session fed them
 * reads the process's one copy (ONNX Runtime copies initializers into each session instead).
 * onnxruntime-node takes no uint4 tensors, so codes and zero points travel as the uint8 bytes they are.
 */
export function quantizedFeeds(name: string, q: Quantized4): Record<string, HostTensor> {
  const i = quantizedInputs(name, q);
  const tensor = (s: InputSpec, data: Uint8Array | Float32Array): HostTensor => ({ dtype: s.dtype, shape: s.shape, data });
  return { [i.codes.name]: tensor(i.codes, q.codes), [i.scales.name]: tensor(i.scales, q.scales), [i.zeroPoints.name]: tensor(i.zeroPoints, q.zeroPoints) };
}

/** Declares the graph inputs of `name` once per graph; returns their names. */
function declareInputs(g: Graph, name: string, l: Quant4Layout): { codes: string; scales: string; zeroPoints: string } {
  const i = quantizedInputs(name, l);
  for (const s of [i.codes, i.scales, i.zeroPoints]) if (!g.values.has(s.name)) g.input(s.name, s.dtype, s.shape);
  return { codes: i.codes.name, scales: i.scales.name, zeroPoints: i.zeroPoints.name };
}

/**
 * uint8 bytes [..., n] -> their nibbles [..., 2n], low nibble first, by Div/Mul/Sub (the CUDA provider
 * has no uint8 BitShift or BitwiseAnd kernel; ONNX Runtime's CPU runs these in one pass each).
 */
function nibbles(g: Graph, bytes: string, dims: number[]): string {
  const sixteen = g.constant(16, 'uint8');
  const hi = g.op('Div', [bytes, sixteen]);
  const lo = g.op('Sub', [bytes, g.op('Mul', [hi, sixteen])]);
  const last = g.i64([-1]);
  const pairs = g.op('Concat', [g.op('Unsqueeze', [lo, last]), g.op('Unsqueeze', [hi, last])], { axis: -1 });
  return g.op('Reshape', [pairs, g.i64([...dims.slice(0, -1), dims[dims.length - 1] * 2])]);
}

/**
 * Wq [out, inp] as a float32 graph value named `${name}.q4.wq` (no gradient; emitted once per graph),
 * from the weight's graph inputs. The codes are unpacked to one uint8 per element, [out·blocks,
 * blockSize], and DequantizeLinear takes them with one scale and zero point per row (per-axis, axis 0):
 * the same numbers as blocked DequantizeLinear over [out, inp], and 2-3x faster in ORT's CPU kernels;
 * a ragged last block's padding is sliced off.
 */
export function emitDequantize(g: Graph, name: string, q: Quant4Layout): string {
  const wq = `${name}.q4.wq`;
  if (g.values.has(wq)) return wq;
  const n = declareInputs(g, name, q);
  const rows = q.out * q.blocks;
  const codes = g.op('Reshape', [nibbles(g, n.codes, [q.out, q.blocks, q.blockSize / 2]), g.i64([rows, q.blockSize])]);
  const zpPerRow = nibbles(g, n.zeroPoints, [q.out, zeroPointBytesPerRow(q.blocks)]);
  // Odd block counts pad each row of zero points with one nibble.
  const zpRows = q.blocks % 2 === 0 ? zpPerRow : g.op('Slice', [zpPerRow, g.i64([0]), g.i64([q.blocks]), g.i64([1])]);
  const zp = g.op('Reshape', [zpRows, g.i64([rows])]);
  const blocked = g.op('Reshape', [g.op('DequantizeLinear', [codes, n.scales, zp], { axis: 0 }), g.i64([q.out, q.blocks * q.blockSize])]);
  const ragged = q.inp % q.blockSize !== 0;
  const inputs = ragged ? [blocked, g.i64([0]), g.i64([q.inp]), g.i64([1])] : [blocked];
  g.emit({ op: ragged ? 'Slice' : 'Identity', inputs, outputs: [wq], attrs: {} });
  return wq;
}

/**
 * y = x·Wqᵀ with MatMulNBits over the weight's graph inputs (ONNX Runtime then skips its prepacking
 * of B: measured in README "4-bit codes"); its gradient rule (autodiff/rules/matmul-nbits.ts) gives
 * d(x) = dY·Wq with the Wq emitted here, unused by the forward (whose serialization drops it). ONNX
 * Runtime orders nodes by a reverse DFS that visits the higher-indexed input first: a Wq emitted by
 * the rule itself (after dY) ran before the whole backward with every layer's float Wq alive at once
 * (8 linears holding 344 MiB in float32: the session took +809 MiB, the float one +375 MiB); emitted
 * with the forward, each Wq is computed right before its MatMul and freed after it (+92 MiB).
 */
export function emitMatMulNBits(g: Graph, x: string, name: string, q: Quant4Layout): string {
  if (!nbitsSupports(q.blockSize)) throw new Error(`MatMulNBits needs a power-of-two block size >= 16, not ${q.blockSize}`);
  emitDequantize(g, name, q);
  const n = declareInputs(g, name, q);
  // Without a zero-point input MatMulNBits uses 8, exactly the symmetric scheme.
  const inputs = q.symmetric ? [x, n.codes, n.scales] : [x, n.codes, n.scales, n.zeroPoints];
  // accuracy_level 1 = fp32 compute: level 4 quantizes activations to int8 (6e-3 relative error).
  return g.op('MatMulNBits', inputs, { K: q.inp, N: q.out, bits: 4, block_size: q.blockSize, accuracy_level: 1 }, 'com.microsoft');
}

/** The Wq that emitMatMulNBits emitted beside `node` (for its gradient). */
export function dequantizedOfNode(g: Graph, node: Node): string {
  const wq = `${node.inputs[1]}.wq`;
  if (!g.values.has(wq)) throw new Error(`MatMulNBits '${node.outputs[0]}': no dequantized weight '${wq}' in the graph; build 4-bit products with emitMatMulNBits`);
  return wq;
}
