// Frozen weights held once per process and fed to every session as graph inputs from that one buffer:
// forward, backward, evaluation and teacher sessions of every stage share it, and no session keeps a
// copy of its own (ONNX Runtime copies each initializer into every session; bench/frozen-weights.ts).
import { BYTES_PER_ELEMENT, type HostTensor } from '../graph/dtype.ts';
import { shareWithSessions, unshareWithSessions } from '../graph/session.ts';
import { childLog } from '../../common/log.ts';
import { bf16ToF32, f16ToF32, f32ToF16 } from '../hf/half.ts';
import type { RawTensor } from '../hf/safetensors-read.ts';

const log = childLog({ component: 'frozen-weights' });

/** How frozen weights are held: 'auto' keeps the checkpoint's precision (half stays half). */
export type FrozenDtype = 'auto' | 'fp32' | 'fp16' | 'bf16';
export const FROZEN_DTYPES: readonly FrozenDtype[] = ['auto', 'fp32', 'fp16', 'bf16'];

/** What a program reads its frozen tensors from. */
export interface FrozenSource {
  tensor(name: string): HostTensor;
}

/** A source over the process's store that also names the store entry a tensor is held under. */
export interface FrozenView extends FrozenSource {
  keyOf(name: string): string;
}

function keyOf(src: { name: string; zero: boolean }): string {
  return src.zero ? `${src.name}#zero` : src.name;
}

/** Where a tensor of the trained stack comes from in the base checkpoint (LLaMA Pro copies share it). */
export type SourceOf = (name: string) => { name: string; zero: boolean };

const HALF_MAX = 65504;
const HALF_MIN_NORMAL = 2 ** -14;

/**
 * The held form of one checkpoint tensor. onnxruntime-node cannot pass bfloat16 tensors (session
 * creation fails with "Unsupported data type: 16"), so half precision is held as IEEE fp16 either way:
 * bf16 → fp16 is exact for magnitudes in [2^-14, 65504]; smaller ones lose low bits, larger ones fail.
 */
export function heldTensor(name: string, raw: RawTensor, dtype: FrozenDtype): HostTensor {
  const half = dtype === 'fp16' || dtype === 'bf16' || (dtype === 'auto' && (raw.dtype === 'F16' || raw.dtype === 'BF16'));
  const shape = raw.shape;
  const words = (b: Uint8Array) => new Uint16Array(b.buffer, b.byteOffset, b.length / 2);
  if (half && raw.dtype === 'F16') return { dtype: 'float16', shape, data: words(raw.bytes) };
  let f32: Float32Array;
  if (raw.dtype === 'F32') f32 = new Float32Array(raw.bytes.buffer, raw.bytes.byteOffset, raw.bytes.length / 4);
  else if (raw.dtype === 'BF16') f32 = bf16ToF32(words(raw.bytes));
  else if (raw.dtype === 'F16') f32 = f16ToF32(words(raw.bytes));
  else throw new Error(`frozen tensor '${name}' is ${raw.dtype}; only F32, F16 and BF16 checkpoints are supported`);
  if (!half) return { dtype: 'float32', shape, data: f32 };
  let lost = 0;
  for (let i = 0; i < f32.length; i++) {
    const a = Math.abs(f32[i]);
    if (a > HALF_MAX) throw new Error(`frozen tensor '${name}' holds ${f32[i]}, beyond float16's range; run with --frozen-dtype fp32`);
    if (a !== 0 && a < HALF_MIN_NORMAL) lost++;
  }
  if (lost > 0) log.debug({ tensor: name, values: lost }, 'values below float16 normal range are held with fewer mantissa bits');
  return { dtype: 'float16', shape, data: f32ToF16(f32) };
}

/**
 * The process's frozen weights, read from the base checkpoint on first use and kept for the process's
 * life. Keyed by base tensor, so LLaMA Pro's copies of a block and the teacher's original block are one
 * buffer.
 */
export class FrozenWeights {
  private readonly held = new Map<string, HostTensor>();

  constructor(
    readonly dtype: FrozenDtype,
    private readonly readRaw: (baseName: string) => RawTensor,
  ) {}

  /** A view under the trained stack's names (`sourceOf` maps them to base tensors). */
  view(sourceOf: SourceOf = (name) => ({ name, zero: false })): FrozenView {
    return { tensor: (name) => this.get(sourceOf(name)), keyOf: (name) => keyOf(sourceOf(name)) };
  }

  /**
   * Lets go of every tensor whose key is not in `keys`: called before a rank builds the programs of a
   * new block range (re-planned partition, re-assignment), so the old range's weights are not resident
   * beside the new one's. Returns how many were dropped.
   */
  retainOnly(keys: ReadonlySet<string>): number {
    let dropped = 0;
    for (const key of [...this.held.keys()]) {
      if (keys.has(key)) continue;
      unshareWithSessions(this.held.get(key)!);
      this.held.delete(key);
      dropped++;
    }
    return dropped;
  }

  /** Bytes held, as stored. */
  get bytes(): number {
    let n = 0;
    for (const t of this.held.values()) n += elements(t.shape) * BYTES_PER_ELEMENT[t.dtype];
    return n;
  }

  private get(src: { name: string; zero: boolean }): HostTensor {
    const key = keyOf(src);
    let t = this.held.get(key);
    if (!t) {
      const base = src.zero ? this.get({ name: src.name, zero: false }) : null;
      const held = base ? { ...base, data: new (base.data.constructor as Float32ArrayConstructor)(elements(base.shape)) } : heldTensor(src.name, this.readRaw(src.name), this.dtype);
      // With the session thread the values move there (data here becomes an empty key): one copy per process.
      t = shareWithSessions(held);
      this.held.set(key, t);
    }
    return t;
  }
}

const elements = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1);

/** A source over a float32 loader (tests, tools): each tensor read once per source. */
export function loaderSource(load: (name: string) => Float32Array, shapes: (name: string) => number[]): FrozenSource {
  const held = new Map<string, HostTensor>();
  return {
    tensor(name) {
      let t = held.get(name);
      if (!t) held.set(name, (t = { dtype: 'float32', shape: shapes(name), data: load(name) }));
      return t;
    },
  };
}
