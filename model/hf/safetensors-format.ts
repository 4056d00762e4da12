// The safetensors format: dtypes, sizes, file names of a Hugging Face checkpoint, and its error.
import os from 'node:os';

export type Dtype =
  | 'F64' | 'F32' | 'F16' | 'BF16'
  | 'I64' | 'I32' | 'I16' | 'I8'
  | 'U64' | 'U32' | 'U16' | 'U8'
  | 'BOOL' | 'F8_E4M3' | 'F8_E5M2';

export const DTYPE_BYTES: Record<Dtype, number> = {
  F64: 8, F32: 4, F16: 2, BF16: 2,
  I64: 8, I32: 4, I16: 2, I8: 1,
  U64: 8, U32: 4, U16: 2, U8: 1,
  BOOL: 1, F8_E4M3: 1, F8_E5M2: 1,
};

export function isDtype(s: unknown): s is Dtype {
  return typeof s === 'string' && Object.hasOwn(DTYPE_BYTES, s);
}

export function dtypeBytes(dtype: Dtype): number {
  return DTYPE_BYTES[dtype];
}

export function numel(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

export function tensorBytes(dtype: Dtype, shape: readonly number[]): number {
  return numel(shape) * DTYPE_BYTES[dtype];
}


// A header beyond this is not a real checkpoint; refusing it avoids allocating gigabytes for garbage.
export const MAX_HEADER_BYTES = 100 * 1024 * 1024;
// fs.readSync/writeSync move at most 2 GiB - 1 per call.
export const IO_CHUNK = 1 << 30;
export const REEXPORT = 're-download or re-export the checkpoint';

export const SINGLE_FILE = 'model.safetensors';
export const INDEX_FILE = 'model.safetensors.index.json';
// Hugging Face's `save_pretrained` default max_shard_size is "5GB", which it parses as 5 * 10^9.
export const DEFAULT_MAX_SHARD_BYTES = 5_000_000_000;

export class SafetensorsError extends Error {
  readonly file: string;
  readonly tensor: string | undefined;
  constructor(file: string, message: string, tensor?: string, options?: ErrorOptions) {
    super(`${file}: ${tensor === undefined ? '' : `tensor "${tensor}": `}${message}`, options);
    this.name = 'SafetensorsError';
    this.file = file;
    this.tensor = tensor;
  }
}

// Typed-array views below reinterpret bytes in host order, and the format is little-endian.
export function assertLittleEndian(): void {
  if (os.endianness() !== 'LE') throw new Error('safetensors I/O in propipe needs a little-endian host');
}

export function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

export function isCount(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}
