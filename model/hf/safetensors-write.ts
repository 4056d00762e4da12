// Writing one safetensors file, atomically.
import { writeFileAtomic, writeFully } from '../../common/atomic-file.ts';
import { f32ToBf16, f32ToF16 } from './half.ts';
import { assertLittleEndian, DTYPE_BYTES, isCount, isDtype, numel, SafetensorsError, tensorBytes, type Dtype } from './safetensors-format.ts';

export type TensorData =
  | Float32Array | Float64Array | Uint16Array | Int32Array | Int16Array | Int8Array
  | Uint32Array | Uint8Array | BigInt64Array | BigUint64Array;

export interface TensorToWrite {
  name: string;
  dtype: Dtype;
  shape: readonly number[];
  /**
   * Float32Array for F32 (or F16/BF16/F64, converted); Uint16Array holds raw F16/BF16 bits;
   * Uint8Array is taken as the raw little-endian bytes of any dtype; other typed arrays must match
   * the dtype (Int32Array for I32, BigInt64Array for I64, ...). A function is called when the tensor
   * is written, so a writer holds one tensor at a time (streaming export).
   */
  data: TensorData | (() => TensorData);
}

function bytesOf(a: TensorData): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

// Whether `data` is the typed array that holds `dtype`'s elements natively.
function isNative(dtype: Dtype, data: TensorData): boolean {
  switch (dtype) {
    case 'F64': return data instanceof Float64Array;
    case 'F32': return data instanceof Float32Array;
    case 'F16': case 'BF16': case 'U16': return data instanceof Uint16Array;
    case 'I64': return data instanceof BigInt64Array;
    case 'U64': return data instanceof BigUint64Array;
    case 'I32': return data instanceof Int32Array;
    case 'U32': return data instanceof Uint32Array;
    case 'I16': return data instanceof Int16Array;
    case 'I8': return data instanceof Int8Array;
    default: return false;
  }
}

/**
 * Checks that a tensor's data fits its dtype and shape and returns the conversion to run at write
 * time, so that bad input fails before the temp file exists and conversion happens one tensor at a time.
 */
function encoder(file: string, t: TensorToWrite): () => Uint8Array {
  const { name, dtype, shape, data } = t;
  if (typeof data === 'function') return () => encoder(file, { ...t, data: data() })();
  const want = tensorBytes(dtype, shape);
  if (data instanceof Uint8Array) {
    if (data.length !== want) {
      throw new SafetensorsError(file, `raw bytes are ${data.length} long but [${shape.join(', ')}] ${dtype} needs ${want}`, name);
    }
    return () => data;
  }
  const count = numel(shape);
  if (data.length !== count) {
    throw new SafetensorsError(file, `shape [${shape.join(', ')}] needs ${count} elements but data has ${data.length}`, name);
  }
  if (data instanceof Float32Array) {
    if (dtype === 'F32') return () => bytesOf(data);
    if (dtype === 'F16') return () => bytesOf(f32ToF16(data));
    if (dtype === 'BF16') return () => bytesOf(f32ToBf16(data));
    if (dtype === 'F64') return () => bytesOf(Float64Array.from(data));
  } else if (data instanceof Float64Array && dtype === 'F32') {
    return () => bytesOf(new Float32Array(data));
  } else if (isNative(dtype, data)) {
    return () => bytesOf(data);
  }
  throw new SafetensorsError(file, `cannot write ${data.constructor.name} as ${dtype}`, name);
}

/**
 * Writes one safetensors file atomically. Tensors are laid out by element size (largest first), then
 * name, which keeps every tensor aligned to its element size given the 8-byte-padded header, so a
 * reader can view the bytes in place.
 */
export function writeSafetensors(file: string, tensors: readonly TensorToWrite[], metadata?: Record<string, string>): void {
  assertLittleEndian();
  const seen = new Set<string>();
  for (const t of tensors) {
    if (t.name === '__metadata__' || t.name === '') throw new SafetensorsError(file, 'reserved or empty tensor name', t.name);
    if (seen.has(t.name)) throw new SafetensorsError(file, 'duplicate tensor name', t.name);
    seen.add(t.name);
    if (!isDtype(t.dtype)) throw new SafetensorsError(file, `unknown dtype ${JSON.stringify(t.dtype)}`, t.name);
    if (!t.shape.every((d) => isCount(d))) throw new SafetensorsError(file, `shape [${t.shape.join(', ')}] is not a list of non-negative integers`, t.name);
  }
  const ordered = [...tensors].sort(
    (a, b) => DTYPE_BYTES[b.dtype] - DTYPE_BYTES[a.dtype] || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0),
  );
  const encoders = ordered.map((t) => encoder(file, t));
  // No prototype, so that a tensor named "__proto__" is an ordinary key.
  const header: Record<string, unknown> = Object.create(null);
  if (metadata && Object.keys(metadata).length > 0) header.__metadata__ = metadata;
  let offset = 0;
  for (const t of ordered) {
    const size = tensorBytes(t.dtype, t.shape);
    header[t.name] = { dtype: t.dtype, shape: [...t.shape], data_offsets: [offset, offset + size] };
    offset += size;
  }
  let json = JSON.stringify(header);
  const len = Buffer.byteLength(json, 'utf8');
  json += ' '.repeat((8 - (len % 8)) % 8);
  const headerBytes = Buffer.from(json, 'utf8');
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(BigInt(headerBytes.length));

  writeFileAtomic(file, (fd) => {
    writeFully(fd, prefix);
    writeFully(fd, headerBytes);
    for (const encode of encoders) writeFully(fd, encode());
  });
}

