// Tensor frames between ranks: encoding without copies where the platform allows, chunking of large
// tensors, and validation on receipt (a frame that does not describe itself exactly is rejected).
import { constants } from 'node:buffer';
import type { HostTensor } from '../model/graph/dtype.ts';
import type { FrameKind, FrameMsg, TensorMsg } from './messages.ts';

/**
 * A host tensor as it crosses between ranks: float32 activations and gradients (or their bfloat16
 * bits, `wire_dtype: bf16`), int64 token ids and labels.
 */
export type WireTensor = (HostTensor & ({ dtype: 'float32'; data: Float32Array } | { dtype: 'int64'; data: BigInt64Array })) | { dtype: 'bfloat16'; shape: number[]; data: Uint16Array };

const ELEMENT_BYTES: Record<string, number> = { float32: 4, int64: 8, bfloat16: 2 };
/**
 * Default chunk payload, from bench/transfer.ts (64 KB to 16 MB chunks between two processes): on 16 MB
 * tensors 1 MB chunks cost the receiver about a fifth less CPU per MB than 4 MB chunks (a chunk stays in
 * cache between grpc-js's copy and the copy into the tensor) at the same or better throughput; on 1-4 MB
 * tensors the two are level; 64-256 KB chunks cost the sender more CPU per MB, and one whole 16 MB
 * message is 2-3x slower (nothing is sent until all of it is encoded).
 */
export const DEFAULT_CHUNK_BYTES = 1024 * 1024;

export class FrameError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'FrameError';
  }
}

export function tensorMsg(t: WireTensor): TensorMsg {
  const d = t.data;
  return { dtype: t.dtype, shape: t.shape, data: Buffer.from(d.buffer, d.byteOffset, d.byteLength) };
}

/** Validates dtype and shape and returns the byte size they describe. */
export function tensorBytes(m: Pick<TensorMsg, 'dtype' | 'shape'>, what: string): number {
  const size = ELEMENT_BYTES[m.dtype];
  if (!size) throw new FrameError(`${what}: dtype '${m.dtype}' is not float32, bfloat16 or int64`);
  if (!Array.isArray(m.shape) || m.shape.length === 0 || m.shape.length > 4 || m.shape.some((d) => !Number.isInteger(d) || d <= 0)) {
    throw new FrameError(`${what}: shape [${m.shape}] is not 1 to 4 positive dims`);
  }
  return m.shape.reduce((a, b) => a * b, 1) * size;
}

export function decodeTensor(m: TensorMsg | null | undefined, what: string): WireTensor {
  if (!m) throw new FrameError(`${what}: missing tensor`);
  const bytes = tensorBytes(m, what);
  const size = ELEMENT_BYTES[m.dtype];
  const count = bytes / size;
  if (bytes !== m.data.length) throw new FrameError(`${what}: shape [${m.shape}] × ${size} bytes = ${count * size}, but ${m.data.length} bytes arrived`);
  // Typed arrays need aligned offsets; gRPC buffers are not guaranteed to be, so copy when they are not.
  const aligned = m.data.byteOffset % size === 0 ? m.data : Buffer.from(m.data);
  if (m.dtype === 'float32') return { dtype: 'float32', shape: m.shape, data: new Float32Array(aligned.buffer, aligned.byteOffset, count) };
  if (m.dtype === 'bfloat16') return { dtype: 'bfloat16', shape: m.shape, data: new Uint16Array(aligned.buffer, aligned.byteOffset, count) };
  return { dtype: 'int64', shape: m.shape, data: new BigInt64Array(aligned.buffer, aligned.byteOffset, count) };
}

export interface OutFrame {
  kind: FrameKind;
  step: number;
  microBatch: number;
  tensor: WireTensor;
  labels?: WireTensor;
  inputIds?: WireTensor;
  positionIds?: WireTensor;
  /** Distillation: the teacher's hidden state, same dtype and shape as `tensor`, chunked with it. */
  teacher?: WireTensor;
  stepTokens?: number;
  /** The sender's assignment epoch (0 outside a pipeline job). */
  epoch?: number;
}

/** Splits a frame's payload into chunks of at most `chunkBytes`; labels travel with the first chunk. */
export function encodeFrames(f: OutFrame, chunkBytes = DEFAULT_CHUNK_BYTES): FrameMsg[] {
  const t = tensorMsg(f.tensor);
  const teacher = f.teacher ? tensorMsg(f.teacher) : null;
  if (teacher && (teacher.dtype !== t.dtype || teacher.shape.join() !== t.shape.join())) {
    throw new FrameError(`the teacher's hidden state (${teacher.dtype} [${teacher.shape}]) must match the activation (${t.dtype} [${t.shape}])`);
  }
  const slice = (data: Buffer, c: number) => data.subarray(c * chunkBytes, Math.min(data.length, (c + 1) * chunkBytes));
  const chunks = Math.max(1, Math.ceil(t.data.length / chunkBytes));
  const frames: FrameMsg[] = [];
  for (let c = 0; c < chunks; c++) {
    frames.push({
      kind: f.kind,
      step: f.step,
      microBatch: f.microBatch,
      tensor: { dtype: t.dtype, shape: t.shape, data: slice(t.data, c) },
      labels: c === 0 && f.labels ? tensorMsg(f.labels) : null,
      inputIds: c === 0 && f.inputIds ? tensorMsg(f.inputIds) : null,
      positionIds: c === 0 && f.positionIds ? tensorMsg(f.positionIds) : null,
      teacher: teacher ? { dtype: teacher.dtype, shape: teacher.shape, data: slice(teacher.data, c) } : null,
      stepTokens: f.stepTokens ?? 0,
      chunk: c,
      chunks,
      epoch: f.epoch ?? 0,
    });
  }
  return frames;
}

export interface InFrame {
  kind: FrameKind;
  step: number;
  microBatch: number;
  tensor: WireTensor;
  labels: WireTensor | null;
  inputIds: WireTensor | null;
  positionIds: WireTensor | null;
  teacher: WireTensor | null;
  stepTokens: number;
  epoch: number;
}

/** Why this rank refuses a frame of (kind, step, micro-batch, epoch), or null when it takes it. */
export type FrameRule = (kind: FrameKind, step: number, microBatch: number, epoch: number) => string | null;

const KINDS = new Set<FrameKind>(['ACTIVATION', 'GRADIENT', 'EVAL_ACTIVATION', 'EMBED_GRAD']);
export const MAX_CHUNKS = 4096;
const MAX_LENGTH = constants.MAX_LENGTH;

/** A chunked frame in reassembly: its tensor is allocated once, from the first chunk, and filled in place. */
interface Partial {
  first: FrameMsg;
  received: number;
  target: Buffer | null;
  /** The teacher's hidden state, filled in step with `target` (absent without distillation). */
  teacher: Buffer | null;
  chunkBytes: number;
  filled: number;
}

/**
 * Reassembles chunked frames per (kind, step, micro-batch) and validates every complete one. The first
 * chunk of a multi-chunk frame fixes the chunk size and, with the shape, the tensor's size: the tensor
 * is allocated then (bounded by what `chunks` chunks of that size can carry) and every chunk is copied
 * into place as it arrives, instead of keeping the parts and concatenating them at the end.
 */
export class FrameAssembler {
  private readonly partial = new Map<string, Partial>();

  constructor(private readonly expect: FrameRule = () => null) {}

  /** Returns the frame when its last chunk arrives; throws FrameError on anything malformed. */
  push(msg: FrameMsg): InFrame | null {
    const { key, m } = checkFrameHead(msg, this.expect);
    let p = this.partial.get(key);
    if (!p) {
      if (m.chunk !== 0) throw new FrameError(`chunk ${m.chunk} of ${key} arrived before chunk 0`);
      if (m.chunks === 1) return this.complete(m, m.tensor.data, m.teacher?.data.length ? m.teacher.data : null, key);
      p = { first: m, received: 0, target: null, teacher: null, chunkBytes: m.tensor.data.length, filled: 0 };
      const total = tensorBytes(m.tensor, `${key} tensor`);
      // Every chunk but the last carries exactly chunkBytes; the last carries the rest (at least one byte).
      if (p.chunkBytes === 0 || total <= (m.chunks - 1) * p.chunkBytes || total > m.chunks * p.chunkBytes || total > MAX_LENGTH) {
        throw new FrameError(`${key} tensor: shape [${m.tensor.shape}] is ${total} bytes, which ${m.chunks} chunks of ${p.chunkBytes} bytes cannot carry`);
      }
      p.target = Buffer.allocUnsafeSlow(total);
      if (m.teacher?.data.length) p.teacher = Buffer.allocUnsafeSlow(total);
      this.partial.set(key, p);
    } else if (m.chunk !== p.received || m.chunks !== p.first.chunks || m.tensor.dtype !== p.first.tensor!.dtype) {
      this.partial.delete(key);
      throw new FrameError(`chunk ${m.chunk}/${m.chunks} of ${key} does not follow chunk ${p.received - 1}/${p.first.chunks}`);
    }
    const target = p.target!;
    const data = m.tensor.data;
    const want = m.chunk === m.chunks - 1 ? target.length - p.filled : p.chunkBytes;
    if (data.length !== want) {
      this.partial.delete(key);
      throw new FrameError(`chunk ${m.chunk}/${m.chunks} of ${key} carries ${data.length} bytes, expected ${want}`);
    }
    const teacher = m.teacher?.data ?? Buffer.alloc(0);
    if ((p.teacher ? teacher.length !== data.length : teacher.length !== 0)) {
      this.partial.delete(key);
      throw new FrameError(`chunk ${m.chunk}/${m.chunks} of ${key} carries ${teacher.length} bytes of the teacher's hidden state, expected ${p.teacher ? data.length : 0}`);
    }
    target.set(data, p.filled);
    p.teacher?.set(teacher, p.filled);
    p.filled += data.length;
    p.received++;
    if (p.received < p.first.chunks) return null;
    this.partial.delete(key);
    return this.complete(p.first, target, p.teacher, key);
  }

  private complete(first: FrameMsg, data: Buffer, teacherData: Buffer | null, key: string): InFrame {
    return completeFrame(first, data, teacherData, key);
  }

  pending(): number {
    return this.partial.size;
  }
}

/**
 * Checks what every frame must say of itself (kind, step, chunk numbering, a tensor) and asks `expect`
 * whether this rank takes it; returns the frame's key for messages. Throws FrameError otherwise.
 */
export function checkFrameHead(m: FrameMsg, expect: FrameRule): { key: string; m: FrameMsg & { tensor: TensorMsg } } {
  if (!KINDS.has(m.kind)) throw new FrameError(`frame kind '${m.kind}' is not ACTIVATION, GRADIENT, EVAL_ACTIVATION or EMBED_GRAD`);
  if (!Number.isSafeInteger(m.step) || m.step < 0) throw new FrameError(`frame step ${m.step} is not a non-negative integer`);
  if (!Number.isInteger(m.chunks) || m.chunks < 1 || m.chunks > MAX_CHUNKS || !Number.isInteger(m.chunk) || m.chunk < 0 || m.chunk >= m.chunks) {
    throw new FrameError(`frame chunk ${m.chunk} of ${m.chunks} is out of range`);
  }
  const why = expect(m.kind, m.step, m.microBatch, m.epoch ?? 0);
  if (why) throw new FrameError(why);
  if (!m.tensor) throw new FrameError('frame has no tensor');
  return { key: `${m.kind}:${m.step}:${m.microBatch}@${m.epoch ?? 0}`, m: m as FrameMsg & { tensor: TensorMsg } };
}

/** The frame whose first (or only) message is `first`, with its tensor (and teacher) bytes whole. */
export function completeFrame(first: FrameMsg, data: Buffer, teacherData: Buffer | null, key: string): InFrame {
  const tensor = decodeTensor({ ...first.tensor!, data }, `${key} tensor`);
  const teacher = teacherData ? decodeTensor({ ...first.tensor!, data: teacherData }, `${key} teacher`) : null;
  const labels = first.labels && first.labels.data.length > 0 ? decodeTensor(first.labels, `${key} labels`) : null;
  const inputIds = first.inputIds && first.inputIds.data.length > 0 ? decodeTensor(first.inputIds, `${key} input_ids`) : null;
  const positionIds = first.positionIds && first.positionIds.data.length > 0 ? decodeTensor(first.positionIds, `${key} position_ids`) : null;
  return { kind: first.kind, step: first.step, microBatch: first.microBatch, tensor, labels, inputIds, positionIds, teacher, stepTokens: first.stepTokens, epoch: first.epoch ?? 0 };
}
